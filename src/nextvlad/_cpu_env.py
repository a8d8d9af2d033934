"""Process settings for training and inference on CPUs, applied before torch is imported.

Both are environment variables that their libraries read once, when they load (OpenMP) or at
the first allocation (PyTorch's CPU allocator), so they are set here, by the command line's
first import and by the benchmarks, and only where the user has not set them:

- ``THP_MEM_ALLOC_ENABLE=1``: PyTorch gives its CPU tensors of 2 MB and more transparent huge
  pages (2 MB aligned, ``madvise(MADV_HUGEPAGE)``). A training step of the paper's model
  allocates and frees a few GB of activations; glibc returns such blocks to the kernel at
  once, so every step faults them in again page by page (about 600,000 faults a step on a
  2-core machine, a fifth to a third of the step's CPU time in the kernel). With huge pages the
  faults fall to a few ten thousand (docs/performance.md, "Process settings"). Left alone where the kernel
  has huge pages off (``never``).
- ``OMP_WAIT_POLICY=PASSIVE``: OpenMP threads waiting at the end of a parallel region sleep
  instead of spinning, so a core that another process (a data loader's worker, another job)
  also wants is handed over rather than burnt.

Set either variable yourself to keep your own value (``THP_MEM_ALLOC_ENABLE=0``,
``OMP_WAIT_POLICY=ACTIVE``); ``NEXTVLAD_CPU_DEFAULTS=0`` applies neither.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_pages_available(setting: Path = THP_SETTING) -> bool:
    """Whether the kernel gives transparent huge pages to memory that asks (``always`` or
    ``madvise`` selected)."""
    try:
        text = setting.read_text()
    except OSError:
        return False
    return "[never]" not in text


def apply_cpu_defaults(
    environ: MutableMapping[str, str] | None = None, *, setting: Path = THP_SETTING
) -> dict[str, str]:
    """Set the defaults above in ``environ`` (``os.environ``) where unset; returns those set.

    Has effect only before torch is imported into this process (or in its children)."""
    env = os.environ if environ is None else environ
    if env.get("NEXTVLAD_CPU_DEFAULTS", "1") == "0":
        return {}
    wanted = {"OMP_WAIT_POLICY": "PASSIVE"}
    if huge_pages_available(setting):
        wanted["THP_MEM_ALLOC_ENABLE"] = "1"
    applied = {}
    for name, value in wanted.items():
        if name not in env:
            env[name] = value
            applied[name] = value
    return applied
