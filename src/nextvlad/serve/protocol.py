"""The Open Inference Protocol (KServe v2) over REST: infer requests in, responses out.

A request body is a JSON document, or, with the binary tensor extension, a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw tensors: an input whose
``parameters`` hold ``binary_data_size`` (and no ``data``) takes that many bytes of what
follows the header, in the order of the inputs, little-endian, row-major. An output is sent
in binary when its ``parameters`` ask ``binary_data: true`` (or the request's parameters ask
``binary_data_output: true``); the response then carries its own
``Inference-Header-Content-Length``. This is what ``tritonclient.http`` sends and reads.

Every fault a client can make is a :class:`ProtocolError` with the HTTP status to answer and a
one-line message that names the tensor.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nextvlad.errors import NextVLADError

HEADER_LENGTH = "Inference-Header-Content-Length"
# The protocol's tensor datatypes and numpy's little-endian dtypes (BYTES: see _bytes_*).
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


class ProtocolError(NextVLADError):
    """A request the server refuses: ``status`` is the HTTP status, the message the body's
    ``error``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class InferRequest:
    """A parsed infer request: its tensors as numpy arrays of their declared shape."""

    id: str | None
    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    outputs: list[RequestedOutput] | None  # None: the request names no outputs
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_output: bool = False  # the request's binary_data_output parameter


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """The request of an infer ``body``; ``header_length``: the ``Inference-Header-Content-
    Length`` header's value (None: the whole body is JSON)."""
    head, rest = _split(body, header_length)
    document = _json_object(head)
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError("'inputs' must be a non-empty list of tensors")
    parameters = _parameters(document, "the request")
    arrays: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    offset = 0
    for spec in inputs:
        name, datatype, shape, params = _tensor_header(spec)
        if name in arrays:
            raise ProtocolError(f"input '{name}' is given twice")
        size = params.get("binary_data_size")
        if size is not None:
            if "data" in spec:
                raise ProtocolError(f"input '{name}': both 'data' and binary_data_size")
            if not _is_count(size):
                raise ProtocolError(f"input '{name}': binary_data_size must be an integer >= 0")
            if offset + size > len(rest):
                raise ProtocolError(
                    f"input '{name}': binary_data_size {size} runs past the end of the body "
                    f"({len(rest) - offset} bytes left)"
                )
            arrays[name] = _from_binary(name, datatype, shape, rest[offset : offset + size])
            offset += size
        elif "data" in spec:
            arrays[name] = _from_json(name, datatype, shape, spec["data"])
        else:
            raise ProtocolError(f"input '{name}' has neither 'data' nor binary_data_size")
        datatypes[name] = datatype
    if offset != len(rest):
        raise ProtocolError(
            f"{len(rest) - offset} bytes of binary data after the header that no input claims"
        )
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise ProtocolError("parameter binary_data_output must be true or false")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    return InferRequest(
        request_id,
        arrays,
        datatypes,
        _requested_outputs(document, binary_output),
        parameters,
        binary_output,
    )


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 < length <= len(body):
        raise ProtocolError(
            f"{HEADER_LENGTH} {header_length!r} must be an integer in 1..{len(body)} "
            "(the size of the request's JSON header)"
        )
    return body[:length], body[length:]


def _reject_constant(token: str) -> float:
    """JSON has no NaN or Infinity: Python's parser accepts them, the protocol does not, but
    they are refused with the tensor's name later (a NaN in the features), so keep them."""
    return float(token)


