"""A TensorFlow ``GraphDef`` read without TensorFlow: node names, ops, inputs, attributes and the
values of ``Const`` nodes, from the protocol-buffer wire format.

Messages used (tensorflow/core/framework/{graph,node_def,attr_value,tensor,tensor_shape}.proto)::

    GraphDef         { repeated NodeDef node = 1; VersionDef versions = 4; ... }
    NodeDef          { string name = 1; string op = 2; repeated string input = 3;
                       string device = 4; map<string, AttrValue> attr = 5; }
    AttrValue        { oneof { ListValue list = 1; bytes s = 2; int64 i = 3; float f = 4;
                               bool b = 5; DataType type = 6; TensorShapeProto shape = 7;
                               TensorProto tensor = 8; ... } }
    TensorProto      { DataType dtype = 1; TensorShapeProto tensor_shape = 2;
                       bytes tensor_content = 4; repeated float float_val = 5 [packed];
                       repeated double double_val = 6; repeated int32 int_val = 7;
                       repeated int64 int64_val = 10; ... }
    TensorShapeProto { repeated Dim dim = 2 { int64 size = 1; }; bool unknown_rank = 3; }
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from nextvlad.data._wire import (
    I32,
    I64,
    LEN,
    VARINT,
    Buffer,
    WireError,
    decode_packed_varints,
    iter_fields,
    to_int64,
)

# DataType enum values (tensorflow/core/framework/types.proto) and their little-endian dtypes.
DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?"}
DT_FLOAT = 1


class GraphDefError(ValueError):
    """Bytes that are not a readable GraphDef (the caller names the file)."""


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attr: dict[str, tuple[int, int]] = field(default_factory=dict)  # AttrValue byte ranges


@dataclass
class Graph:
    """The nodes of a GraphDef by name, over the bytes they were read from."""

    data: Buffer
    nodes: dict[str, Node]

    def attr_bool(self, node: str, key: str, default: bool) -> bool:
        return bool(self._attr_scalar(node, key, 5, default))

    def attr_float(self, node: str, key: str, default: float) -> float:
        return float(self._attr_scalar(node, key, 4, default))

    def const(self, name: str) -> np.ndarray:
        """The value of the Const node ``name`` (its ``value`` attribute's TensorProto)."""
        node = self.nodes[name]
        span = node.attr.get("value")
        if node.op != "Const" or span is None:
            raise GraphDefError(f"node {name} is a {node.op}, not a Const")
        for number, wire, a, b in iter_fields(self.data, *span):
            if number == 8 and wire == LEN:
                return _decode_tensor(self.data, a, b, name)
        raise GraphDefError(f"Const {name} has no tensor value")

    def _attr_scalar(self, node: str, key: str, number: int, default: float | bool) -> float | bool:
        span = self.nodes[node].attr.get(key)
        if span is None:
            return default
        for n, wire, a, _ in iter_fields(self.data, *span):
            if n == number and number == 5 and wire == VARINT:
                return bool(a)
            if n == number and number == 4 and wire == I32:
                return float(struct.unpack_from("<f", self.data, a)[0])
        return default


def read_graph(data: Buffer) -> Graph:
    """Parses a serialized GraphDef. Raises :class:`GraphDefError` on malformed bytes."""
    try:
        nodes: dict[str, Node] = {}
        for number, wire, a, b in iter_fields(data, 0, len(data)):
            if number == 1 and wire == LEN:
                node = _read_node(data, a, b)
                nodes[node.name] = node
        return Graph(data, nodes)
    except (WireError, UnicodeDecodeError) as err:
        raise GraphDefError(f"not a TensorFlow GraphDef ({err})") from None


def _read_node(data: Buffer, pos: int, end: int) -> Node:
    node = Node("", "")
    for number, wire, a, b in iter_fields(data, pos, end):
        if wire != LEN:
            continue
        if number == 1:
            node.name = bytes(data[a:b]).decode()
        elif number == 2:
            node.op = bytes(data[a:b]).decode()
        elif number == 3:
            node.inputs.append(bytes(data[a:b]).decode())
        elif number == 5:
            key, value = "", (b, b)
            for n2, w2, a2, b2 in iter_fields(data, a, b):
                if n2 == 1 and w2 == LEN:
                    key = bytes(data[a2:b2]).decode()
                elif n2 == 2 and w2 == LEN:
                    value = (a2, b2)
            node.attr[key] = value
    return node


def _decode_tensor(data: Buffer, pos: int, end: int, name: str) -> np.ndarray:
    dtype_code = DT_FLOAT
    shape: list[int] = []
    content: bytes | None = None
    floats: list[np.ndarray] = []
    ints: list[int] = []
    for number, wire, a, b in iter_fields(data, pos, end):
        if number == 1 and wire == VARINT:
            dtype_code = a
        elif number == 2 and wire == LEN:
            shape = _decode_shape(data, a, b)
        elif number == 4 and wire == LEN:
            content = bytes(data[a:b])
        elif number in (5, 6):  # float_val, double_val
            width, fmt = (4, "<f4") if number == 5 else (8, "<f8")
            if wire == LEN:
                floats.append(np.frombuffer(data, fmt, (b - a) // width, a).astype(np.float64))
            elif wire in (I32, I64):
                floats.append(np.frombuffer(data, fmt, 1, a).astype(np.float64))
        elif number in (7, 10, 11):  # int_val, int64_val, bool_val
            if wire == LEN:
                ints.extend(decode_packed_varints(data, a, b))
            elif wire == VARINT:
                ints.append(to_int64(a))
    if dtype_code not in DTYPES:
        raise GraphDefError(f"Const {name} has data type {dtype_code}, which is not numeric")
    dtype = np.dtype(DTYPES[dtype_code])
    count = int(np.prod(shape)) if shape else 1
    if content is not None:
        if len(content) != count * dtype.itemsize:
            raise GraphDefError(
                f"Const {name}: {len(content)} bytes of tensor_content for shape {tuple(shape)}"
            )
        return (
            np.frombuffer(content, dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)
        )
    values = np.concatenate(floats) if floats else np.array(ints, np.float64)
    if values.size == 0:
        return np.zeros(shape, dtype.newbyteorder("="))
    if values.size < count:  # TensorFlow repeats the last value to fill the shape
        values = np.concatenate([values, np.full(count - values.size, values[-1])])
    return values[:count].astype(dtype.newbyteorder("=")).reshape(shape)


def _decode_shape(data: Buffer, pos: int, end: int) -> list[int]:
    dims = []
    for number, wire, a, b in iter_fields(data, pos, end):
        if number == 2 and wire == LEN:
            size = 0
            for n2, w2, a2, _ in iter_fields(data, a, b):
                if n2 == 1 and w2 == VARINT:
                    size = to_int64(a2)
            dims.append(size)
    return dims
