"""VGGish: the TF checkpoint reader and writer (V1, the format of Google's one-file
``vggish_model.ckpt``; V2 index + data), the network against a NumPy float64 transcription of
``vggish_slim.py``, refusals of wrong files; and, where ~/tfenv holds TensorFlow, TF itself
reading our checkpoint, computing the same graph, and writing checkpoints we read."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from nextvlad.errors import UsageError
from nextvlad.extract import _tf_checkpoint as tfc
from nextvlad.extract import _tf_checkpoint_writer as tfw
from nextvlad.extract.vggish import VGGISH_SHAPES, VGGishWeightsError, load_vggish
from tests.extract._audio_fixtures import vggish_ckpt  # noqa: F401  (a session fixture)

# What TensorFlow 2.21's ``tf.raw_ops.Save`` wrote for these two tensors (see
# test_tf_writes_what_we_write, which regenerates it where TF is installed).
TF_SAVED = {
    "vggish/conv1/weights": np.arange(6, dtype=np.float32).reshape(1, 2, 3),
    "a/b": np.array([1.5, 2.5], np.float32),
}
TF_SAVED_BYTES = bytes.fromhex(
    "0000490a470a110a03612f62120412020802180122020a000a2e0a147667676973682f63"
    "6f6e76312f77656967687473120c120208011202080212020803180122060a000a000a00"
    "12020801000a1700612f6200010101807f12150a03612f6212020a001a0a2a080000c03f"
    "00002040011e3c7667676973682f636f6e76312f7765696768747300010103807f807f80"
    "7f123a0a147667676973682f636f6e76312f7765696768747312060a000a000a001a1a2a"
    "18000000000000803f0000004000004040000080400000a04000000000010000000009b8"
    "460e000000000100000000c0f2a1b00001030100d501000000000100000000b60f7b36da"
    "0108e7010f00000000000000000000000000000000000000000000000000000000000000"
    "00000057fb808b247547db"
)

TFENV = Path.home() / "tfenv" / "bin" / "python"


def _tf_ready() -> bool:
    log = Path("/tmp/tfenv.log")
    if not TFENV.exists():
        return False
    return not log.exists() or log.read_text().rstrip().endswith("done")


def needs_tf(test):
    """TensorFlow in a subprocess (~30 s): a slow test, skipped without ~/tfenv."""
    skip = pytest.mark.skipif(not _tf_ready(), reason="no TensorFlow venv at ~/tfenv")
    return pytest.mark.slow(skip(test))


# --------------------------------------------------------------------------------------------
# The checkpoint format


def test_writer_writes_the_bytes_tf_writes(tmp_path):
    path = tmp_path / "two.ckpt"
    tfw.write_v1_checkpoint(path, TF_SAVED)
    assert path.read_bytes() == TF_SAVED_BYTES


def test_reader_reads_what_tf_wrote(tmp_path):
    path = tmp_path / "tf.ckpt"
    path.write_bytes(TF_SAVED_BYTES)
    ckpt = tfc.TFCheckpoint.open(path)
    assert ckpt.shapes == {"a/b": (2,), "vggish/conv1/weights": (1, 2, 3)}
    for name, value in TF_SAVED.items():
        np.testing.assert_array_equal(ckpt.get(name), value)


def test_round_trip_of_dtypes_and_shapes(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "f32": rng.standard_normal((3, 4, 5)).astype(np.float32),
        "f64": rng.standard_normal(7),
        "i32": rng.integers(-(2**31), 2**31 - 1, (4, 2), dtype=np.int32),
        "i64": np.array([-(2**63), -1, 0, 2**63 - 1], np.int64),
        "u8": rng.integers(0, 256, 9, dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "scalar": np.float32(3.25),
        "empty": np.zeros((0, 3), np.float32),
        "global_step": np.int64(1234),
    }
    path = tmp_path / "many.ckpt"
    tfw.write_v1_checkpoint(path, tensors)
    back = tfc.read_checkpoint(path)
    assert set(back) == set(tensors)
    for name, value in tensors.items():
        value = np.asarray(value)
        assert back[name].dtype == value.dtype, name
        assert back[name].shape == value.shape, name
        np.testing.assert_array_equal(back[name], value)


def test_v2_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {
        "vggish/conv1/weights": rng.standard_normal((3, 3, 1, 64)).astype(np.float32),
        "global_step": np.int64(9),
        "d": rng.standard_normal((2, 5)),
        "empty": np.zeros((0,), np.float32),
    }
    tfw.write_v2_checkpoint(tmp_path / "model", tensors)
    assert {p.name for p in tmp_path.iterdir()} == {"model.index", "model.data-00000-of-00001"}
    for given in ("model", "model.index", "model.data-00000-of-00001"):
        back = tfc.read_checkpoint(tmp_path / given)
        assert set(back) == set(tensors)
        for name, value in tensors.items():
            assert (
                back[name].shape == np.shape(value) and back[name].dtype == np.asarray(value).dtype
            )
            np.testing.assert_array_equal(back[name], value)


def test_v2_checksum_and_missing_data_are_refused(tmp_path):
    tfw.write_v2_checkpoint(tmp_path / "m", {"w": np.arange(50, dtype=np.float32)})
    data = tmp_path / "m.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[10] ^= 1
    data.write_bytes(bytes(raw))
    ckpt = tfc.TFCheckpoint.open(tmp_path / "m")
    with pytest.raises(tfc.CheckpointFormatError, match="'w': checksum"):
        ckpt.get("w")
    data.unlink()
    with pytest.raises(tfc.CheckpointFormatError, match=r"data file .* missing"):
        tfc.TFCheckpoint.open(tmp_path / "m").get("w")


def test_many_entries_and_blocks(tmp_path):
    # > 16 entries (restart points), values over the 256 KiB block size (several data blocks),
    # names sharing long prefixes (prefix compression).
    tensors = {f"scope/layer_{i:03d}/weights": np.full(i * 2000, i, np.float32) for i in range(40)}
    path = tmp_path / "blocks.ckpt"
    tfw.write_v1_checkpoint(path, tensors)
    back = tfc.read_checkpoint(path)
    assert list(back) == sorted(tensors)
    for name, value in tensors.items():
        np.testing.assert_array_equal(back[name], value)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "80"),
        (-1, "7f"),
        (63, "bf"),
        (-64, "40"),
        (64, "c040"),
        (-65, "3fbf"),
        (4096, "d000"),
        (12288, "e03000"),
        (2**63 - 1, "ffc07fffffffffffffff"),
        (-(2**63), "003f8000000000000000"),
    ],
)
def test_ordered_code_signed_numbers(value, encoded):
    assert tfw._ordered_signed(value).hex() == encoded


def test_ordered_code_signed_numbers_sort_as_numbers():
    values = [-(2**63), -(2**40), -65, -64, -1, 0, 1, 63, 64, 8191, 8192, 2**40, 2**63 - 1]
    codes = [tfw._ordered_signed(v) for v in values]
    assert codes == sorted(codes)


def test_ordered_code_strings_escape_zero_and_ff():
    assert tfw._ordered_string(b"a\x00b\xffc") == b"a\x00\xffb\xff\x00c\x00\x01"


def _corrupt(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x55
    path.write_bytes(bytes(data))


def test_a_flipped_byte_is_a_checksum_error(tmp_path):
    path = tmp_path / "c.ckpt"
    tfw.write_v1_checkpoint(path, {"w": np.arange(1000, dtype=np.float32)})
    _corrupt(path, 2000)
    with pytest.raises(tfc.CheckpointFormatError, match="checksum"):
        tfc.TFCheckpoint.open(path)


@pytest.mark.parametrize("keep", [0, 10, 47, -1])
def test_truncated_or_foreign_files_are_refused(tmp_path, keep):
    path = tmp_path / "t.ckpt"
    tfw.write_v1_checkpoint(path, {"w": np.arange(100, dtype=np.float32)})
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else b"not a checkpoint at all, " * 10)
    with pytest.raises(tfc.CheckpointFormatError):
        tfc.TFCheckpoint.open(path)


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(tfc.CheckpointFormatError, match="no such checkpoint"):
        tfc.TFCheckpoint.open(tmp_path / "absent.ckpt")


# --------------------------------------------------------------------------------------------
# The network


def ref_vggish(tensors: dict[str, np.ndarray], examples: np.ndarray) -> np.ndarray:
    """vggish_slim.define_vggish_slim in NumPy, NHWC as TF computes it: the convolutions in
    float64, the fully connected layers with float32 matrices (in float64 they take 540 MB)."""
    x = examples.astype(np.float64)[..., None]  # (B, 96, 64, 1)

    def conv(x, scope):
        w = tensors[f"vggish/{scope}/weights"].astype(np.float64)  # (3, 3, I, O)
        b = tensors[f"vggish/{scope}/biases"].astype(np.float64)
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # SAME for 3x3, stride 1
        n, h, wd, c = x.shape
        shifted = [padded[:, dy : dy + h, dx : dx + wd, :] for dy in range(3) for dx in range(3)]
        patches = np.concatenate(shifted, axis=-1).reshape(n * h * wd, 9 * c)  # (dy, dx, I)
        out = (patches @ w.reshape(9 * c, -1)).reshape(n, h, wd, -1)
        return np.maximum(out + b, 0.0)

    def pool(x):
        b, h, w, c = x.shape
        return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

    x = pool(conv(x, "conv1"))
    x = pool(conv(x, "conv2"))
    x = pool(conv(conv(x, "conv3/conv3_1"), "conv3/conv3_2"))
    x = pool(conv(conv(x, "conv4/conv4_1"), "conv4/conv4_2"))
    x = x.reshape(len(x), -1)  # slim.flatten of NHWC
    for scope in ("fc1/fc1_1", "fc1/fc1_2", "fc2"):  # float32 matrices: 400 MB in float64
        x = (x.astype(np.float32) @ tensors[f"vggish/{scope}/weights"]).astype(np.float64)
        x = x + tensors[f"vggish/{scope}/biases"]
        if scope != "fc2":  # fc2: no ReLU
            x = np.maximum(x, 0.0)
    return x


def _examples(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)  # log-mel-like values: log(0.01) .. ~3
    return rng.uniform(-4.6, 3.0, (count, 96, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def model(vggish_ckpt):  # noqa: F811
    return load_vggish(vggish_ckpt)


def test_checkpoint_holds_vggish_in_tf_layout(vggish_ckpt):  # noqa: F811
    ckpt = tfc.TFCheckpoint.open(vggish_ckpt)
    assert ckpt.shapes == VGGISH_SHAPES
    assert ckpt.shapes["vggish/fc1/fc1_1/weights"] == (12288, 4096)
    assert sum(int(np.prod(s)) for s in ckpt.shapes.values()) == 72_141_184
    assert os.path.getsize(vggish_ckpt) > 288_000_000  # float32, uncompressed, one file


def test_network_matches_a_numpy_vggish_slim(vggish_ckpt, model):  # noqa: F811
    tensors = tfc.read_checkpoint(vggish_ckpt)
    examples = _examples(2)
    with torch.inference_mode():
        ours = model(torch.from_numpy(examples)).numpy()
    ref = ref_vggish(tensors, examples)
    assert ours.shape == (2, 128)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert (ref < 0).any()  # fc2 without ReLU: negative embeddings come out
    np.testing.assert_array_equal(ours < 0, ref < 0)


def test_network_is_batch_independent(model):
    examples = torch.from_numpy(_examples(2, seed=1))
    with torch.inference_mode():
        whole = model(examples)
        one = model(examples[1:2])
    torch.testing.assert_close(whole[1:2], one, rtol=1e-5, atol=1e-5)


def _partial_checkpoint(path: Path, **changes) -> Path:
    """A small checkpoint with VGGish's names and shapes up to the first changed tensor."""
    tensors = {}
    for name, shape in VGGISH_SHAPES.items():
        if name in changes:
            if changes[name] is not None:
                tensors[name] = changes[name]
            break
        tensors[name] = np.zeros(shape, np.float32)
    tfw.write_v1_checkpoint(path, tensors)
    return path


