"""Refusing a checkpoint of another model, with what differs between the two configurations.

``--resume`` into a run of another preset or other ``--set`` options, and ``--init-from`` a
checkpoint of another shape, stop before anything is loaded, naming the differing fields:
``... the checkpoint is nextvlad-8g-128k-2048h (streams[0].num_clusters 4), this run asks for
nextvlad-8g-128k-2048h (streams[0].num_clusters 8); resume with ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nextvlad.checkpoint import read_config
from nextvlad.errors import CheckpointError
from nextvlad.models import ModelConfig, config_to_dict

RESUME_HINT = (
    "resume with the --preset and --set options the run was started with, or train into "
    "another --out"
)
_SHOWN = 6  # differing fields named in a message
# Fields that shape no weight: --init-from may change them (fine-tuning with another dropout,
# or another distillation temperature and weight).
NO_WEIGHTS = frozenset({"dropout", "temperature", "distill_weight"})


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists as one dict keyed by paths: ``streams[0].num_clusters``."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, (list, tuple)):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def differences(a: ModelConfig, b: ModelConfig) -> list[str]:
    """The paths of the fields that differ between two configurations, in order."""
    ours, theirs = flatten(config_to_dict(a)), flatten(config_to_dict(b))
    missing = object()
    keys = dict.fromkeys([*ours, *theirs])
    return [k for k in keys if ours.get(k, missing) != theirs.get(k, missing)]


def check_checkpoint_fits(
    checkpoint: Path,
    config: ModelConfig,
    preset: str,
    *,
    hint: str = RESUME_HINT,
    weights_only: bool = False,
) -> list[str]:
    """Refuse to resume (or start) from a checkpoint of another model, saying what differs.
    ``weights_only`` (``--init-from``): fields that shape no weight (:data:`NO_WEIGHTS`, e.g.
    ``dropout``) may differ. Returns the fields that differ and were allowed to.

    Raises:
        CheckpointError: the checkpoint's configuration is not ``config``.
    """
    saved, document = read_config(checkpoint)
    if saved == config:
        return []
    keys = differences(saved, config)
    if weights_only and all(k.rsplit(".", 1)[-1] in NO_WEIGHTS for k in keys):
        return keys

    def show(values: dict[str, Any]) -> str:
        shown = ", ".join(f"{k} {values.get(k, '-')}" for k in keys[:_SHOWN])
        return shown + (", ..." if len(keys) > _SHOWN else "")

    theirs, ours = flatten(config_to_dict(saved)), flatten(config_to_dict(config))
    saved_preset = document.get("preset")
    saved_name = saved_preset if isinstance(saved_preset, str) else "a model"
    raise CheckpointError(
        f"{checkpoint} does not fit this run: the checkpoint is {saved_name} ({show(theirs)}), "
        f"this run asks for {preset} ({show(ours)}); {hint}"
    )
