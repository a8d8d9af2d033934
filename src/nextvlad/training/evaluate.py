"""Evaluation with the official YouTube-8M metrics, and Kaggle-format predictions."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import torch
import torch.distributed as dist
from torch import Tensor, nn

from nextvlad.data import Batch, VideoDataset
from nextvlad.errors import ConfigError, UsageError
from nextvlad.losses import cross_entropy
from nextvlad.metrics import YT8MMetrics
from nextvlad.models import InputTransform, ModelConfig, ModelOutput
from nextvlad.nn import FramePacking
from nextvlad.training.batches import REFERENCE_FRAMES, device_batch
from nextvlad.training.distributed import Context
from nextvlad.training.options import TrainOptions
from nextvlad.training.progress import track_videos


def model_inputs(
    batch: Batch, transform: InputTransform, device: torch.device, *, pad_to: int | None = None
) -> tuple[Tensor, FramePacking | None]:
    """(features, packing) on ``device``: uint8 frames go through the input transform, with
    the packing of their real frames worked out on the host (``device_batch``)."""
    prepared = device_batch(batch, device, pad_to=pad_to)
    if prepared.packing is None:
        return prepared.inputs, None
    return transform(prepared.inputs, prepared.packing), prepared.packing


def reference_frames(model: nn.Module) -> int | None:
    """300 for a reference-compatible model (the original pads every video to 300 frames,
    and its batch-norm statistics and gate count them), else None."""
    config = getattr(model, "config", None)
    return REFERENCE_FRAMES if getattr(config, "reference_compat", False) else None


def select_logits(out: ModelOutput, branch: int | None) -> Tensor:
    """The mixture's logits, or those of one branch (``--branch M``)."""
    if branch is None:
        return out.logits
    if out.branch_logits is None:
        raise UsageError("--branch applies to mixture models only")
    if not 0 <= branch < out.branch_logits.shape[1]:
        raise UsageError(
            f"--branch {branch}: the mixture has branches 0..{out.branch_logits.shape[1] - 1}"
        )
    return out.branch_logits[:, branch]


def iter_predictions(
    model: nn.Module,
    transform: InputTransform,
    batches: Iterable[Batch],
    device: torch.device,
    *,
    branch: int | None = None,
    max_batches: int | None = None,
    precision: str = "fp32",
    progress: str | None = None,
) -> Iterator[tuple[Batch, Tensor]]:
    """(batch, logits (B, C) float32 on the CPU) for each batch, the model in eval mode.
    ``progress``: show the videos done on stderr under this name ("eval", "predict";
    ``nextvlad.training.progress.track_videos``)."""
    was_training = model.training
    pad_to = reference_frames(model)
    model.eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    tracked = None if progress is None else track_videos(batches, progress)
    batches = batches if tracked is None else tracked
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                if len(batch) == 0:  # only the skips after the last video (--skip-corrupt)
                    continue
                features, packing = model_inputs(batch, transform, device, pad_to=pad_to)
                with autocast:
                    out = model(features, packing)
                yield batch, select_logits(out, branch).float().cpu()
    finally:
        model.train(was_training)
        if tracked is not None:  # the bar ends here, also after --max-batches or an error
            tracked.close()


def evaluate(
    model: nn.Module,
    transform: InputTransform,
    batches: Iterable[Batch],
    device: torch.device,
    num_classes: int,
    *,
    branch: int | None = None,
    max_batches: int | None = None,
    precision: str = "fp32",
    top_k: int = 20,
    progress: str | None = None,
) -> tuple[YT8MMetrics, float, int]:
    """(metrics over the batches, summed loss, number of videos). The loss is the
    reference's cross-entropy; divide by the number of videos for the mean. ``progress``:
    as :func:`iter_predictions`'s."""
    metrics = YT8MMetrics(num_classes, top_k=top_k)
    loss_sum = 0.0
    for batch, logits in iter_predictions(
        model,
        transform,
        batches,
        device,
        branch=branch,
        max_batches=max_batches,
        precision=precision,
        progress=progress,
    ):
        labels = batch.labels
        if labels.shape[1] != num_classes:
            raise ConfigError(f"labels have {labels.shape[1]} classes, the model {num_classes}")
        loss_sum += float(cross_entropy(logits, labels)) * len(batch)
        metrics.update(torch.sigmoid(logits), labels)
    return metrics, loss_sum, metrics.num_videos


