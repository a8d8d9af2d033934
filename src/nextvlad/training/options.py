"""Training options: the paper's recipe as defaults (Sec. 4.2), defined once.

Each field of :class:`TrainOptions` carries its default, its help text, the kind of value it
takes and its `nextvlad train` flag (``option(...)``). From these come the command line
(:func:`add_arguments`, :func:`from_args`), the validation of options built in Python
(``__post_init__``), the run's ``run.json``, the command that resumes a run
(:func:`resume_command`) and the options whose change on ``--resume`` alters the data order
(:func:`data_order_changes`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nextvlad import _args
from nextvlad.errors import ConfigError

PRECISIONS = ("fp32", "bf16")
TASKS = ("video", "segments")


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    kind: _args.Kind | None = None,
    data_order: bool = False,
    **argparse_options: Any,
) -> Any:
    """A field of ``TrainOptions``. ``flag``: its `nextvlad train` flag (None: library only);
    ``kind``: the values it takes (also checked in Python); ``data_order``: resuming with
    another value does not continue the run's data stream; further keywords go to argparse
    (``action``, ``nargs``, ``metavar``, ``choices``, ``required``)."""
    metadata = {
        "help": help,
        "flag": flag,
        "kind": kind,
        "data_order": data_order,
        "argparse": argparse_options,
    }
    if isinstance(default, list | dict):
        return field(default_factory=type(default), metadata=metadata)
    return field(default=default, metadata=metadata)


_COMPILE_HELP = (
    "torch.compile the forward pass and loss; padded frames are still skipped: frame counts "
    "are padded to multiples of 32 and the packed frames to a row budget, so that only a few "
    "shapes compile (one per bucket). For GPUs: on CPUs it trains slower than eager "
    "(0.81-0.97x of eager's speed on the paper's model, docs/performance.md)"
)


@dataclass
class TrainOptions:
    """Everything a run depends on; written to ``RUN_DIR/run.json`` before training starts."""

    preset: str = option(help="model preset (nextvlad list-models)", flag="--preset", required=True)
    train_data: list[str] = option(
        help="training TFRecords", flag="--train-data", nargs="+", metavar="GLOB", required=True
    )
    out: str = option(
        help="run folder (options, checkpoints, TensorBoard)", flag="--out", required=True
    )
    eval_data: list[str] = option(
        [], help="evaluation TFRecords", flag="--eval-data", nargs="+", metavar="GLOB"
    )
    model_overrides: dict[str, Any] = option(
        {},
        help="override a preset option, e.g. --set num_classes=25",
        flag="--set",
        kind=_args.OVERRIDE,
        action="append",
        metavar="KEY=VALUE",
    )
    eigenvals: str | None = option(
        None,
        help="PCA eigenvalues .npy for reverse whitening of rgb frames (Google's "
        "yt8m_pca/eigenvals.npy); 'none' to train without it and without a warning",
        flag="--eigenvals",
    )
    init_from: str | None = option(
        None,
        help="start from the weights of this checkpoint (a run folder, a checkpoint folder, "
        "or a model folder such as `nextvlad import-tf` writes) with a fresh optimizer; "
        "its model must be the one --preset and --set describe, but for the options that "
        "shape no weight (dropout, the mixture's temperature and distill_weight)",
        flag="--init-from",
        metavar="CHECKPOINT",
    )
    task: str = option(
        "video",
        help="video: learn the videos' labels (default); segments: the 2019 segment task, "
        "learn the rated 5-frame segments of segment-rated records, only the rated (segment, "
        "class) pairs counting in the loss, and evaluate segment MAP@100K on --eval-data; "
        "usually with --init-from a model trained on video labels (docs/segments.md)",
        flag="--task",
        choices=TASKS,
        data_order=True,
    )
    segment_classes: str | None = option(
        None,
        help="with --task segments: the class whitelist (the Index column of Google's "
        "segment_label_ids.csv): only these classes' ratings are learnt and ranked in the "
        "evaluation",
        flag="--segment-classes",
        metavar="FILE",
    )
    # Length of training
    epochs: int | None = option(
        None,
        help="passes over the training data (default: none, train until --max-steps)",
        flag="--epochs",
        kind=_args.POSITIVE_INT,
    )
    max_steps: int | None = option(
        None, help="stop after this many steps", flag="--max-steps", kind=_args.POSITIVE_INT
    )
    # Optimisation (paper: Adam 2e-4, x0.8 every 2M examples, batch 80 a GPU, clip 1.0, L2 1e-5)
    batch_size: int = option(
        80,
        help="per process (default 80)",
        flag="--batch-size",
        kind=_args.POSITIVE_INT,
        data_order=True,
    )
    learning_rate: float = option(
        2e-4, help="initial learning rate (2e-4)", flag="--lr", kind=_args.POSITIVE_FLOAT
    )
    lr_decay: float = option(
        0.8, help="staircase decay factor (0.8)", flag="--lr-decay", kind=_args.DECAY_FACTOR
    )
    lr_decay_examples: int = option(
        2_000_000,
        help="examples between decays (2M; the final submission used 2.5M and 0.9)",
        flag="--lr-decay-examples",
        kind=_args.POSITIVE_INT,
    )
    clip_norm: float = option(
        1.0,
        help="per-tensor gradient norm clip (1.0)",
        flag="--clip-norm",
        kind=_args.NON_NEGATIVE_FLOAT,
    )
    l2_penalty: float = option(
        1e-5, help="L2 penalty on the classifier (1e-5)", flag="--l2", kind=_args.NON_NEGATIVE_FLOAT
    )
    temperature: float | None = option(
        None,
        help="mixture distillation temperature T",
        flag="--temperature",
        kind=_args.POSITIVE_FLOAT,
    )
    distill_weight: float | None = option(
        None,
        help="mixture distillation weight λ",
        flag="--distill-weight",
        kind=_args.NON_NEGATIVE_FLOAT,
    )
    adam_epsilon: float = option(
        1e-8, help="Adam's epsilon, as TF1 places it", kind=_args.POSITIVE_FLOAT
    )
    # Evaluation, checkpoints, logging
    eval_every: int = option(
        1000,
        help="steps between evaluations (default 1000; 0: at the end only)",
        flag="--eval-every",
        kind=_args.NON_NEGATIVE_INT,
    )
    eval_max_batches: int | None = option(
        None, help="cap evaluation cost during training", kind=_args.POSITIVE_INT
    )
    checkpoint_every: int = option(
        1000,
        help="steps between checkpoints (default 1000; one is also written at the end)",
        flag="--checkpoint-every",
        kind=_args.POSITIVE_INT,
    )
    keep_checkpoints: int = option(3, help="newest checkpoints kept", kind=_args.POSITIVE_INT)
    log_every: int = option(
        10,
        help="steps between reads of the loss from the device: TensorBoard scalars, the "
        "progress line's loss, and the check for a non-finite loss, which is therefore "
        "noticed up to this many steps late (10)",
        flag="--log-every",
        kind=_args.POSITIVE_INT,
    )
    resume: bool = option(
        False,
        help="continue from the newest checkpoint in --out",
        flag="--resume",
        action="store_true",
    )
    # Data
    max_frames: int = option(
        300, help="frames a video is cut to", kind=_args.POSITIVE_INT, data_order=True
    )
    num_workers: int = option(
        2,
        help="data loader processes (2)",
        flag="--num-workers",
        kind=_args.NON_NEGATIVE_INT,
        data_order=True,
    )
    shuffle_buffer: int = option(
        256,
        help="videos each data shard holds for shuffling (256; a frame-level video is ~200 KB)",
        flag="--shuffle-buffer",
        kind=_args.POSITIVE_INT,
        data_order=True,
    )
    cache_dir: str | None = option(
        None, help=_args.CACHE_DIR_HELP, flag="--cache-dir", metavar="DIR"
    )
    skip_corrupt: bool = option(
        False,
        help="skip corrupt records, count them and report the count at the end and in "
        "TensorBoard (data/skipped_records), instead of stopping at the first",
        flag="--skip-corrupt",
        action="store_true",
    )
    skip_nonfinite: bool = option(
        False,
        help="skip a batch whose loss or gradient is not finite (no update), count it and "
        "report the count (train/nonfinite_batches), instead of stopping",
        flag="--skip-nonfinite",
        action="store_true",
    )
    bucket_by_length: bool = option(
        False,
        help="batch videos of similar length together (less time on padded frames)",
        flag="--bucket-by-length",
        action="store_true",
        data_order=True,
    )
    # Execution
    seed: int = option(
        0,
        help="seed of weights and data order (default 0)",
        flag="--seed",
        kind=_args.SEED,
        data_order=True,
    )
    device: str = option(
        "auto",
        help="auto (GPU when present), cpu, cuda, cuda:N",
        flag="--device",
        kind=_args.DEVICE,
    )
    precision: str = option("fp32", help="bf16: autocast", flag="--precision", choices=PRECISIONS)
    compile: bool = option(False, help=_COMPILE_HELP, flag="--compile", action="store_true")
    folded: bool | None = option(
        None,
        help="NeXtVLAD with the expansion FC folded into the layers after it: the same "
        "function with fewer operations per frame. Default: folded on CPUs for batches of "
        "at least 200 frames a video on average, where it is the faster (docs/performance.md, "
        "'Folded or not'); --folded always, --no-folded never",
        flag="--folded",
        action=argparse.BooleanOptionalAction,
    )
    sync_batchnorm: bool = option(
        False,
        help="with DDP: global batch statistics",
        flag="--sync-batchnorm",
        action="store_true",
    )
    deterministic: bool = option(
        False,
        help="deterministic algorithms only (torch.use_deterministic_algorithms): a resumed "
        "run then ends with the weights of an uninterrupted one",
        flag="--deterministic",
        action="store_true",
    )
    sync_debug: bool = option(
        False,
        help="CUDA: stop with an error if a training step makes the host wait for the GPU "
        "(torch.cuda.set_sync_debug_mode('error')), a check for a step that should never wait",
        flag="--sync-debug",
        action="store_true",
    )
    progress: bool = option(
        True, help="no progress bar", flag="--no-progress", action="store_false"
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            kind: _args.Kind | None = f.metadata["kind"]
            value = getattr(self, f.name)
            if kind is None or value is None or f.name == "model_overrides":
                continue
            try:
                kind.check(value)
            except ValueError as err:
                raise ConfigError(f"{_name(f)}: {err}") from None
        if self.batch_size < 2:
            raise ConfigError(
                f"--batch-size: at least 2 for training (batch normalisation takes statistics "
                f"over the batch), got {self.batch_size}"
            )
        if self.epochs is None and self.max_steps is None:
            raise ConfigError("give --epochs or --max-steps")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.task not in TASKS:
            raise ConfigError(f"--task must be one of {TASKS}, got {self.task!r}")
        if self.segment_classes is not None and self.task != "segments":
            raise ConfigError("--segment-classes applies with --task segments only")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def nextvlad_folded(self) -> bool | str:
        """The ``folded`` setting of the model's NeXtVLAD layers: ``--folded`` True,
        ``--no-folded`` False, neither the layer's own rule ("auto")."""
        return "auto" if self.folded is None else self.folded

    def save(self, path: Path) -> None:
        from nextvlad.checkpoint import atomic_write_bytes
        from nextvlad.data.remote import redact_url  # no signature or token in run.json

        document = self.to_dict()
        for name in ("train_data", "eval_data"):
            document[name] = [redact_url(url) for url in document[name]]
        atomic_write_bytes(path, json.dumps(document, indent=2).encode())

    @classmethod
    def load(cls, path: Path) -> TrainOptions:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as err:
            raise ConfigError(f"{path}: unreadable run options ({err})") from None


