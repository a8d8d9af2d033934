"""What the server runs: a checkpoint in eager float32, bf16 autocast or int8, or an ONNX file.

Each backend is built from the code ``nextvlad predict`` runs: ``load_for_inference`` and the
evaluation forward (``model_inputs``: the packing of the real frames worked out on the host,
padding masked as in training), ``quantize_int8`` (as ``predict --quantize int8``), bf16
autocast (as ``eval --precision bf16``), ``OnnxPredictor`` (as ``predict`` on an .onnx file).

Frame inputs arrive as the records' quantised bytes (UINT8) or as dequantised features (FP32:
``q * 4/255 + 4/512 - 2``, the values the records' reader hands the model, before the
checkpoint's reverse whitening). Torch backends dequantise UINT8 on the host with that very
arithmetic and run the checkpoint's transform without its dequantisation step, so both
datatypes give the same probabilities and one batch may mix them.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nextvlad._yt8m import DEQUANT_BIAS, DEQUANT_SCALE
from nextvlad.errors import UsageError

BACKENDS = ("eager", "bf16", "int8", "onnx")
# Largest difference in probability from eager float32 that each backend is held to in
# tests/serve (docs/serving.md): ONNX as docs/export.md's parity bound, int8 and bf16 as
# measured on the small models of docs/export.md and docs/performance.md.
TOLERANCE = {"eager": 0.0, "onnx": 1e-4, "int8": 2e-2, "bf16": 2e-2}


@dataclass
class Backend:
    """A loaded model ready to run a batch.

    ``run(x, num_frames)``: x (B, T, D) frames in ``frames_dtype`` with num_frames (B,) int64,
    or (B, D) float32 video features with None -> probabilities (B, C) float32 on the CPU.
    """

    kind: str  # one of BACKENDS
    config: Any  # ModelConfig
    source: Path  # the checkpoint folder or the exported file
    run: Callable[[Tensor, Tensor | None], Tensor]
    frames_dtype: torch.dtype  # what `prepare` makes of the feature inputs
    datatypes: tuple[str, ...]  # the protocol datatypes the feature inputs may have

    @property
    def frame_level(self) -> bool:
        return bool(self.config.input_level == "frame")

    @property
    def input_names(self) -> tuple[str, ...]:
        """The feature inputs, in the order they are concatenated (rgb, audio)."""
        config = self.config
        if not self.frame_level:
            return tuple(config.feature_names)
        streams = config.branch.streams if hasattr(config, "branch") else config.streams
        return tuple(s.name for s in streams)

    def prepare(self, streams: list[np.ndarray], datatype: str) -> Tensor:
        """The request's feature inputs (each (B, T, d) or (B, d)) as one tensor, as they
        came (``convert`` makes them the model's, in the batcher's worker thread)."""
        if datatype not in self.datatypes:
            raise ValueError(f"datatype {datatype} for a backend of {self.datatypes}")
        return torch.from_numpy(np.concatenate(streams, axis=-1))

    def convert(self, x: Tensor) -> Tensor:
        """A request's tensor in ``frames_dtype``: UINT8 frames for a float32 backend are
        dequantised with the records' arithmetic (``q * 4/255 + 4/512 - 2``, float32)."""
        if x.dtype == torch.uint8 and self.frames_dtype == torch.float32:
            return x.to(torch.float32).mul_(DEQUANT_SCALE).add_(DEQUANT_BIAS)
        return x.to(self.frames_dtype)


