"""Export a trained model for serving: ONNX or TorchScript, uint8 frames in, probabilities out.

The exported graph is :class:`ServingModel`: the input transform (dequantisation, zeroed
padding, reverse whitening of Eq. (11)), the model (a whole mixture or one of its branches) and
the sigmoid, in eval mode. Frame-level models take ``frames`` uint8 (B, T, D) and
``num_frames`` int64 (B,), with B and T free; video-level models take ``features`` float32
(B, D). Both return ``probabilities`` float32 (B, C).

Smaller files: ``dtype="fp16"`` stores the weight matrices (every parameter with two or more
dimensions) in float16 and casts them back to float32 in the graph, so the computation stays
float32; ``quantize="int8"`` is dynamic int8 quantisation of the linear layers (ONNX Runtime's
``quantize_dynamic``; ``torch.ao``'s for TorchScript). The 2nd YouTube-8M challenge (2018)
limited models to 1 GB; :data:`BUDGET_BYTES` takes that as 10^9 bytes.

Both formats are traced (``torch.jit.trace``; for ONNX the TorchScript-based exporter,
``dynamo=False``, opset 17) with a batch whose second video is padded, so any decision the
model takes in Python about padding is recorded for the general, padded case; the frame mask
built from ``num_frames`` and NeXtVLAD's selection of the real frames (``skip_padding``: a
NonZero in ONNX) are recorded as operations and work for any B and T. The ``torch.export``
exporter (``dynamo=True``) refuses that selection (a data-dependent shape) and takes about 20x
longer. Both files carry the model's configuration as JSON metadata, which
:func:`load_exported` reads back (``nextvlad predict`` on an ``.onnx`` file).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from nextvlad.data import Batch
from nextvlad.errors import NextVLADError, UsageError
from nextvlad.metrics import YT8MMetrics
from nextvlad.models import (
    InputTransform,
    MixtureModel,
    ModelConfig,
    config_from_dict,
    config_to_dict,
)

FORMATS = ("onnx", "torchscript")
DTYPES = ("fp32", "fp16")
QUANTIZATIONS = ("none", "int8")
BUDGET_BYTES = 10**9  # the 2018 challenge's model size limit, 1 GB
METADATA_FORMAT = "nextvlad-export"
METADATA_VERSION = 1
ONNX_METADATA_KEY = "nextvlad"  # key of the JSON document in the ONNX model's metadata_props
TORCHSCRIPT_METADATA_FILE = "nextvlad.json"  # extra file of the TorchScript archive
PARITY_SHAPES = ((1, 1), (3, 17), (2, 300), (5, 64))  # (B, T) of the parity check's batches
PARITY_TOLERANCE = 1e-4  # max abs difference in probabilities allowed for fp32 exports
ONNX_OPSET = 17
_ONNX_SIZE_LIMIT = 2**31 - 1  # protobuf's limit on one serialised message
_INSTALL_HINT = "pip install 'nextvlad[export]'"


class ExportError(NextVLADError):
    """An export that failed, or an exported file that cannot be read."""


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
        if self.frame_level:
            features = self.transform(x, num_frames)  # (B, T, D) float32
        else:
            features = x.to(torch.float32)  # (B, D)
            num_frames = None
        logits = self.model(features, num_frames).logits  # (B, C)
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


def _traced_inputs(serving: ServingModel) -> tuple[Tensor, ...]:
    """The inputs both exports are traced with: B = 2, T = 5, the second video padded (2
    real frames). The padding matters: a decision the model takes in Python on whether a
    batch has padded frames at all (e.g. to skip the masking) is recorded as it falls for
    the traced input, and only the padded case is correct for every input."""
    inputs = serving.example_inputs(2, 5)
    if serving.frame_level:
        inputs[1][:] = torch.tensor([5, 2])
    return inputs


def _check_options(dtype: str, quantize: str) -> None:
    if dtype not in DTYPES:
        raise UsageError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if quantize not in QUANTIZATIONS:
        raise UsageError(f"quantize {quantize!r}: expected one of {', '.join(QUANTIZATIONS)}")
    if dtype == "fp16" and quantize == "int8":
        raise UsageError("fp16 weights and int8 quantisation are alternatives: choose one of them")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress prints, deprecation warnings and log chatter."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _replace(tmp: Path, out: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out)


def _tmp_path(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_name(f".{out.name}.tmp")


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ExportError(f"ONNX export needs the onnx package: {_INSTALL_HINT}") from None
    return onnx


def _fp16_initializers(model_proto: Any) -> int:
    """Store every float32 initializer with two or more dimensions as float16, followed by a
    Cast back to float32 (ONNX Runtime folds the casts when it loads the model). Returns the
    number of tensors converted; values beyond float16's range stay float32."""
    _import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    graph = model_proto.graph
    casts = []
    converted = 0
    for init in list(graph.initializer):
        if init.data_type != TensorProto.FLOAT or len(init.dims) < 2:
            continue
        values = numpy_helper.to_array(init)
        if not np.all(np.abs(values) <= np.finfo(np.float16).max):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(values.astype(np.float16), f"{name}__fp16"))
        casts.append(helper.make_node("Cast", [init.name], [name], to=TensorProto.FLOAT))
        converted += 1
    for node in reversed(casts):
        graph.node.insert(0, node)
    return converted


