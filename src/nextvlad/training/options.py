"""Training options: the paper's recipe as defaults (Sec. 4.2), saved with every run."""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nextvlad.errors import ConfigError

PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainOptions:
    """Everything a run depends on; written to ``RUN_DIR/run.json`` before training starts."""

    preset: str  # model preset name (`nextvlad list-models`)
    train_data: list[str]  # TFRecord files or globs
    out: str  # run folder
    eval_data: list[str] = field(default_factory=list)  # evaluated every eval_every steps
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"num_classes": 25}
    eigenvals: str | None = None  # PCA eigenvalues (.npy) for reverse whitening; "none": off
    # Optimisation (paper: Adam 2e-4, x0.8 every 2M examples, batch 80 a GPU, clip 1.0, L2 1e-5)
    batch_size: int = 80  # per process
    learning_rate: float = 2e-4
    lr_decay: float = 0.8  # staircase factor...
    lr_decay_examples: int = 2_000_000  # ...every this many (global) examples
    adam_epsilon: float = 1e-8
    clip_norm: float = 1.0  # each gradient tensor clipped to this norm separately; 0: off
    skip_nonfinite: bool = False  # skip (and count) batches with a non-finite loss, not stop
    l2_penalty: float = 1e-5  # on the classifier's weights and biases
    temperature: float | None = None  # mixture distillation T (None: the preset's)
    distill_weight: float | None = None  # mixture distillation λ (None: the preset's)
    # Length of training
    epochs: int | None = None  # stop after this many passes over the data...
    max_steps: int | None = None  # ...or this many steps (whichever comes first)
    # Evaluation, checkpoints, logging
    eval_every: int = 1000  # steps; 0: only at the end
    eval_max_batches: int | None = None  # cap evaluation cost during training
    checkpoint_every: int = 1000  # steps; a checkpoint is always written at the end
    keep_checkpoints: int = 3
    log_every: int = 10  # steps between TensorBoard scalars
    resume: bool = False  # continue from the newest checkpoint in `out`
    # Data
    max_frames: int = 300
    num_workers: int = 2
    shuffle_buffer: int = 256
    skip_corrupt: bool = False  # skip and count corrupt records instead of stopping
    bucket_by_length: bool = False  # batches of videos of similar length (less padding)
    # Execution
    seed: int = 0
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    precision: str = "fp32"  # "fp32" or "bf16" (autocast)
    compile: bool = False  # torch.compile the model
    folded: bool = False  # NeXtVLAD with the expansion FC folded away (same function, faster)
    sync_batchnorm: bool = False  # with DDP: batch statistics over all processes
    deterministic: bool = False  # torch.use_deterministic_algorithms
    progress: bool = True  # progress bar on stderr (rank 0)

    def __post_init__(self) -> None:
        for name in (
            "learning_rate",
            "lr_decay",
            "adam_epsilon",
            "clip_norm",
            "l2_penalty",
            "temperature",
            "distill_weight",
        ):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"{name.replace('_', ' ')} must be finite, got {value}")
        if self.temperature is not None and self.temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")
        if self.distill_weight is not None and self.distill_weight < 0:
            raise ConfigError(f"distill weight must be >= 0, got {self.distill_weight}")
        if self.adam_epsilon <= 0:
            raise ConfigError(f"adam epsilon must be positive, got {self.adam_epsilon}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be in [0, 2**63), got {self.seed}")
        if self.shuffle_buffer <= 0:
            raise ConfigError(f"shuffle buffer must be positive, got {self.shuffle_buffer}")
        if self.batch_size <= 0:
            raise ConfigError(f"batch size must be positive, got {self.batch_size}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning rate must be positive, got {self.learning_rate}")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr decay must be in (0, 1], got {self.lr_decay}")
        if self.lr_decay_examples <= 0:
            raise ConfigError("lr decay examples must be positive")
        if self.clip_norm < 0 or self.l2_penalty < 0:
            raise ConfigError("clip norm and L2 penalty must be >= 0")
        if self.epochs is None and self.max_steps is None:
            raise ConfigError("give --epochs or --max-steps")
        for name in ("epochs", "max_steps", "checkpoint_every", "log_every", "max_frames"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name.replace('_', ' ')} must be positive, got {value}")
        if self.eval_every < 0 or self.num_workers < 0 or self.keep_checkpoints < 1:
            raise ConfigError("eval every and workers must be >= 0, keep checkpoints >= 1")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        from nextvlad.checkpoint import atomic_write_bytes

        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=2).encode())

    @classmethod
    def load(cls, path: Path) -> TrainOptions:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as err:
            raise ConfigError(f"{path}: unreadable run options ({err})") from None


# TrainOptions field -> its `nextvlad train` flag (fields without one are library-only).
CLI_FLAGS = {
    "preset": "--preset",
    "train_data": "--train-data",
    "eval_data": "--eval-data",
    "out": "--out",
    "model_overrides": "--set",
    "eigenvals": "--eigenvals",
    "batch_size": "--batch-size",
    "learning_rate": "--lr",
    "lr_decay": "--lr-decay",
    "lr_decay_examples": "--lr-decay-examples",
    "clip_norm": "--clip-norm",
    "skip_nonfinite": "--skip-nonfinite",
    "l2_penalty": "--l2",
    "temperature": "--temperature",
    "distill_weight": "--distill-weight",
    "epochs": "--epochs",
    "max_steps": "--max-steps",
    "eval_every": "--eval-every",
    "checkpoint_every": "--checkpoint-every",
    "resume": "--resume",
    "num_workers": "--num-workers",
    "shuffle_buffer": "--shuffle-buffer",
    "skip_corrupt": "--skip-corrupt",
    "bucket_by_length": "--bucket-by-length",
    "seed": "--seed",
    "device": "--device",
    "precision": "--precision",
    "compile": "--compile",
    "folded": "--folded",
    "sync_batchnorm": "--sync-batchnorm",
    "deterministic": "--deterministic",
    "progress": "--no-progress",
}


def resume_command(options: TrainOptions, *, distributed: bool = False) -> str:
    """The `nextvlad train` command line that continues the run ``options`` describe (its
    non-default options and --resume), quoted for a POSIX shell; under torchrun it starts with
    ``torchrun ... -m nextvlad train``, the dots standing for the run's launch options."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainOptions)}
    defaults.update(eval_data=[], model_overrides={})
    argv = ["torchrun", "...", "-m", "nextvlad", "train"] if distributed else ["nextvlad", "train"]
    for name, flag in CLI_FLAGS.items():
        value = getattr(options, name)
        if name == "resume":
            continue
        required = name in ("preset", "train_data", "out")
        if not required and (value is None or value == defaults.get(name)):
            continue
        if isinstance(value, bool):  # store_true flags; --no-progress for progress=False
            argv.append(flag)
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        elif isinstance(value, dict):
            for key, item in value.items():
                text = item if isinstance(item, str) else json.dumps(item)
                argv += [flag, f"{key}={text}"]
        else:
            argv += [flag, str(value)]
    return shlex.join([*argv, "--resume"])