def _name(f: dataclasses.Field[Any]) -> str:
    flag = f.metadata["flag"]
    return str(flag) if flag else f.name.replace("_", " ")


def _cli_fields() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(TrainOptions) if f.metadata["flag"]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `nextvlad train` flags, one for each option that has one."""
    for f in _cli_fields():
        extra = dict(f.metadata["argparse"])
        kind = f.metadata["kind"]
        if kind is not None:
            extra["type"] = kind
        action = extra.get("action")
        switch = action in ("store_true", "store_false", argparse.BooleanOptionalAction)
        if not switch and "choices" not in extra:
            extra.setdefault("metavar", f.metadata["flag"].lstrip("-").upper().replace("-", "_"))
        if action == "append":
            extra["default"] = []
        elif action not in ("store_true", "store_false"):
            extra["default"] = None if extra.get("required") else _default(f)
        parser.add_argument(f.metadata["flag"], dest=f.name, help=f.metadata["help"], **extra)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def from_args(args: argparse.Namespace) -> TrainOptions:
    """The options of a parsed `nextvlad train` command line (``ConfigError`` if wrong)."""
    values = {f.name: getattr(args, f.name) for f in _cli_fields()}
    values["model_overrides"] = dict(values["model_overrides"])
    for name in ("train_data", "eval_data"):
        values[name] = list(values[name])
    return TrainOptions(**values)


def data_order_changes(before: TrainOptions, now: TrainOptions) -> list[str]:
    """The options that fix the data order and position and differ between two runs."""
    return [
        f.name
        for f in dataclasses.fields(TrainOptions)
        if f.metadata["data_order"] and getattr(before, f.name) != getattr(now, f.name)
    ]


def resume_command(options: TrainOptions, *, distributed: bool = False) -> str:
    """The `nextvlad train` command line that continues the run ``options`` describe (its
    non-default options and --resume), quoted for a POSIX shell; under torchrun it starts with
    ``torchrun ... -m nextvlad train``, the dots standing for the run's launch options. Data
    URLs appear redacted (no signature or token is printed): a signed URL is given again."""
    from nextvlad.data.remote import redact_url

    argv = ["torchrun", "...", "-m", "nextvlad", "train"] if distributed else ["nextvlad", "train"]
    for f in _cli_fields():
        value = getattr(options, f.name)
        flag = f.metadata["flag"]
        required = f.metadata["argparse"].get("required", False)
        if f.name == "resume" or (not required and (value is None or value == _default(f))):
            continue
        if f.name in ("train_data", "eval_data"):
            value = [redact_url(url) for url in value]
        both_ways = f.metadata["argparse"].get("action") is argparse.BooleanOptionalAction
        argv += _flag_words(flag, value, both_ways=both_ways)
    return shlex.join([*argv, "--resume"])


def _flag_words(flag: str, value: Any, *, both_ways: bool = False) -> list[str]:
    if isinstance(value, bool) and both_ways:  # --folded / --no-folded
        return [flag if value else "--no-" + flag.removeprefix("--")]
    if isinstance(value, bool):  # store_true flags, and --no-progress for progress=False
        return [flag]
    if isinstance(value, list):
        return [flag, *map(str, value)]
    if isinstance(value, dict):
        words: list[str] = []
        for key, item in value.items():
            text = item if isinstance(item, str) else json.dumps(item)
            words += [flag, f"{key}={text}"]
        return words
    return [flag, str(value)]
