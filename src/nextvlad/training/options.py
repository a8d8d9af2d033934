"""Training options: the paper's recipe as defaults (Sec. 4.2), saved with every run."""

from __future__ import annotations

import dataclasses
import json
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
    skip_corrupt: bool = False
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
