"""The CPU process settings the command line applies before torch loads (nextvlad._cpu_env)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nextvlad._cpu_env import apply_cpu_defaults, huge_pages_available


def _setting(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "enabled"
    path.write_text(text)
    return path


def test_defaults_are_set_where_unset(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    applied = apply_cpu_defaults(env, setting=_setting(tmp_path, "always [madvise] never\n"))
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "THP_MEM_ALLOC_ENABLE": "1"}
    assert applied == env


def test_the_users_values_are_kept(tmp_path: Path) -> None:
    env = {"OMP_WAIT_POLICY": "ACTIVE", "THP_MEM_ALLOC_ENABLE": "0"}
    assert apply_cpu_defaults(env, setting=_setting(tmp_path, "[always] madvise never\n")) == {}
    assert env == {"OMP_WAIT_POLICY": "ACTIVE", "THP_MEM_ALLOC_ENABLE": "0"}


def test_opt_out_applies_nothing(tmp_path: Path) -> None:
    env = {"NEXTVLAD_CPU_DEFAULTS": "0"}
    assert apply_cpu_defaults(env, setting=_setting(tmp_path, "[always] madvise never\n")) == {}
    assert env == {"NEXTVLAD_CPU_DEFAULTS": "0"}


def test_no_huge_pages_where_the_kernel_has_them_off_or_none(tmp_path: Path) -> None:
    off = _setting(tmp_path, "always madvise [never]\n")
    assert not huge_pages_available(off)
    assert not huge_pages_available(tmp_path / "missing")
    env: dict[str, str] = {}
    apply_cpu_defaults(env, setting=off)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_the_command_applies_them_before_torch_loads() -> None:
    code = (
        "import os, sys, nextvlad.cli as c\n"
        "c.main = lambda: print('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY')) or 0\n"
        "raise SystemExit(c.run())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.split() == ["False", "PASSIVE"]
