"""Running an exported file: ONNX Runtime or ``torch.jit.load``, probabilities out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from nextvlad.errors import UsageError
from nextvlad.export._common import INSTALL_HINT, ExportError, quiet
from nextvlad.export.onnx import ONNX_METADATA_KEY, OUTPUT_NAME
from nextvlad.export.serving import METADATA_FORMAT
from nextvlad.export.torchscript import TORCHSCRIPT_METADATA_FILE
from nextvlad.models import ModelConfig, config_from_dict


class ExportedModel(Protocol):
    """An exported file, loaded: call it with the serving inputs, get probabilities."""

    path: Path
    metadata: dict[str, Any]
    config: ModelConfig

    def __call__(self, x: Tensor, num_frames: Tensor | None = None) -> Tensor: ...


def _read_metadata(text: str | None, path: Path) -> tuple[dict[str, Any], ModelConfig]:
    if not text:
        raise ExportError(f"{path}: not a nextvlad export (no {ONNX_METADATA_KEY} metadata)")
    try:
        document = json.loads(text)
        if document.get("format") != METADATA_FORMAT:
            raise ValueError(f"format {document.get('format')!r}")
        return document, config_from_dict(document["model"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ExportError(f"{path}: unreadable nextvlad metadata ({err})") from None


def _check_inputs(config: ModelConfig, frame_level: bool, x: Tensor, path: Path) -> None:
    dim = config.feature_dim
    ndim = 3 if frame_level else 2
    if x.ndim != ndim or x.shape[-1] != dim:
        shape = "(batch, frames, %d)" if frame_level else "(batch, %d)"
        raise ExportError(f"{path} takes inputs of shape {shape % dim}, got {tuple(x.shape)}")


def _providers(ort: Any, device: str) -> list[Any]:
    providers: list[Any] = ["CPUExecutionProvider"]
    if device == "cpu":
        return providers
    if "CUDAExecutionProvider" in ort.get_available_providers():
        index = device.partition(":")[2]
        cuda = {"device_id": int(index)} if index.isdigit() else {}
        providers.insert(0, ("CUDAExecutionProvider", cuda))
    elif device != "auto":
        raise UsageError(
            f"--device {device}: this onnxruntime has no CUDA provider (pip install "
            "onnxruntime-gpu), use --device cpu"
        )
    return providers


class OnnxPredictor:
    """An exported ``.onnx`` file run with ONNX Runtime.

    Args:
        path: the file ``export_onnx`` wrote.
        device: "cpu", or "cuda"/"cuda:N"/"auto" for ONNX Runtime's CUDA provider ("auto"
            falls back to the CPU when that provider is missing).
        threads: intra-op threads (default: torch's setting, which follows OMP_NUM_THREADS).

    ``predictor(frames, num_frames)`` with frames (B, T, D) uint8 and num_frames (B,), or
    ``predictor(features)`` with (B, D) -> probabilities (B, C) float32 CPU tensor.
    """

    def __init__(self, path: str | Path, *, device: str = "cpu", threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f"{self.path}: no such file")
        try:
            import onnxruntime as ort
        except ImportError:
            raise ExportError(f"running an ONNX model needs onnxruntime: {INSTALL_HINT}") from None
        providers = _providers(ort, device)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as err:  # onnxruntime's own exception types
            raise ExportError(f"{self.path}: not a readable ONNX model ({err})") from None
        custom = self.session.get_modelmeta().custom_metadata_map
        self.metadata, self.config = _read_metadata(custom.get(ONNX_METADATA_KEY), self.path)
        self.frame_level = self.config.input_level == "frame"
        frames = self.metadata.get("inputs", {}).get("frames", {})
        self._frames_dtype = np.uint8 if frames.get("dtype") == "uint8" else np.float32

    def __call__(self, x: Tensor, num_frames: Tensor | None = None) -> Tensor:
        """x: frames (B, T, D) with num_frames (B,), or features (B, D) -> (B, C) float32."""
        _check_inputs(self.config, self.frame_level, x, self.path)
        if self.frame_level:
            if num_frames is None:
                num_frames = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)
            feed = {
                "frames": np.ascontiguousarray(x.cpu().numpy(), dtype=self._frames_dtype),
                "num_frames": np.ascontiguousarray(num_frames.cpu().numpy(), dtype=np.int64),
            }
        else:
            feed = {"features": np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)}
        (probabilities,) = self.session.run([OUTPUT_NAME], feed)
        return torch.from_numpy(probabilities)


class TorchScriptPredictor:
    """An exported TorchScript file (``torch.jit.load``), with the same call as
    :class:`OnnxPredictor`. Loading runs the archive's TorchScript code: load only files you
    trust (those you exported)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f"{self.path}: no such file")
        extra = {TORCHSCRIPT_METADATA_FILE: ""}
        try:
            with quiet():
                self.module = torch.jit.load(str(self.path), map_location="cpu", _extra_files=extra)
        except RuntimeError as err:
            raise ExportError(f"{self.path}: not a readable TorchScript archive ({err})") from None
        self.metadata, self.config = _read_metadata(extra[TORCHSCRIPT_METADATA_FILE], self.path)
        self.frame_level = self.config.input_level == "frame"

    @torch.no_grad()
    def __call__(self, x: Tensor, num_frames: Tensor | None = None) -> Tensor:
        """x: frames (B, T, D) with num_frames (B,), or features (B, D) -> (B, C) float32."""
        _check_inputs(self.config, self.frame_level, x, self.path)
        if not self.frame_level:
            return self.module(x.to(torch.float32))
        if num_frames is None:
            num_frames = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)
        return self.module(x, num_frames.to(torch.int64))


def load_exported(path: str | Path, *, device: str = "cpu") -> ExportedModel:
    """An exported file: ``.onnx`` -> :class:`OnnxPredictor`, else TorchScript."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    if path.suffix.lower() == ".onnx":
        return OnnxPredictor(path, device=device)
    return TorchScriptPredictor(path)
