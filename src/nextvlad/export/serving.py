"""The model an export holds: input transform + model (+ one branch) + sigmoid.

While it is being exported (traced by ``torch.jit.trace`` or ``torch.export``),
:class:`ServingModel` hands the model a frame packing built from ``num_frames`` by graph
operations alone (:func:`graph_packing`): the frame mask and the frame counts, no indices of
the real frames. The layers run their padded layout while exporting (every frame, padding
masked), so nothing in the graph has a shape that depends on the data, and the same graph
holds for any batch size, frame count and padding.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from nextvlad.errors import UsageError
from nextvlad.models import InputTransform, MixtureModel, ModelConfig, config_to_dict
from nextvlad.nn import frame_mask
from nextvlad.nn.packing import FramePacking

METADATA_FORMAT = "nextvlad-export"
METADATA_VERSION = 1


def exporting() -> bool:
    """True inside ``torch.jit.trace`` or either ONNX exporter."""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def graph_packing(num_frames: Tensor, length: int) -> FramePacking:
    """The packing of a (B, ``length``) batch as an exporter can record it: the frame mask
    (Eq. (19)), the counts and whether any frame is real, all computed by tensor operations
    from num_frames (B,). ``rows`` is empty (the real frames are not gathered while
    exporting: see the module docstring); ``sizes`` too."""
    counts = num_frames.to(torch.int64).clamp(0, length)  # (B,)
    mask = frame_mask(counts, length)  # (B, T) float32
    return FramePacking(
        batch_size=num_frames.shape[0],
        length=length,
        num_frames=counts,
        rows=torch.zeros(0, dtype=torch.int64),
        frame_mask=mask,
        counts=counts.to(torch.float32),
        has_frames=(counts.sum() > 0).to(torch.float32),
    )


class ServingModel(nn.Module):
    """Input transform + model (+ one branch) + sigmoid: what ``nextvlad export`` writes.

    Args:
        transform: the checkpoint's input transform.
        model: a frame-level model, a mixture or a video-level model; it is used as it is
            (not copied) and put in eval mode.
        branch: for a mixture, export this branch alone (``extract_branch``); None: the whole
            mixture.

    ``forward(frames, num_frames)``: frames (B, T, D) uint8 (float if the transform does not
    dequantise), num_frames (B,) int64 -> probabilities (B, C) float32. Video-level models:
    ``forward(features)`` with features (B, D) float32.
    """

    def __init__(
        self, transform: InputTransform, model: nn.Module, branch: int | None = None
    ) -> None:
        super().__init__()
        config: ModelConfig = model.config  # type: ignore[assignment]
        if branch is not None:
            if not isinstance(model, MixtureModel):
                raise UsageError(
                    f"branch {branch}: the model is not a mixture (--branch applies to "
                    "mixture presets only)"
                )
            branches = model.config.num_branches
            if not 0 <= branch < branches:
                raise UsageError(f"branch {branch}: the mixture has branches 0..{branches - 1}")
            model = model.extract_branch(branch)
            config = model.config
        self.transform = copy.deepcopy(transform).cpu()
        self.model = model.cpu().eval()
        self.config = config
        self.branch = branch
        self.frame_level = config.input_level == "frame"
        self.eval()

    @property
    def input_names(self) -> tuple[str, ...]:
        return ("frames", "num_frames") if self.frame_level else ("features",)

    @property
    def input_dtype(self) -> torch.dtype:
        """dtype of ``frames`` (uint8 unless the transform takes float frames) or features."""
        if self.frame_level and self.transform.dequantize:
            return torch.uint8
        return torch.float32

    def forward(self, x: Tensor, num_frames: Tensor | None = None) -> Tensor:
        """x: frames (B, T, D) with num_frames (B,), or video features (B, D) ->
        probabilities (B, C) float32."""
        if not self.frame_level:
            features = x.to(torch.float32)  # (B, D)
            return torch.sigmoid(self.model(features, None).logits)  # (B, C)
        frames: Tensor | FramePacking | None = num_frames
        if num_frames is not None and exporting():
            frames = graph_packing(num_frames, x.shape[1])
        features = self.transform(x, frames)  # (B, T, D) float32
        logits = self.model(features, frames).logits  # (B, C)
        return torch.sigmoid(logits)

    def example_inputs(
        self, batch_size: int, num_frames: int, *, seed: int = 0
    ) -> tuple[Tensor, ...]:
        """Generated inputs: random frames with random counts in [0, T] (one video with all T)
        and random values in the padding too (the model must ignore them), or random video
        features in [-1, 1]. Returns (frames (B, T, D), num_frames (B,)) or (features (B, D),).
        """
        g = torch.Generator().manual_seed(seed)
        dim = self.config.feature_dim
        if not self.frame_level:
            return (torch.rand(batch_size, dim, generator=g) * 2 - 1,)  # (B, D)
        if self.input_dtype == torch.uint8:
            frames = torch.randint(0, 256, (batch_size, num_frames, dim), generator=g)
            frames = frames.to(torch.uint8)  # (B, T, D)
        else:
            frames = torch.rand(batch_size, num_frames, dim, generator=g) * 4 - 2  # (B, T, D)
        counts = torch.randint(0, num_frames + 1, (batch_size,), generator=g)  # (B,)
        counts[0] = num_frames
        return frames, counts

    @torch.no_grad()
    def probabilities(self, *inputs: Tensor) -> Tensor:
        """``forward`` without gradients: (B, C) float32."""
        return self(*inputs)


def traced_inputs(serving: ServingModel) -> tuple[Tensor, ...]:
    """The inputs every exporter traces with: B = 2, T = 5, the second video padded (2 real
    frames), so that a decision taken in Python on whether a batch has padding at all is
    recorded as it falls for the general, padded case."""
    inputs = serving.example_inputs(2, 5)
    if serving.frame_level:
        inputs[1][:] = torch.tensor([5, 2])
    return inputs


def metadata(serving: ServingModel, *, dtype: str, quantize: str, **extra: Any) -> dict[str, Any]:
    """The JSON document stored in an exported file."""
    dim = serving.config.feature_dim
    if serving.frame_level:
        inputs = {
            "frames": {
                "dtype": str(serving.input_dtype).removeprefix("torch."),
                "shape": ["batch", "frames", dim],
            },
            "num_frames": {"dtype": "int64", "shape": ["batch"]},
        }
    else:
        inputs = {"features": {"dtype": "float32", "shape": ["batch", dim]}}
    return {
        "format": METADATA_FORMAT,
        "version": METADATA_VERSION,
        "model": config_to_dict(serving.config),
        "input_level": serving.config.input_level,
        "inputs": inputs,
        "outputs": {
            "probabilities": {"dtype": "float32", "shape": ["batch", serving.config.num_classes]}
        },
        "branch": serving.branch,
        "dtype": dtype,
        "quantize": quantize,
        **extra,
    }
