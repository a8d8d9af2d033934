"""The GraphDef reader on the encodings TensorFlow writes Const values in."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from nextvlad.extract._graphdef import GraphDefError, read_graph
from tests.extract import factories as f


def _tensor_node(name: str, tensor: bytes, dtype: int = f.DT_FLOAT) -> f.Node:
    return f.node(name, "Const", dtype=f.a_type(dtype), value=f._len(8, tensor))


def test_const_values_in_every_encoding():
    shape = f._len(2, f._shape([2, 3]))
    floats = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    packed = f._vint(1, f.DT_FLOAT) + shape + f._len(5, floats.astype("<f4").tobytes())
    one = f._vint(1, f.DT_FLOAT) + shape + f._varint(5 << 3 | 5) + struct.pack("<f", 1.5)
    ints = (
        f._vint(1, f.DT_INT32)
        + f._len(2, f._shape([3]))
        + f._len(7, b"".join(f._varint(v) for v in (1, 2, 300)))
    )
    scalar = (
        f._vint(1, f.DT_FLOAT) + f._len(2, b"") + f._varint(5 << 3 | 5) + struct.pack("<f", -2.0)
    )
    data = f.graphdef(
        [
            f.const("content", floats),
            _tensor_node("packed", packed),
            _tensor_node("broadcast", one),
            _tensor_node("ints", ints, f.DT_INT32),
            _tensor_node("scalar", scalar),
            f.node("relu", "Relu", ["content"], T=f.a_type(f.DT_FLOAT)),
            f.node(
                "bn",
                "BatchNormWithGlobalNormalization",
                variance_epsilon=f.a_float(0.001),
                scale_after_normalization=f.a_bool(False),
            ),
        ]
    )
    graph = read_graph(data)
    np.testing.assert_array_equal(graph.const("content"), floats)
    np.testing.assert_array_equal(graph.const("packed"), floats)
    np.testing.assert_array_equal(graph.const("broadcast"), np.full((2, 3), 1.5, np.float32))
    np.testing.assert_array_equal(graph.const("ints"), np.array([1, 2, 300], np.int32))
    assert graph.const("scalar").shape == ()
    assert graph.const("scalar") == -2.0
    assert graph.nodes["relu"].op == "Relu"
    assert graph.nodes["relu"].inputs == ["content"]
    assert graph.attr_bool("bn", "scale_after_normalization", True) is False
    assert graph.attr_float("bn", "variance_epsilon", 0.0) == pytest.approx(0.001)
    assert graph.attr_bool("relu", "absent", True) is True
    with pytest.raises(GraphDefError, match="relu is a Relu, not a Const"):
        graph.const("relu")


def test_truncated_and_inconsistent_bytes_are_refused():
    data = f.graphdef([f.const("w", np.ones((4, 4), np.float32))])
    with pytest.raises(GraphDefError, match="not a TensorFlow GraphDef"):
        read_graph(data[:-20])
    bad = f._vint(1, f.DT_FLOAT) + f._len(2, f._shape([5])) + f._len(4, b"\0" * 8)
    graph = read_graph(f.graphdef([_tensor_node("w", bad)]))
    with pytest.raises(GraphDefError, match=r"8 bytes of tensor_content for shape \(5,\)"):
        graph.const("w")