def read_vocabulary(path: str | Path) -> dict[int, str]:
    """YouTube-8M's vocabulary.csv (``Index,TrainVideoCount,KnowledgeGraphId,Name,...``)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UsageError(f"--vocabulary {path}: {err}") from None
    if not rows or "Index" not in rows[0] or "Name" not in rows[0]:
        raise UsageError(f"--vocabulary {path}: expected a CSV with Index and Name columns")
    names: dict[int, str] = {}
    for line, row in enumerate(rows, start=2):
        try:
            names[int(row["Index"])] = row["Name"] or ""
        except (TypeError, ValueError):
            raise UsageError(f"--vocabulary {path}, line {line}: Index is not an integer") from None
    return names


def write_predictions(
    out: TextIO,
    batches: Iterable[tuple[Batch, Tensor]],
    *,
    top_k: int = 20,
    names: dict[int, str] | None = None,
    named_out: TextIO | None = None,
    probabilities: bool = False,
) -> int:
    """Kaggle 2018 format: ``VideoId,LabelConfidencePairs`` with the top ``top_k``
    ``label score`` pairs by descending score, from (batch, logits (B, C)) pairs, or
    (batch, probabilities (B, C)) pairs with ``probabilities=True`` (exported models).
    Returns the number of videos written."""
    out.write("VideoId,LabelConfidencePairs\n")
    if named_out is not None:
        named_out.write("VideoId,Label,Name,Score\n")
    count = 0
    for batch, logits in batches:
        k = min(top_k, logits.shape[1])
        scores, classes = torch.topk(logits if probabilities else torch.sigmoid(logits), k, dim=1)
        for video_id, row_scores, row_classes in zip(
            batch.ids, scores.tolist(), classes.tolist(), strict=True
        ):
            pairs = " ".join(f"{c} {s:.6f}" for c, s in zip(row_classes, row_scores, strict=True))
            out.write(f"{video_id},{pairs}\n")
            if named_out is not None and names is not None:
                writer = csv.writer(named_out, lineterminator="\n")
                for c, s in zip(row_classes, row_scores, strict=True):
                    writer.writerow([video_id, c, names.get(c, ""), f"{s:.6f}"])
            count += 1
    return count


def evaluate_all_ranks(
    model: nn.Module,
    transform: InputTransform,
    dataset: VideoDataset,
    options: TrainOptions,
    ctx: Context,
    config: ModelConfig,
    loader_args: dict[str, Any],
) -> dict[str, float] | None:
    """Evaluate ``dataset`` during training: each process its share, merged on rank 0
    (which returns the metrics, the mean loss and the number of videos; the others None)."""
    loader = dataset.loader(
        options.batch_size, num_workers=min(options.num_workers, 2), **loader_args
    )
    metrics, loss_sum, count = evaluate(
        model,
        transform,
        loader,
        ctx.device,
        config.num_classes,
        max_batches=options.eval_max_batches,
        precision=options.precision,
    )
    if ctx.distributed:
        gathered: list[Any] = [None] * ctx.world_size
        dist.all_gather_object(gathered, (metrics, loss_sum, count), group=ctx.host_group)
        if not ctx.is_main:
            return None
        metrics = gathered[0][0]
        loss_sum = sum(g[1] for g in gathered)
        count = sum(g[2] for g in gathered)
        for other in gathered[1:]:
            metrics.merge(other[0])
    if count == 0:
        return None
    result = {k: float(v) for k, v in metrics.compute().items()}
    result["loss"] = loss_sum / count
    result["num_videos"] = int(count)  # a count, as `nextvlad eval` reports it
    return result
