"""The training step: what `nextvlad train` runs per batch, and what the benchmark times.

:class:`TrainStep` is the whole step, defined once: :meth:`TrainStep.prepare` does the host's
part (the batch's frame packing, from the frame counts it already has, and the copies to the
device, asynchronous where the device allows), and calling the step does the device's part:
input transform, forward, the reference's loss, backward, each gradient clipped to a norm
separately, the optimizer at the learning rate of the staircase schedule, and the
bookkeeping of non-finite losses.

Nothing in the device part reads a value back to the host. A non-finite loss or gradient is
detected on the device: the fused Adam kernel skips the update (``found_inf``: weights, Adam's
moments and step count stay as they were), and with ``skip_nonfinite`` the batch-norm moving
statistics the batch moved are put back. The host learns of it at the next
:meth:`TrainStep.read` (the loop reads every ``--log-every`` steps, before each evaluation and
checkpoint, and at the end), which reports each step's loss and whether it was finite. So a
non-finite loss stops a run up to ``--log-every`` steps after it
happened, naming the step, with the weights of the last good step; with ``skip_nonfinite`` the
learning-rate schedule and Adam's TF1 epsilon catch up on the skipped batches at that read.

``TrainStep.forward_loss`` (transform, forward, loss) is what ``--compile`` compiles; frame
counts are padded to buckets and the packed rows to a budget, so that it sees few shapes
(``nextvlad.training.batches``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from nextvlad.data import Batch
from nextvlad.losses import yt8m_loss
from nextvlad.models import InputTransform, MixtureConfig, ModelConfig, ModelOutput
from nextvlad.nn import BatchNorm, FramePacking, NeXtVLAD
from nextvlad.training.batches import REFERENCE_FRAMES, DeviceBatch, device_batch
from nextvlad.training.optim import adam
from nextvlad.training.options import TrainOptions

MAX_COMPILED_SHAPES = 128  # --compile: shape buckets compiled before falling back to eager


@dataclass
class Recipe:
    """The optimisation settings of a step (``TrainOptions`` has them with the CLI's help)."""

    learning_rate: float = 2e-4
    lr_decay: float = 0.8
    lr_decay_examples: int = 2_000_000
    clip_norm: float = 1.0
    l2_penalty: float = 1e-5
    temperature: float = 3.0  # mixtures: distillation temperature T
    distill_weight: float = 0.0  # mixtures: λ (0 for a single model)
    precision: str = "fp32"
    skip_nonfinite: bool = False

    def learning_rate_at(self, examples_seen: int) -> float:
        """Staircase exponential decay: lr * decay ** floor(examples / decay_examples)."""
        return self.learning_rate * self.lr_decay ** (examples_seen // self.lr_decay_examples)


@dataclass
class StepRecord:
    """One step as the device saw it (:meth:`TrainStep.read`)."""

    loss: float  # its loss (nan or inf where it was not finite)
    finite: bool  # loss and every gradient finite: the update was made


@torch.no_grad()
def gradient_norms(parameters: list[nn.Parameter]) -> list[Tensor]:
    """The L2 norm of each gradient (of the parameters that have one)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return list(torch._foreach_norm(grads)) if grads else []


@torch.no_grad()
def clip_each_gradient(
    parameters: list[nn.Parameter], max_norm: float, norms: list[Tensor] | None = None
) -> None:
    """TF's clip_by_norm on every gradient tensor separately: g * c / max(||g||, c).

    ``norms``: the gradients' norms if already computed (``gradient_norms``)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads or max_norm <= 0:
        return
    if norms is None:
        norms = list(torch._foreach_norm(grads))
    factors = max_norm / torch.stack(norms).clamp(min=max_norm)  # (P,)
    torch._foreach_mul_(grads, list(factors.unbind()))


class TrainStep:
    """One training step (see the module docstring).

    Args:
        model: the model (its parameters are trained, its batch norms restored on a skip).
        transform: the input transform (uint8 frames -> model input).
        optimizer: Adam (``nextvlad.training.optim.adam``); a fused one skips non-finite
            updates on the device, another one makes the step read one flag a step.
        recipe: learning rate, schedule, clipping, loss weights, precision.
        net: what the forward pass calls (the model wrapped in DDP), default ``model``.
        compile: ``torch.compile`` the transform, forward and loss (bucketed shapes); a
            string names the backend (default "inductor"; "eager" compiles nothing, which is
            what a test of the shapes and graph breaks needs).
        max_frames: the longest padded frame count (for the buckets).
        pad_to: pad every frame-level batch to this many frames (reference-compatible
            models, whose statistics count the original's 300 padded frames), or None.
    """

    def __init__(
        self,
        model: nn.Module,
        transform: InputTransform,
        optimizer: torch.optim.Optimizer,
        recipe: Recipe,
        *,
        device: torch.device,
        net: nn.Module | None = None,
        compile: bool | str = False,
        max_frames: int = 300,
        pad_to: int | None = None,
    ) -> None:
        self.model, self.transform, self.optimizer, self.recipe = (
            model,
            transform,
            optimizer,
            recipe,
        )
        self.net = net if net is not None else model
        self.device = device
        self.max_frames, self.pad_to, self.compiled = max_frames, pad_to, bool(compile)
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.regularized: list[Tensor] = model.regularized_parameters()  # type: ignore[operator]
        self.fused = bool(optimizer.defaults.get("fused"))
        self.batch_norm_buffers = [
            b for m in model.modules() if isinstance(m, BatchNorm) for b in m.buffers()
        ]
        self._forward_loss = self.forward_loss
        if compile:
            backend = compile if isinstance(compile, str) else "inductor"
            # One graph per shape bucket: more than dynamo's default of 8 may be met.
            config = torch._dynamo.config
            name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
            setattr(config, name, max(getattr(config, name), MAX_COMPILED_SHAPES))
            self._forward_loss = torch.compile(self.forward_loss, backend=backend, dynamic=False)
        self._pending: list[Tensor] = []  # (loss, finite) of each step since the last read

    # The host's part.

    def prepare(self, batch: Batch) -> DeviceBatch:
        """The batch on the device with its packing, worked out here from the batch's own
        frame counts (``device_batch``: buckets under ``--compile``, ``pad_to`` frames for
        reference-compatible models); the copies are asynchronous where the device allows."""
        return device_batch(
            batch,
            self.device,
            pad_to=self.pad_to,
            bucket_max=self.max_frames if self.compiled else None,
        )

    # The device's part.

    def forward_loss(
        self,
        inputs: Tensor,
        packing: FramePacking | None,
        labels: Tensor,
        weights: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Transform, forward and the reference's loss -> (total loss, logits (B, C)).
        ``weights`` (B, C): label weights (segment fine-tuning: only rated pairs count)."""
        autocast: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self.recipe.precision == "bf16":
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16)
        features = self.transform(inputs, packing) if packing is not None else inputs
        with autocast:
            out: ModelOutput = self.net(features, packing)
        branch_logits = None if out.branch_logits is None else out.branch_logits.float()
        terms = yt8m_loss(
            out.logits.float(),
            labels,
            branch_logits=branch_logits,
            temperature=self.recipe.temperature,
            distill_weight=self.recipe.distill_weight,
            l2_tensors=self.regularized,
            l2_weight=self.recipe.l2_penalty,
            weights=weights,
        )
        return terms["total"], out.logits.detach()

    def __call__(self, batch: DeviceBatch, examples_seen: int) -> Tensor:
        """Train on one prepared batch at the schedule's learning rate for ``examples_seen``
        (global examples trained on before it); returns the logits (B, C), detached."""
        lr = self.recipe.learning_rate_at(examples_seen)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        saved = [b.clone() for b in self.batch_norm_buffers] if self.recipe.skip_nonfinite else []
        loss, logits = self._forward_loss(batch.inputs, batch.packing, batch.labels, batch.weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        finite = self._clip_and_check(loss)
        self._apply(finite, saved)
        self._pending.append(torch.stack([loss.detach().double(), finite.double()]))
        return logits

    @torch.no_grad()
    def _clip_and_check(self, loss: Tensor) -> Tensor:
        """Clip each gradient; return () bool: the loss and every gradient are finite."""
        norms = gradient_norms(self.parameters)
        finite = torch.isfinite(loss.detach())
        if norms:
            finite = finite & torch.isfinite(torch.stack(norms)).all()
            clip_each_gradient(self.parameters, self.recipe.clip_norm, norms)
        return finite

    @torch.no_grad()
    def _apply(self, finite: Tensor, saved: list[Tensor]) -> None:
        if self.fused:  # the kernel skips the update where found_inf is nonzero (GradScaler's
            # private protocol: tests/training/test_optim.py fails if torch changes it)
            self.optimizer.found_inf = (~finite).float()  # type: ignore[attr-defined]
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf  # type: ignore[attr-defined]
        elif bool(finite):  # no fused kernel here: one read of the flag a step
            self.optimizer.step()
        for buffer, before in zip(self.batch_norm_buffers, saved, strict=False):
            buffer.copy_(torch.where(finite, buffer, before))

    def read(self) -> list[StepRecord]:
        """The steps since the previous read, in order: one read-back (it waits for the
        device), made every ``--log-every`` steps, not every step."""
        if not self._pending:
            return []
        values = torch.stack(self._pending).tolist()
        self._pending.clear()
        skipped = sum(1 for _, finite in values if not finite)
        if skipped and self.fused and hasattr(self.optimizer, "forget_steps"):
            self.optimizer.forget_steps(skipped)  # Adam's step count, for TF1's epsilon
        return [StepRecord(loss, bool(finite)) for loss, finite in values]

    @contextlib.contextmanager
    def sync_debug(self, enabled: bool) -> Iterator[None]:
        """CUDA: make any host-device synchronisation inside the block an error."""
        if not enabled or self.device.type != "cuda":
            yield
            return
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")


def bf16_is_native(device: torch.device) -> bool:
    """Whether bf16 products run natively on ``device``: a GPU, or a CPU with AVX512-BF16 or
    AMX. Elsewhere oneDNN emulates them, several times slower than float32 (measured:
    docs/performance.md)."""
    if device.type != "cpu":
        return True
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def recipe(options: TrainOptions, config: ModelConfig) -> Recipe:
    """The step's settings from the options (the mixture's T and λ default to its preset's)."""
    temperature, distill_weight = options.temperature, options.distill_weight
    if isinstance(config, MixtureConfig):
        temperature = temperature if temperature is not None else config.temperature
        distill_weight = distill_weight if distill_weight is not None else config.distill_weight
    return Recipe(
        learning_rate=options.learning_rate,
        lr_decay=options.lr_decay,
        lr_decay_examples=options.lr_decay_examples,
        clip_norm=options.clip_norm,
        l2_penalty=options.l2_penalty,
        temperature=temperature or 3.0,
        distill_weight=distill_weight or 0.0,
        precision=options.precision,
        skip_nonfinite=options.skip_nonfinite,
    )


def build_step(
    model: nn.Module,
    transform: InputTransform,
    options: TrainOptions,
    config: ModelConfig,
    device: torch.device,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    net: nn.Module | None = None,
) -> TrainStep:
    """The step `nextvlad train` runs for these options (``benchmarks/train_throughput.py``
    builds its step here too): the paper's Adam unless ``optimizer`` is given, NeXtVLAD's
    ``--folded``, ``--compile``, and the original's 300 frames for reference-compatible
    models."""
    for module in model.modules():
        if isinstance(module, NeXtVLAD):
            module.folded = options.nextvlad_folded
    if optimizer is None:
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = adam(parameters, options.learning_rate, options.adam_epsilon)
    reference = bool(getattr(config, "reference_compat", False))
    return TrainStep(
        model,
        transform,
        optimizer,
        recipe(options, config),
        device=device,
        net=net,
        compile=options.compile,
        max_frames=options.max_frames,
        pad_to=REFERENCE_FRAMES if reference else None,
    )