def _json_object(head: bytes) -> dict[str, Any]:
    try:
        document = json.loads(head, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProtocolError(f"the request is not valid JSON ({err})") from None
    except RecursionError:
        raise ProtocolError("the request is not valid JSON (nested too deeply)") from None
    if not isinstance(document, dict):
        raise ProtocolError("the request must be a JSON object")
    return document


def _parameters(spec: dict[str, Any], what: str) -> dict[str, Any]:
    params = spec.get("parameters", {})
    if not isinstance(params, dict):
        raise ProtocolError(f"{what}: 'parameters' must be an object")
    return params


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor_header(spec: Any) -> tuple[str, str, tuple[int, ...], dict[str, Any]]:
    if not isinstance(spec, dict):
        raise ProtocolError("each input must be an object with name, datatype and shape")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError("an input has no 'name'")
    datatype = spec.get("datatype")
    if datatype not in DTYPES:
        known = ", ".join(DTYPES)
        raise ProtocolError(f"input '{name}': datatype {datatype!r} is not one of {known}")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise ProtocolError(f"input '{name}': 'shape' must be a list of integers >= 0")
    return name, datatype, tuple(shape), _parameters(spec, f"input '{name}'")


def _from_binary(name: str, datatype: str, shape: tuple[int, ...], raw: bytes) -> np.ndarray:
    dtype = DTYPES[datatype]
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise ProtocolError(
            f"input '{name}': {len(raw)} bytes of binary data for shape {list(shape)} of "
            f"{datatype} ({expected} bytes)"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    dtype = DTYPES[datatype]
    if not isinstance(data, list):
        data = [data]
    try:
        values = np.asarray(data)
    except ValueError:  # ragged nested lists
        raise ProtocolError(f"input '{name}': 'data' is not a rectangular list") from None
    if values.size and values.dtype.kind not in "biuf":
        raise ProtocolError(f"input '{name}': 'data' must hold numbers for {datatype}")
    if values.size != math.prod(shape):
        raise ProtocolError(
            f"input '{name}': {values.size} values for shape {list(shape)} "
            f"({math.prod(shape)} values)"
        )
    if dtype.kind in "iub":
        if values.size and values.dtype.kind == "f":
            raise ProtocolError(f"input '{name}': {datatype} takes integers, got fractions")
        if dtype.kind in "iu" and values.size:
            info = np.iinfo(dtype)
            low, high = values.min(), values.max()
            if low < info.min or high > info.max:
                raise ProtocolError(
                    f"input '{name}': values {low}..{high} out of {datatype}'s range "
                    f"{info.min}..{info.max}"
                )
    return values.astype(dtype).reshape(shape)


def _requested_outputs(
    document: dict[str, Any], binary_default: bool
) -> list[RequestedOutput] | None:
    outputs = document.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise ProtocolError("'outputs' must be a list")
    found = []
    for spec in outputs:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ProtocolError("each requested output must be an object with a 'name'")
        params = _parameters(spec, f"output '{spec['name']}'")
        binary = params.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise ProtocolError(f"output '{spec['name']}': binary_data must be true or false")
        found.append(RequestedOutput(spec["name"], binary))
    return found


@dataclass
class OutputTensor:
    name: str
    datatype: str  # FP32, INT64 or BYTES
    array: np.ndarray  # numbers, or an object array of str for BYTES


def _bytes_binary(values: np.ndarray) -> bytes:
    """BYTES elements in binary: each a 4-byte little-endian length, then its UTF-8."""
    parts = []
    for value in values.reshape(-1):
        raw = str(value).encode()
        parts.append(len(raw).to_bytes(4, "little") + raw)
    return b"".join(parts)


def encode_response(
    model: str, request_id: str | None, outputs: list[tuple[OutputTensor, bool]]
) -> tuple[bytes, int | None]:
    """(body, JSON header length or None) of an infer response; ``outputs``: each tensor with
    whether to send it in binary."""
    tensors = []
    binary = []
    for tensor, as_binary in outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.array.shape),
        }
        if as_binary:
            raw = (
                _bytes_binary(tensor.array)
                if tensor.datatype == "BYTES"
                else np.ascontiguousarray(tensor.array, dtype=DTYPES[tensor.datatype]).tobytes()
            )
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            entry["data"] = tensor.array.reshape(-1).tolist()
        tensors.append(entry)
    document: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": tensors}
    if request_id is not None:
        document["id"] = request_id
    head = json.dumps(document, separators=(",", ":")).encode()
    if not binary:
        return head, None
    return head + b"".join(binary), len(head)