def test_a_missing_tensor_is_named(tmp_path):
    path = _partial_checkpoint(tmp_path / "m.ckpt", **{"vggish/conv3/conv3_1/weights": None})
    with pytest.raises(VGGishWeightsError, match=r"m\.ckpt.*vggish/conv3/conv3_1/weights missing"):
        load_vggish(path)


def test_a_wrong_shape_is_named(tmp_path):
    wrong = np.zeros((3, 3, 64, 64), np.float32)
    path = _partial_checkpoint(tmp_path / "s.ckpt", **{"vggish/conv2/weights": wrong})
    with pytest.raises(
        VGGishWeightsError, match=r"s\.ckpt.*vggish/conv2/weights.*\[3, 3, 64, 64\]"
    ):
        load_vggish(path)


def test_a_wrong_dtype_is_named(tmp_path):
    path = _partial_checkpoint(
        tmp_path / "d.ckpt", **{"vggish/conv1/weights": np.zeros((3, 3, 1, 64), np.float64)}
    )
    with pytest.raises(VGGishWeightsError, match="vggish/conv1/weights is float64"):
        load_vggish(path)


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, b"PK\x03\x04 a zip file, say"])
def test_not_a_checkpoint_is_a_usage_error_naming_the_file(tmp_path, content):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=r"bad\.ckpt"):
        load_vggish(path)


