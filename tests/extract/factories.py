"""Random-weight stand-ins for Google's files, in their real formats (no TensorFlow needed):

- :func:`write_inception_graphdef`: a runnable TensorFlow 1 GraphDef with the node names and ops
  of ``inception-2015-12-05``'s ``classify_image_graph_def.pb`` (``DecodeJpeg`` -> ``Cast`` ->
  ``ExpandDims`` -> ``ResizeBilinear`` -> ``Sub`` -> ``Mul`` -> 94 x (``Conv2D`` +
  ``BatchNormWithGlobalNormalization`` + ``CheckNumerics`` + ``Relu``), pools, ``Concat``,
  ``pool_3``, ``pool_3/_reshape``, ``softmax``), written by the small protobuf encoder below;
- :func:`write_inception_tgz`, :func:`write_inception_pth` (the FID port's keys);
- :func:`write_pca`, :func:`write_pca_tgz` (``yt8m_pca.tgz``'s layout);
- :func:`make_frames`: deterministic RGB frames with structure at several scales.

The same seed gives the same network in every format. The architecture is written here from
the graph's side (scopes, TF paddings and strides), independently of ``nextvlad.extract``.
"""

from __future__ import annotations

import io
import struct
import tarfile
from functools import lru_cache
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------- protobuf encoding (minimal)


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _vint(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


DT_FLOAT, DT_INT32, DT_UINT8, DT_STRING = 1, 3, 4, 7


def _shape(dims) -> bytes:
    return b"".join(_len(2, _vint(1, d) if d else b"") for d in dims)


def _tensor(array: np.ndarray) -> bytes:
    dtype = {np.dtype("float32"): DT_FLOAT, np.dtype("int32"): DT_INT32}[array.dtype]
    content = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    return _vint(1, dtype) + _len(2, _shape(array.shape)) + _len(4, content)


def a_type(t: int) -> bytes:
    return _vint(6, t)


def a_bool(b: bool) -> bytes:
    return _vint(5, int(b))


def a_float(f: float) -> bytes:
    return _varint(4 << 3 | 5) + struct.pack("<f", f)


def a_str(s: str) -> bytes:
    return _len(2, s.encode())


def a_ints(values) -> bytes:
    return _len(1, _len(3, b"".join(_varint(v) for v in values)))


def a_tensor(array: np.ndarray) -> bytes:
    return _len(8, _tensor(array))


def a_shape(dims) -> bytes:
    return _len(7, _shape(dims))


Node = tuple[str, bytes]  # (name, serialized NodeDef as GraphDef's field 1)


def node(name: str, op: str, inputs=(), **attrs: bytes) -> Node:
    body = _len(1, name.encode()) + _len(2, op.encode())
    body += b"".join(_len(3, i.encode()) for i in inputs)
    body += b"".join(_len(5, _len(1, k.encode()) + _len(2, v)) for k, v in attrs.items())
    return name, _len(1, body)


def const(name: str, array: np.ndarray) -> Node:
    dtype = DT_FLOAT if array.dtype == np.float32 else DT_INT32
    return node(name, "Const", dtype=a_type(dtype), value=a_tensor(array))


def graphdef(nodes: list[Node], producer: int = 8) -> bytes:
    # producer < 9: BatchNormWithGlobalNormalization is deprecated from GraphDef version 9.
    return b"".join(b for _, b in nodes) + _len(4, _vint(1, producer))


# ---------------------------------------------------------------- the architecture, graph side


# (scope, kernel (h, w), out channels, stride, padding) in the order of the graph.
def _block_a(s: str, pool: int) -> list:
    return [
        (f"{s}/conv", (1, 1), 64, 1, "SAME"),
        (f"{s}/tower/conv", (1, 1), 48, 1, "SAME"),
        (f"{s}/tower/conv_1", (5, 5), 64, 1, "SAME"),
        (f"{s}/tower_1/conv", (1, 1), 64, 1, "SAME"),
        (f"{s}/tower_1/conv_1", (3, 3), 96, 1, "SAME"),
        (f"{s}/tower_1/conv_2", (3, 3), 96, 1, "SAME"),
        (f"{s}/tower_2/conv", (1, 1), pool, 1, "SAME"),
    ]


def _block_c(s: str, c7: int) -> list:
    t1 = [(7, 1), (1, 7), (7, 1), (1, 7)]
    return [
        (f"{s}/conv", (1, 1), 192, 1, "SAME"),
        (f"{s}/tower/conv", (1, 1), c7, 1, "SAME"),
        (f"{s}/tower/conv_1", (1, 7), c7, 1, "SAME"),
        (f"{s}/tower/conv_2", (7, 1), 192, 1, "SAME"),
        (f"{s}/tower_1/conv", (1, 1), c7, 1, "SAME"),
        *[
            (f"{s}/tower_1/conv_{i + 1}", k, c7 if i < 3 else 192, 1, "SAME")
            for i, k in enumerate(t1)
        ],
        (f"{s}/tower_2/conv", (1, 1), 192, 1, "SAME"),
    ]


def _block_e(s: str) -> list:
    return [
        (f"{s}/conv", (1, 1), 320, 1, "SAME"),
        (f"{s}/tower/conv", (1, 1), 384, 1, "SAME"),
        (f"{s}/tower/mixed/conv", (1, 3), 384, 1, "SAME"),
        (f"{s}/tower/mixed/conv_1", (3, 1), 384, 1, "SAME"),
        (f"{s}/tower_1/conv", (1, 1), 448, 1, "SAME"),
        (f"{s}/tower_1/conv_1", (3, 3), 384, 1, "SAME"),
        (f"{s}/tower_1/mixed/conv", (1, 3), 384, 1, "SAME"),
        (f"{s}/tower_1/mixed/conv_1", (3, 1), 384, 1, "SAME"),
        (f"{s}/tower_2/conv", (1, 1), 192, 1, "SAME"),
    ]


class _Builder:
    """Emits the nodes of one random-weight graph and remembers every convolution's weights."""

    def __init__(self, params: dict[str, dict[str, np.ndarray]], flags: dict[str, bool]) -> None:
        self.params, self.flags = params, flags
        self.nodes: list[Node] = []

    def conv(self, x: str, scope: str, stride: int, padding: str) -> str:
        p = self.params[scope]
        f = a_type(DT_FLOAT)
        self.nodes.append(const(f"{scope}/conv2d_params", p["conv2d_params"]))
        self.nodes.append(
            node(
                f"{scope}/Conv2D",
                "Conv2D",
                [x, f"{scope}/conv2d_params"],
                T=f,
                strides=a_ints([1, stride, stride, 1]),
                padding=a_str(padding),
                use_cudnn_on_gpu=a_bool(True),
                data_format=a_str("NHWC"),
            )
        )
        bn = f"{scope}/batchnorm"
        for part in ("beta", "gamma", "moving_mean", "moving_variance"):
            self.nodes.append(const(f"{bn}/{part}", p[part]))
        inputs = [
            f"{scope}/Conv2D",
            *(f"{bn}/{q}" for q in ("moving_mean", "moving_variance", "beta", "gamma")),
        ]
        self.nodes.append(
            node(
                bn,
                "BatchNormWithGlobalNormalization",
                inputs,
                T=f,
                variance_epsilon=a_float(0.001),
                scale_after_normalization=a_bool(self.flags[scope]),
            )
        )
        self.nodes.append(
            node(f"{scope}/CheckNumerics", "CheckNumerics", [bn], T=f, message=a_str(""))
        )
        self.nodes.append(node(scope, "Relu", [f"{scope}/CheckNumerics"], T=f))
        return scope

    def pool(self, x: str, name: str, op: str, k: int, stride: int, padding: str) -> str:
        self.nodes.append(
            node(
                name,
                op,
                [x],
                T=a_type(DT_FLOAT),
                ksize=a_ints([1, k, k, 1]),
                strides=a_ints([1, stride, stride, 1]),
                padding=a_str(padding),
                data_format=a_str("NHWC"),
            )
        )
        return name

    def concat(self, name: str, values: list[str]) -> str:
        self.nodes.append(const(f"{name}/concat_dim", np.array(3, np.int32)))
        self.nodes.append(
            node(
                name,
                "Concat",
                [f"{name}/concat_dim", *values],
                N=_vint(3, len(values)),
                T=a_type(DT_FLOAT),
            )
        )
        return name

    def convs(self, x: str, specs: list) -> str:
        for scope, _, _, stride, padding in specs:
            x = self.conv(x, scope, stride, padding)
        return x


@lru_cache(maxsize=2)
def _graph_nodes(seed: int, mixed_10_pool: str = "MaxPool") -> list[Node]:
    params, flags, softmax = inception_params(seed)
    g = _Builder(params, flags)
    f = a_type(DT_FLOAT)
    g.nodes += [
        node("DecodeJpeg/contents", "Placeholder", dtype=a_type(DT_STRING), shape=a_shape([])),
        node("DecodeJpeg", "DecodeJpeg", ["DecodeJpeg/contents"], channels=_vint(3, 3)),
        node("Cast", "Cast", ["DecodeJpeg"], SrcT=a_type(DT_UINT8), DstT=f),
        const("ExpandDims/dim", np.array(0, np.int32)),
        node("ExpandDims", "ExpandDims", ["Cast", "ExpandDims/dim"], T=f, Tdim=a_type(DT_INT32)),
        const("ResizeBilinear/size", np.array([299, 299], np.int32)),
        node(
            "ResizeBilinear",
            "ResizeBilinear",
            ["ExpandDims", "ResizeBilinear/size"],
            T=f,
            align_corners=a_bool(False),
        ),
        const("Sub/y", np.array(128.0, np.float32)),
        node("Sub", "Sub", ["ResizeBilinear", "Sub/y"], T=f),
        const("Mul/y", np.array(1.0 / 128.0, np.float32)),
        node("Mul", "Mul", ["Sub", "Mul/y"], T=f),
    ]
    stem = _stem_specs()
    x = g.convs("Mul", stem[:3])
    x = g.pool(x, "pool", "MaxPool", 3, 2, "VALID")
    x = g.convs(x, stem[3:])
    x = g.pool(x, "pool_1", "MaxPool", 3, 2, "VALID")
    for s, pool in (("mixed", 32), ("mixed_1", 64), ("mixed_2", 64)):
        specs = _block_a(s, pool)
        a = g.convs(x, specs[:1])
        b = g.convs(x, specs[1:3])
        c = g.convs(x, specs[3:6])
        d = g.convs(g.pool(x, f"{s}/tower_2/pool", "AvgPool", 3, 1, "SAME"), specs[6:])
        x = g.concat(f"{s}/join", [a, b, c, d])
    specs = _block_b("mixed_3")
    a = g.convs(x, specs[:1])
    b = g.convs(x, specs[1:])
    x = g.concat("mixed_3/join", [a, b, g.pool(x, "mixed_3/pool", "MaxPool", 3, 2, "VALID")])
    for s, c7 in (("mixed_4", 128), ("mixed_5", 160), ("mixed_6", 160), ("mixed_7", 192)):
        specs = _block_c(s, c7)
        a = g.convs(x, specs[:1])
        b = g.convs(x, specs[1:4])
        c = g.convs(x, specs[4:9])
        d = g.convs(g.pool(x, f"{s}/tower_2/pool", "AvgPool", 3, 1, "SAME"), specs[9:])
        x = g.concat(f"{s}/join", [a, b, c, d])
    specs = _block_d("mixed_8")
    a = g.convs(x, specs[:2])
    b = g.convs(x, specs[2:])
    x = g.concat("mixed_8/join", [a, b, g.pool(x, "mixed_8/pool", "MaxPool", 3, 2, "VALID")])
    for s, pool_op in (("mixed_9", "AvgPool"), ("mixed_10", mixed_10_pool)):
        specs = _block_e(s)
        a = g.convs(x, specs[:1])
        t = g.convs(x, specs[1:2])
        t = g.concat(f"{s}/tower/mixed/join", [g.convs(t, specs[2:3]), g.convs(t, specs[3:4])])
        u = g.convs(x, specs[4:6])
        u = g.concat(f"{s}/tower_1/mixed/join", [g.convs(u, specs[6:7]), g.convs(u, specs[7:8])])
        d = g.convs(g.pool(x, f"{s}/tower_2/pool", pool_op, 3, 1, "SAME"), specs[8:])
        x = g.concat(f"{s}/join", [a, t, u, d])
    x = g.pool(x, "pool_3", "AvgPool", 8, 1, "VALID")
    g.nodes += [
        const("pool_3/_reshape/shape", np.array([1, 2048], np.int32)),
        node(
            "pool_3/_reshape", "Reshape", [x, "pool_3/_reshape/shape"], T=f, Tshape=a_type(DT_INT32)
        ),
        const("softmax/weights", softmax["weights"]),
        const("softmax/biases", softmax["biases"]),
        node("softmax/logits/MatMul", "MatMul", ["pool_3/_reshape", "softmax/weights"], T=f),
        node("softmax/logits", "BiasAdd", ["softmax/logits/MatMul", "softmax/biases"], T=f),
        node("softmax", "Softmax", ["softmax/logits"], T=f),
    ]
    return g.nodes


def _stem_specs() -> list:
    return [
        ("conv", (3, 3), 32, 2, "VALID"),
        ("conv_1", (3, 3), 32, 1, "VALID"),
        ("conv_2", (3, 3), 64, 1, "SAME"),
        ("conv_3", (1, 1), 80, 1, "VALID"),
        ("conv_4", (3, 3), 192, 1, "VALID"),
    ]


def _block_b(s: str) -> list:
    return [
        (f"{s}/conv", (3, 3), 384, 2, "VALID"),
        (f"{s}/tower/conv", (1, 1), 64, 1, "SAME"),
        (f"{s}/tower/conv_1", (3, 3), 96, 1, "SAME"),
        (f"{s}/tower/conv_2", (3, 3), 96, 2, "VALID"),
    ]


def _block_d(s: str) -> list:
    return [
        (f"{s}/tower/conv", (1, 1), 192, 1, "SAME"),
        (f"{s}/tower/conv_1", (3, 3), 320, 2, "VALID"),
        (f"{s}/tower_1/conv", (1, 1), 192, 1, "SAME"),
        (f"{s}/tower_1/conv_1", (1, 7), 192, 1, "SAME"),
        (f"{s}/tower_1/conv_2", (7, 1), 192, 1, "SAME"),
        (f"{s}/tower_1/conv_3", (3, 3), 192, 2, "VALID"),
    ]


def all_conv_specs() -> list:
    """Every convolution as (scope, (kh, kw), out, stride, padding) with its input channels
    appended: (scope, (kh, kw), cin, cout, stride, padding)."""
    out = []
    cin = 3
    stem = _stem_specs()
    chans = [3, 32, 32, 64, 80]
    for (scope, k, cout, s, p), c in zip(stem, chans, strict=True):
        out.append((scope, k, c, cout, s, p))
    cin = 192

    def add(specs: list, inputs: list[int]) -> None:
        for (scope, k, cout, s, p), c in zip(specs, inputs, strict=True):
            out.append((scope, k, c, cout, s, p))

    for s, pool in (("mixed", 32), ("mixed_1", 64), ("mixed_2", 64)):
        add(_block_a(s, pool), [cin, cin, 48, cin, 64, 96, cin])
        cin = 64 + 64 + 96 + pool
    add(_block_b("mixed_3"), [cin, cin, 64, 96])
    cin = 384 + 96 + cin
    for s, c7 in (("mixed_4", 128), ("mixed_5", 160), ("mixed_6", 160), ("mixed_7", 192)):
        add(_block_c(s, c7), [cin, cin, c7, c7, cin, c7, c7, c7, c7, cin])
    add(_block_d("mixed_8"), [cin, 192, cin, 192, 192, 192])
    cin = 320 + 192 + cin
    for s in ("mixed_9", "mixed_10"):
        add(_block_e(s), [cin, cin, 384, 384, cin, 448, 384, 384, cin])
        cin = 2048
    return out


# ---------------------------------------------------------------- random weights


@lru_cache(maxsize=2)
def inception_params(seed: int = 0):
    """(params, scale_flags, softmax) for ``seed``: params[scope] = {conv2d_params (HWIO), beta,
    gamma, moving_mean, moving_variance} float32; scale_flags[scope] =
    scale_after_normalization (every third convolution leaves its random gamma unused)."""
    rng = np.random.default_rng(seed)
    params, flags = {}, {}
    for i, (scope, (kh, kw), cin, cout, _, _) in enumerate(all_conv_specs()):
        fan_in = kh * kw * cin
        kernel = rng.standard_normal((kh, kw, cin, cout), dtype=np.float32)
        kernel *= np.float32(np.sqrt(2.0 / fan_in))
        params[scope] = {
            "conv2d_params": kernel,
            "beta": (rng.standard_normal(cout, dtype=np.float32) * 0.1).astype(np.float32),
            "gamma": rng.uniform(0.8, 1.25, cout).astype(np.float32),
            "moving_mean": (rng.standard_normal(cout, dtype=np.float32) * 0.1).astype(np.float32),
            "moving_variance": rng.uniform(0.7, 1.4, cout).astype(np.float32),
        }
        flags[scope] = i % 3 != 0
    softmax = {
        "weights": (rng.standard_normal((2048, 1008), dtype=np.float32) * 0.02).astype(np.float32),
        "biases": np.zeros(1008, np.float32),
    }
    return params, flags, softmax


def inception_graphdef_bytes(
    seed: int = 0, *, drop=(), replace=None, mixed_10_pool: str = "MaxPool"
) -> bytes:
    """The serialized graph; ``drop`` leaves out the named nodes, ``replace`` maps Const names to
    other arrays, ``mixed_10_pool`` changes the op of mixed_10's pool branch (for error tests)."""
    replace = replace or {}
    nodes = [
        const(name, replace[name]) if name in replace else (name, data)
        for name, data in _graph_nodes(seed, mixed_10_pool)
        if name not in drop
    ]
    return graphdef(nodes)


def write_inception_graphdef(path, seed: int = 0, **changes) -> Path:
    """A random-weight ``classify_image_graph_def.pb`` (about 96 MB); ``changes`` as
    :func:`inception_graphdef_bytes`."""
    path = Path(path)
    path.write_bytes(inception_graphdef_bytes(seed, **changes))
    return path


def write_inception_tgz(path, seed: int = 0, member: str = "classify_image_graph_def.pb") -> Path:
    """``inception-2015-12-05.tgz``'s layout: the graph (plus a label file, as Google's)."""
    path = Path(path)
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        _add(tar, member, inception_graphdef_bytes(seed))
        _add(tar, "imagenet_synset_to_human_label_map.txt", b"n00000000\tnothing\n")
    return path


def fid_state_dict(seed: int = 0) -> dict:
    """The FID port's state dict for the same network (gamma -> ones where the graph ignores it)."""
    import torch

    from nextvlad.extract._inception_weights import conv_scopes

    params, flags, softmax = inception_params(seed)
    state = {}
    for scope, prefix in conv_scopes().items():
        p = params[scope]
        state[f"{prefix}.conv.weight"] = torch.from_numpy(
            p["conv2d_params"].transpose(3, 2, 0, 1).copy()
        )
        gamma = p["gamma"] if flags[scope] else np.ones_like(p["gamma"])
        state[f"{prefix}.bn.weight"] = torch.from_numpy(gamma.copy())
        state[f"{prefix}.bn.bias"] = torch.from_numpy(p["beta"].copy())
        state[f"{prefix}.bn.running_mean"] = torch.from_numpy(p["moving_mean"].copy())
        state[f"{prefix}.bn.running_var"] = torch.from_numpy(p["moving_variance"].copy())
        state[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0)
    state["fc.weight"] = torch.from_numpy(softmax["weights"].T.copy())
    state["fc.bias"] = torch.from_numpy(softmax["biases"].copy())
    return state


def write_inception_pth(path, seed: int = 0) -> Path:
    """A random ``pt_inception-2015-12-05-*.pth`` (pytorch-fid's keys) equal to the graph's."""
    import torch

    path = Path(path)
    torch.save(fid_state_dict(seed), path)
    return path


# ---------------------------------------------------------------- PCA

# pool_3 of the seed-0 random graph on make_frames() frames: about 0.62 in every dimension with
# a spread of about 0.85 between dimensions (0.03 between frames). The default PCA is scaled so
# that its whitened features spread over [-2, 2] with few clipped; calibrated_pca_arrays() fits
# the mean and eigenvalues to given features instead, so that frame-to-frame differences show.
POOL3_MEAN = 0.62
POOL3_SCALE = 0.85


def _hadamard(n: int) -> np.ndarray:
    h = np.ones((1, 1), np.float32)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


@lru_cache(maxsize=2)
def pca_arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean (2048, 1), eigenvals (2048, 1), eigenvecs (2048, 2048)) float32: orthonormal rows
    (a Hadamard matrix with rows permuted and columns sign-flipped), decreasing eigenvalues."""
    rng = np.random.default_rng(seed + 1000)
    d = 2048
    rows = _hadamard(d)[rng.permutation(d)] * rng.choice([-1.0, 1.0], d).astype(np.float32)
    eigenvecs = (rows / np.float32(np.sqrt(d))).astype(np.float32)
    mean = (POOL3_MEAN + rng.standard_normal((d, 1)) * 0.01 * POOL3_SCALE).astype(np.float32)
    eigenvals = np.sort(rng.uniform(0.5, 2.0, d))[::-1].reshape(d, 1)
    eigenvals = (eigenvals * (POOL3_SCALE**2)).astype(np.float32)
    return mean, eigenvals, eigenvecs


def calibrated_pca_arrays(features: np.ndarray, seed: int = 0):
    """(mean, eigenvals, eigenvecs, order) in Google's layout: the eigenvectors of
    :func:`pca_arrays` reordered (``eigenvecs = pca_arrays(seed)[2][order]``), the mean of
    ``features`` (n, 2048) and, as eigenvalues, the variance of ``features`` along each
    eigenvector, largest first (so whitened features have unit spread)."""
    _, _, vecs = pca_arrays(seed)
    x = np.asarray(features, np.float64)
    mean = x.mean(axis=0)
    var = ((x - mean) @ vecs.T.astype(np.float64)).var(axis=0) + 1e-8  # (2048,)
    order = np.argsort(var)[::-1]
    return (
        mean.reshape(-1, 1).astype(np.float32),
        var[order].reshape(-1, 1).astype(np.float32),
        np.ascontiguousarray(vecs[order]),
        order,
    )


def write_pca(folder, seed: int = 0, arrays=None) -> Path:
    """A random PCA folder (``mean.npy``, ``eigenvals.npy``, ``eigenvecs.npy``); ``arrays``
    (mean, eigenvals, eigenvecs) replaces the default ones."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = pca_arrays(seed) if arrays is None else arrays
    for name, array in zip(("mean", "eigenvals", "eigenvecs"), arrays, strict=True):
        np.save(folder / f"{name}.npy", array)
    return folder


def write_pca_tgz(path, seed: int = 0) -> Path:
    """``yt8m_pca.tgz``'s layout: the three .npy files at the archive's top level."""
    path = Path(path)
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, array in zip(("mean", "eigenvals", "eigenvecs"), pca_arrays(seed), strict=True):
            buf = io.BytesIO()
            np.save(buf, array)
            _add(tar, f"{name}.npy", buf.getvalue())
    return path


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------- frames


def make_frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(n, height, width, 3) uint8 RGB: smooth random colour fields, a moving gradient and
    pixel noise, different in every frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    frames = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        coarse = rng.uniform(0, 255, (4, 4, 3))
        iy = np.minimum((yy * 4).astype(int), 3)
        ix = np.minimum((xx * 4).astype(int), 3)
        field = coarse[iy, ix]  # (h, w, 3) blocks
        phase = rng.uniform(0, 2 * np.pi, 3)
        freq = rng.uniform(1, 8, 3)
        wave = 60 * np.sin(2 * np.pi * freq * (xx[..., None] + yy[..., None] * 0.5) + phase)
        noise = rng.normal(0, 12, (height, width, 3))
        frames[i] = np.clip(field * 0.7 + wave + noise + 40, 0, 255).astype(np.uint8)
    return frames