def _set_onnx_metadata(model_proto: Any, document: dict[str, Any]) -> None:
    for prop in list(model_proto.metadata_props):
        if prop.key == ONNX_METADATA_KEY:
            model_proto.metadata_props.remove(prop)
    prop = model_proto.metadata_props.add()
    prop.key = ONNX_METADATA_KEY
    prop.value = json.dumps(document)


def _save_onnx(model_proto: Any, path: Path) -> None:
    onnx = _import_onnx()
    if model_proto.ByteSize() >= _ONNX_SIZE_LIMIT:
        raise ExportError(
            f"the ONNX model is {model_proto.ByteSize() / 1e9:.2f} GB, over ONNX's 2 GB limit "
            "on one file: use --dtype fp16 or --quantize int8"
        )
    onnx.save_model(model_proto, str(path))


def export_onnx(
    serving: ServingModel,
    out: str | Path,
    *,
    dtype: str = "fp32",
    quantize: str = "none",
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``serving`` as one ONNX file (opset 17) with dynamic batch and frame axes.

    Inputs ``frames`` (batch, frames, D) + ``num_frames`` (batch,), or ``features`` (batch, D);
    output ``probabilities`` (batch, C). Written under a temporary name and renamed.
    """
    _check_options(dtype, quantize)
    onnx = _import_onnx()
    out = Path(out)
    tmp = _tmp_path(out)
    names = list(serving.input_names)
    axes = {name: {0: "batch"} for name in [*names, "probabilities"]}
    if serving.frame_level:
        axes["frames"] = {0: "batch", 1: "frames"}
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                serving,
                _traced_inputs(serving),
                str(tmp),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=names,
                output_names=["probabilities"],
                dynamic_axes=axes,
            )
        model_proto = onnx.load_model(str(tmp))
    except Exception as err:  # the exporter raises many kinds; report them as one
        tmp.unlink(missing_ok=True)
        raise ExportError(f"ONNX export failed: {type(err).__name__}: {err}") from err
    document = metadata(serving, dtype=dtype, quantize=quantize, **(extra_metadata or {}))
    try:
        if dtype == "fp16":
            _fp16_initializers(model_proto)
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            with _quiet():
                # 7-bit weights: 8-bit ones can saturate the u8 x s8 products of x86 kernels
                # without VNNI (ONNX Runtime's advice); on the AVX2 test machine the largest
                # error in a probability fell from 2.9e-2 to 5.2e-3
                quantize_dynamic(model_proto, tmp, weight_type=QuantType.QInt8, reduce_range=True)
            model_proto = onnx.load_model(str(tmp))
        _set_onnx_metadata(model_proto, document)
        _save_onnx(model_proto, tmp)
        _replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


class _ToFloat32(nn.Module):
    """Parametrisation: a float16 stored tensor used as float32."""

    def forward(self, x: Tensor) -> Tensor:
        return x.to(torch.float32)


def _fp16_parameters(module: nn.Module) -> int:
    """Store every parameter with two or more dimensions as float16, cast to float32 where
    it is used (``torch.nn.utils.parametrize``). Returns the number converted."""
    from torch.nn.utils import parametrize

    converted = 0
    for name, param in list(module.named_parameters()):
        if param.ndim < 2 or not torch.all(param.abs() <= torch.finfo(torch.float16).max):
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        parametrize.register_parametrization(owner, leaf, _ToFloat32(), unsafe=True)
        half = nn.Parameter(param.detach().to(torch.float16), requires_grad=False)
        owner.parametrizations[leaf].original = half  # type: ignore[union-attr,index]
        converted += 1
    return converted


def _int8_linear(module: nn.Module) -> nn.Module:
    """``torch.ao`` dynamic int8 quantisation of the linear layers outside the VLAD layers.

    NeXtVLAD and NetVLAD read their FC weights directly (stacked or folded products), which a
    quantised module does not offer, so their linear layers stay float32: they hold a few
    percent of a model's weights (the hidden FC and the classifier hold most of them)."""
    from nextvlad.models.quantize import as_torch_linears
    from nextvlad.nn import NetVLAD, NeXtVLAD

    as_torch_linears(module)
    try:
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
    except ImportError:
        raise ExportError(
            "int8 TorchScript needs torch.ao.quantization, which this torch lacks: use "
            "--format onnx"
        ) from None
    inside = {
        id(sub)
        for layer in module.modules()
        if isinstance(layer, NeXtVLAD | NetVLAD)
        for sub in layer.modules()
    }
    spec = {
        name: default_dynamic_qconfig
        for name, sub in module.named_modules()
        if isinstance(sub, nn.Linear) and id(sub) not in inside
    }
    with _quiet():
        return quantize_dynamic(module, spec, dtype=torch.qint8)


def export_torchscript(
    serving: ServingModel,
    out: str | Path,
    *,
    dtype: str = "fp32",
    quantize: str = "none",
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``serving`` traced with ``torch.jit.trace`` (any batch size and frame count).

    ``torch.jit.load(out)(frames, num_frames)`` -> probabilities (B, C); the metadata is the
    archive's extra file ``nextvlad.json``. Written under a temporary name and renamed.
    """
    _check_options(dtype, quantize)
    out = Path(out)
    tmp = _tmp_path(out)
    module: nn.Module = serving
    if dtype == "fp16":
        module = copy.deepcopy(serving)
        _fp16_parameters(module)
    if quantize == "int8":
        module = _int8_linear(copy.deepcopy(serving))
    document = metadata(serving, dtype=dtype, quantize=quantize, **(extra_metadata or {}))
    extra_files = {TORCHSCRIPT_METADATA_FILE: json.dumps(document)}
    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(module, _traced_inputs(serving), check_trace=False)
        with _quiet():
            torch.jit.save(traced, str(tmp), _extra_files=extra_files)
        _replace(tmp, out)
    except Exception as err:  # tracing raises many kinds; report them as one
        tmp.unlink(missing_ok=True)
        raise ExportError(f"TorchScript export failed: {type(err).__name__}: {err}") from err
    return out


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
            raise ExportError(f"running an ONNX model needs onnxruntime: {_INSTALL_HINT}") from None
        providers: list[Any] = ["CPUExecutionProvider"]
        if device != "cpu":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                index = device.partition(":")[2]
                cuda = {"device_id": int(index)} if index.isdigit() else {}
                providers.insert(0, ("CUDAExecutionProvider", cuda))
            elif device != "auto":
                raise UsageError(
                    f"--device {device}: this onnxruntime has no CUDA provider (pip install "
                    "onnxruntime-gpu), use --device cpu"
                )
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
        self._frames_dtype = (
            np.uint8
            if self.metadata.get("inputs", {}).get("frames", {}).get("dtype") == "uint8"
            else np.float32
        )

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
        (probabilities,) = self.session.run(["probabilities"], feed)
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
            with _quiet():
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


def export(
    serving: ServingModel,
    out: str | Path,
    *,
    format: str = "onnx",
    dtype: str = "fp32",
    quantize: str = "none",
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """``export_onnx`` or ``export_torchscript`` by ``format``."""
    if format not in FORMATS:
        raise UsageError(f"format {format!r}: expected one of {', '.join(FORMATS)}")
    writer = export_onnx if format == "onnx" else export_torchscript
    return writer(serving, out, dtype=dtype, quantize=quantize, extra_metadata=extra_metadata)


def parity(
    serving: ServingModel,
    exported: ExportedModel,
    shapes: Sequence[tuple[int, int]] = PARITY_SHAPES,
    *,
    seed: int = 0,
) -> float:
    """Max abs difference between the exported model's and PyTorch's probabilities on
    generated batches of the given (B, T) (padded frames included)."""
    worst = 0.0
    for i, (batch_size, num_frames) in enumerate(shapes):
        inputs = serving.example_inputs(batch_size, num_frames, seed=seed + i)
        expected = serving.probabilities(*inputs)
        got = exported(*inputs)
        worst = max(worst, float((got - expected).abs().max()))
    return worst


def iter_exported_predictions(
    exported: ExportedModel | ServingModel, batches: Iterable[Batch]
) -> Iterator[tuple[Batch, Tensor]]:
    """(batch, probabilities (B, C) float32) for each batch."""
    for batch in batches:
        if batch.frames is not None:
            assert batch.num_frames is not None
            with torch.no_grad():
                yield batch, exported(batch.frames, batch.num_frames)
        else:
            assert batch.features is not None
            with torch.no_grad():
                yield batch, exported(batch.features)


@dataclass
class GapComparison:
    """GAP@20 of PyTorch and of the exported model on the same videos."""

    pytorch: float
    exported: float
    num_videos: int
    max_abs_diff: float  # largest difference in any probability

    @property
    def change(self) -> float:
        return self.exported - self.pytorch


def compare_gap(
    serving: ServingModel,
    exported: ExportedModel,
    batches: Iterable[Batch],
    *,
    top_k: int = 20,
) -> GapComparison:
    """Run both models on each batch once and compare their GAP@top_k (and probabilities)."""
    num_classes = serving.config.num_classes
    ours, theirs = YT8MMetrics(num_classes, top_k), YT8MMetrics(num_classes, top_k)
    worst = 0.0
    for batch, got in iter_exported_predictions(exported, batches):
        if batch.frames is not None:
            assert batch.num_frames is not None
            expected = serving.probabilities(batch.frames, batch.num_frames)
        else:
            assert batch.features is not None
            expected = serving.probabilities(batch.features)
        ours.update(expected, batch.labels)
        theirs.update(got, batch.labels)
        worst = max(worst, float((got - expected).abs().max()))
    if ours.num_videos == 0:
        raise UsageError("no videos in the evaluation data")
    return GapComparison(
        pytorch=float(ours.compute()["gap"]),
        exported=float(theirs.compute()["gap"]),
        num_videos=ours.num_videos,
        max_abs_diff=worst,
    )