def test_a_missing_checkpoint_is_a_usage_error(tmp_path):
    with pytest.raises(VGGishWeightsError, match="absent"):
        load_vggish(tmp_path / "absent.ckpt")


# --------------------------------------------------------------------------------------------
# TensorFlow itself (skipped without ~/tfenv)

_TF_SCRIPT = r"""
import hashlib, json, sys
import numpy as np
import tensorflow as tf

ckpt, inputs, out = sys.argv[1], sys.argv[2], sys.argv[3]
result = {"version": tf.__version__}
reader = tf.compat.v1.train.NewCheckpointReader(ckpt)
shapes = reader.get_variable_to_shape_map()
result["shapes"] = {k: list(v) for k, v in shapes.items()}
t = {k: reader.get_tensor(k) for k in shapes}
result["sha256"] = {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
                    for k, v in t.items()}

x = tf.constant(np.load(inputs)["examples"])[..., None]
def conv(x, s):
    y = tf.nn.conv2d(x, t[f"vggish/{s}/weights"], strides=1, padding="SAME")
    return tf.nn.relu(y + t[f"vggish/{s}/biases"])
def pool(x):
    return tf.nn.max_pool2d(x, ksize=2, strides=2, padding="SAME")
x = pool(conv(x, "conv1")); x = pool(conv(x, "conv2"))
x = pool(conv(conv(x, "conv3/conv3_1"), "conv3/conv3_2"))
x = pool(conv(conv(x, "conv4/conv4_1"), "conv4/conv4_2"))
x = tf.reshape(x, [x.shape[0], -1])
for s in ("fc1/fc1_1", "fc1/fc1_2"):
    x = tf.nn.relu(tf.matmul(x, t[f"vggish/{s}/weights"]) + t[f"vggish/{s}/biases"])
emb = tf.matmul(x, t["vggish/fc2/weights"]) + t["vggish/fc2/biases"]

rng = np.random.default_rng(5)
small = {"a/b": np.array([1.5, 2.5], np.float32),
         "vggish/conv1/weights": np.arange(6, dtype=np.float32).reshape(1, 2, 3),
         "d": rng.standard_normal((2, 3)), "i": np.arange(-3, 3, dtype=np.int32),
         "global_step": np.int64(77)}
names = sorted(small)
tf.raw_ops.Save(filename=out + "/tf_v1.ckpt", tensor_names=names, data=[small[n] for n in names])
tf.raw_ops.Save(filename=out + "/tf_two.ckpt", tensor_names=["a/b", "vggish/conv1/weights"],
                data=[small["a/b"], small["vggish/conv1/weights"]])
big = rng.standard_normal((6000, 130)).astype(np.float32)
tf.raw_ops.SaveSlices(filename=out + "/tf_slices.ckpt", tensor_names=["p", "p", "p"],
                      shapes_and_slices=["6000 130 0,2500:-", "6000 130 2500,3000:-",
                                         "6000 130 5500,500:-"],
                      data=[big[:2500], big[2500:5500], big[5500:]])
tf.raw_ops.SaveV2(prefix=out + "/tf_v2", tensor_names=names, shape_and_slices=[""] * len(names),
                  tensors=[small[n] for n in names])
np.savez(out + "/tf_out.npz", embeddings=emb.numpy(), big=big,
         **{"small_" + k.replace("/", "_"): v for k, v in small.items()})
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def tf_run(vggish_ckpt, tmp_path_factory):  # noqa: F811
    if not _tf_ready():
        pytest.skip("no TensorFlow venv at ~/tfenv")
    out = tmp_path_factory.mktemp("tf")
    examples = _examples(3, seed=7)
    np.savez(out / "inputs.npz", examples=examples)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [str(TFENV), "-c", _TF_SCRIPT, str(vggish_ckpt), str(out / "inputs.npz"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result, out, examples


@needs_tf
def test_tf_reads_our_vggish_checkpoint(tf_run, vggish_ckpt):  # noqa: F811
    result, _, _ = tf_run
    assert {k: tuple(v) for k, v in result["shapes"].items()} == VGGISH_SHAPES
    ours = tfc.read_checkpoint(vggish_ckpt)
    for name, value in ours.items():
        assert hashlib.sha256(value.tobytes()).hexdigest() == result["sha256"][name], name


@needs_tf
def test_tf_computes_our_embeddings(tf_run, model):
    _, out, examples = tf_run
    with torch.inference_mode():
        ours = model(torch.from_numpy(examples)).numpy()
    theirs = np.load(out / "tf_out.npz")["embeddings"]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


@needs_tf
def test_tf_writes_what_we_write(tf_run, tmp_path):
    _, out, _ = tf_run
    assert (out / "tf_two.ckpt").read_bytes() == TF_SAVED_BYTES
    ours = tmp_path / "v1.ckpt"
    small = _tf_small(out)
    tfw.write_v1_checkpoint(ours, small)
    assert ours.read_bytes() == (out / "tf_v1.ckpt").read_bytes()
    tfw.write_v2_checkpoint(tmp_path / "v2", small)
    for suffix in (".index", ".data-00000-of-00001"):
        assert (tmp_path / f"v2{suffix}").read_bytes() == (out / f"tf_v2{suffix}").read_bytes()


def _tf_small(out: Path) -> dict[str, np.ndarray]:
    saved = np.load(out / "tf_out.npz")
    names = ["a/b", "vggish/conv1/weights", "d", "i", "global_step"]
    return {name: saved["small_" + name.replace("/", "_")] for name in names}


@needs_tf
@pytest.mark.parametrize("which", ["tf_v1.ckpt", "tf_v2", "tf_v2.index"])
def test_we_read_what_tf_writes(tf_run, which):
    _, out, _ = tf_run
    small = _tf_small(out)
    back = tfc.read_checkpoint(out / which)
    assert set(back) == set(small)
    for name, value in small.items():
        assert back[name].dtype == value.dtype
        np.testing.assert_array_equal(back[name], value)


@needs_tf
def test_we_read_a_partitioned_tensor_tf_saved_in_slices(tf_run):
    _, out, _ = tf_run
    ckpt = tfc.TFCheckpoint.open(out / "tf_slices.ckpt")
    assert ckpt.shapes == {"p": (6000, 130)}
    np.testing.assert_array_equal(ckpt.get("p"), np.load(out / "tf_out.npz")["big"])
    # and TF's keys of those slices are our OrderedCode encoding
    from nextvlad.extract._table import read_table

    keys = [k for k, _ in read_table((out / "tf_slices.ckpt").read_bytes())][1:]
    expected = [
        tfw._ordered_num(0)
        + tfw._ordered_string(b"p")
        + tfw._ordered_num(2)
        + tfw._ordered_signed(start)
        + tfw._ordered_signed(length)
        + tfw._ordered_signed(0)
        + tfw._ordered_signed(-1)
        for start, length in [(0, 2500), (2500, 3000), (5500, 500)]
    ]
    assert keys == sorted(expected)
