"""The model's tensors on the protocol: its metadata, the checks of a request's inputs (each
refusal names the tensor), and the outputs of a response (probabilities, top-k)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nextvlad.serve.backends import Backend
from nextvlad.serve.protocol import InferRequest, OutputTensor, ProtocolError

NUM_FRAMES = "num_frames"
PROBABILITIES = "probabilities"
TOP_K_OUTPUTS = ("top_k_indices", "top_k_scores", "top_k_labels")


@dataclass
class Signature:
    """What ``backend`` takes and gives, with the server's limits."""

    backend: Backend
    max_frames: int  # frames a video may have (--max-frames)
    max_batch_size: int  # videos a request may hold (--max-batch-size)
    names: dict[int, str] | None = None  # --vocabulary: class index -> name

    @property
    def frame_level(self) -> bool:
        return self.backend.frame_level

    @property
    def num_classes(self) -> int:
        return int(self.backend.config.num_classes)

    def _dims(self) -> dict[str, int]:
        return dict(zip(self.backend.input_names, self.backend.config.stream_dims, strict=True))

    def metadata(self, name: str) -> dict[str, Any]:
        datatype = self.backend.datatypes[0]
        if self.frame_level:
            inputs = [
                {"name": n, "datatype": datatype, "shape": [-1, -1, d]}
                for n, d in self._dims().items()
            ]
            inputs.append({"name": NUM_FRAMES, "datatype": "INT32", "shape": [-1]})
        else:
            inputs = [
                {"name": n, "datatype": datatype, "shape": [-1, d]} for n, d in self._dims().items()
            ]
        outputs = [{"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, self.num_classes]}]
        return {
            "name": name,
            "versions": ["1"],
            "platform": f"nextvlad_{self.backend.kind}",
            "inputs": inputs,
            "outputs": outputs,
            "parameters": {"input_datatypes": list(self.backend.datatypes)},
        }

    def inputs(self, request: InferRequest) -> tuple[Tensor, Tensor | None]:
        """The request's inputs as the backend takes them: (x, num_frames (B,) int64 or
        None)."""
        dims = self._dims()
        expected = [*dims, NUM_FRAMES] if self.frame_level else list(dims)
        for name in request.inputs:
            if name not in expected:
                raise ProtocolError(
                    f"unknown input '{name}'; the model takes {', '.join(expected)}"
                )
        for name in dims:
            if name not in request.inputs:
                raise ProtocolError(f"missing input '{name}'")
        arrays = [self._feature(name, dim, request) for name, dim in dims.items()]
        datatypes = {request.datatypes[n] for n in dims}
        if len(datatypes) > 1:
            raise ProtocolError(f"inputs {', '.join(dims)} must have one datatype")
        self._same_sizes(arrays, list(dims))
        x = self.backend.prepare(arrays, datatypes.pop())
        if not self.frame_level:
            return x, None
        return x, self._num_frames(request, arrays[0].shape[0], arrays[0].shape[1])

    def _feature(self, name: str, dim: int, request: InferRequest) -> np.ndarray:
        array, datatype = request.inputs[name], request.datatypes[name]
        if datatype not in self.backend.datatypes:
            raise ProtocolError(
                f"input '{name}': datatype {datatype}; the model takes "
                f"{' or '.join(self.backend.datatypes)}"
            )
        rank = 3 if self.frame_level else 2
        wanted = "[batch, frames, %d]" if self.frame_level else "[batch, %d]"
        if array.ndim != rank or array.shape[-1] != dim:
            raise ProtocolError(
                f"input '{name}': shape {list(array.shape)}; expected {wanted % dim}"
            )
        if array.shape[0] < 1:
            raise ProtocolError(f"input '{name}': no videos (batch 0)")
        if array.shape[0] > self.max_batch_size:
            raise ProtocolError(
                f"input '{name}': {array.shape[0]} videos; the server takes at most "
                f"{self.max_batch_size} a request (--max-batch-size)"
            )
        if self.frame_level and not 1 <= array.shape[1] <= self.max_frames:
            raise ProtocolError(
                f"input '{name}': {array.shape[1]} frames; the server takes 1 to "
                f"{self.max_frames} (--max-frames)"
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ProtocolError(f"input '{name}': NaN or infinite values")
        return array

    def _same_sizes(self, arrays: list[np.ndarray], names: list[str]) -> None:
        leading = 2 if self.frame_level else 1
        for array, name in zip(arrays[1:], names[1:], strict=True):
            if array.shape[:leading] != arrays[0].shape[:leading]:
                what = "videos and frames" if self.frame_level else "videos"
                raise ProtocolError(
                    f"input '{name}': shape {list(array.shape)} has other {what} than "
                    f"'{names[0]}' {list(arrays[0].shape)}"
                )

    def _num_frames(self, request: InferRequest, batch: int, length: int) -> Tensor:
        if NUM_FRAMES not in request.inputs:  # every frame given is real
            return torch.full((batch,), length, dtype=torch.int64)
        counts, datatype = request.inputs[NUM_FRAMES], request.datatypes[NUM_FRAMES]
        if datatype not in ("INT32", "INT64"):
            raise ProtocolError(f"input '{NUM_FRAMES}': datatype {datatype}; expected INT32")
        if counts.shape not in ((batch,), (batch, 1)):
            raise ProtocolError(
                f"input '{NUM_FRAMES}': shape {list(counts.shape)}; expected [{batch}], one "
                "count a video"
            )
        counts = counts.reshape(batch).astype(np.int64)
        bad = counts[(counts < 0) | (counts > length)]
        if bad.size:
            raise ProtocolError(
                f"input '{NUM_FRAMES}': {int(bad[0])} out of range 0..{length} (the frames given)"
            )
        return torch.from_numpy(counts)

    def top_k(self, request: InferRequest) -> int | None:
        k = request.parameters.get("top_k")
        if k is None:
            return None
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= self.num_classes:
            raise ProtocolError(f"parameter top_k {k!r}: an integer in 1..{self.num_classes}")
        return k

    def check_outputs(self, request: InferRequest) -> None:
        """Refuse requested outputs the server cannot give, before the request is queued."""
        known = [PROBABILITIES, *TOP_K_OUTPUTS[: 3 if self.names is not None else 2]]
        k = self.top_k(request)
        for output in request.outputs or []:
            if output.name not in known:
                hint = (
                    " (start the server with --vocabulary)" if output.name in TOP_K_OUTPUTS else ""
                )
                raise ProtocolError(
                    f"unknown output '{output.name}'{hint}; the model gives {', '.join(known)}"
                )
            if output.name in TOP_K_OUTPUTS and k is None:
                raise ProtocolError(f"output '{output.name}' needs the top_k parameter")

    def outputs(
        self, request: InferRequest, probabilities: Tensor
    ) -> list[tuple[OutputTensor, bool]]:
        """The response's tensors, each with whether it goes in binary."""
        k = self.top_k(request)
        values = probabilities.numpy().astype(np.float32, copy=False)
        tensors = {PROBABILITIES: OutputTensor(PROBABILITIES, "FP32", values)}
        if k is not None:
            scores, indices = torch.topk(probabilities, k, dim=1)
            tensors["top_k_indices"] = OutputTensor("top_k_indices", "INT64", indices.numpy())
            tensors["top_k_scores"] = OutputTensor("top_k_scores", "FP32", scores.numpy())
            if self.names is not None:
                labels = np.vectorize(lambda i: self.names.get(int(i), ""), otypes=[object])  # type: ignore[union-attr]
                tensors["top_k_labels"] = OutputTensor(
                    "top_k_labels", "BYTES", labels(indices.numpy())
                )
        if request.outputs is None:
            return [(t, request.binary_output) for t in tensors.values()]
        return [(tensors[o.name], o.binary) for o in request.outputs]