class _TorchForward:
    """The evaluation forward of ``nextvlad predict`` on one batch, probabilities out."""

    def __init__(
        self, model: Any, transform: Any, device: torch.device, branch: int | None, bf16: bool
    ) -> None:
        from nextvlad.training.evaluate import reference_frames

        self.model = model.eval()
        self.transform = copy.deepcopy(transform)
        self.transform.dequantize = False  # `Backend.prepare` dequantises on the host
        self.device = device
        self.branch = branch
        self.pad_to = reference_frames(model)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    @torch.no_grad()
    def __call__(self, x: Tensor, num_frames: Tensor | None) -> Tensor:
        from nextvlad.data import Batch
        from nextvlad.training.evaluate import model_inputs, select_logits

        labels = torch.zeros(x.shape[0], 0)
        if num_frames is None:
            batch = Batch(ids=[""] * len(x), labels=labels, features=x)
        else:
            batch = Batch(ids=[""] * len(x), labels=labels, frames=x, num_frames=num_frames)
        features, packing = model_inputs(batch, self.transform, self.device, pad_to=self.pad_to)
        with self.autocast:
            out = self.model(features, packing)
        return torch.sigmoid(select_logits(out, self.branch).float()).cpu()


def _checkpoint_backend(
    checkpoint: str, kind: str, device: torch.device, branch: int | None
) -> Backend:
    from nextvlad.checkpoint import load_for_inference

    model, transform, loaded, folder = load_for_inference(checkpoint)
    config: Any = loaded
    if branch is not None:
        from nextvlad.export import ServingModel

        ServingModel(transform, model, branch)  # the checks of --branch, as export makes them
        config = config.branch  # every branch has the mixture's inputs and classes
    if kind == "int8":
        from nextvlad.models.quantize import quantize_int8

        if device.type != "cpu":
            raise UsageError("--backend int8 runs on the CPU: add --device cpu")
        model = quantize_int8(model)
    if kind == "onnx":
        return _exported_checkpoint(model, transform, folder, device, branch)
    forward = _TorchForward(model.to(device), transform.to(device), device, branch, kind == "bf16")
    float_only = config.input_level != "frame" or not transform.dequantize
    return Backend(
        kind,
        config,
        folder,
        forward,
        torch.float32,
        ("FP32",) if float_only else ("UINT8", "FP32"),
    )


def _exported_checkpoint(
    model: Any, transform: Any, folder: Path, device: torch.device, branch: int | None
) -> Backend:
    """--checkpoint with --backend onnx: the checkpoint exported (as `nextvlad export`) to a
    temporary file, then run as one."""
    from nextvlad.export import ServingModel, export

    with tempfile.TemporaryDirectory(prefix="nextvlad-serve-") as tmp:
        out = Path(tmp) / "model.onnx"
        export(ServingModel(transform, model, branch), out, format="onnx")
        backend = _onnx_backend(out, device)  # the session holds the graph: the file can go
    backend.source = folder
    return backend


def _onnx_backend(path: Path, device: torch.device) -> Backend:
    from nextvlad.export import OnnxPredictor

    predictor = OnnxPredictor(path, device=str(device))
    frames = predictor.metadata.get("inputs", {}).get("frames", {})
    uint8 = predictor.frame_level and frames.get("dtype") == "uint8"

    def run(x: Tensor, num_frames: Tensor | None) -> Tensor:
        return predictor(x, num_frames).to(torch.float32)

    return Backend(
        "onnx",
        predictor.config,
        path,
        run,
        torch.uint8 if uint8 else torch.float32,
        ("UINT8",) if uint8 else ("FP32",),
    )


def load_backend(
    *,
    checkpoint: str | None,
    export_file: str | None,
    kind: str,
    device: torch.device,
    branch: int | None = None,
) -> Backend:
    """The backend of ``--checkpoint`` (any kind) or ``--export FILE`` (an .onnx file)."""
    if kind not in BACKENDS:
        raise UsageError(f"--backend {kind}: expected one of {', '.join(BACKENDS)}")
    if export_file is None:
        assert checkpoint is not None
        return _checkpoint_backend(checkpoint, kind, device, branch)
    path = Path(export_file)
    if path.suffix.lower() != ".onnx":
        raise UsageError(
            f"--export {path}: the server runs .onnx exports (`nextvlad export --format onnx`); "
            "loading a TorchScript archive runs the code in it: give its checkpoint instead"
        )
    if kind != "onnx":
        raise UsageError(f"--export {path} runs with --backend onnx, not {kind}")
    if branch is not None:
        raise UsageError("--branch does not apply to an exported model")
    return _onnx_backend(path, device)
