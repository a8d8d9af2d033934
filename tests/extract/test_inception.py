"""Inception-v3 as Google's inception-2015-12-05: the legacy resize, loading every accepted
format (and refusing what is not this network), and parity with TensorFlow on the random graph."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nextvlad.errors import UsageError
from nextvlad.extract._inception_weights import conv_scopes
from nextvlad.extract.inception import InceptionWeightsError, legacy_resize_bilinear, load_inception
from tests.extract import factories, parity

# ---------------------------------------------------------------- resize


def tf1_resize_reference(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF1 ResizeBilinear, align_corners=False, half_pixel_centers=False: source coordinate =
    destination * in/out, computed as the kernel does in float32 (``CalculateResizeScale``,
    ``LegacyScaler``); lower = floor, upper = min(lower + 1, in - 1); the interpolation in
    float64."""
    in_h, in_w = image.shape[:2]
    img = image.astype(np.float64)

    def axis(in_size: int, out_size: int):
        scale = np.float32(in_size) / np.float32(out_size)
        src = (np.arange(out_size, dtype=np.float32) * scale).astype(np.float64)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, in_size - 1), src - lo

    y0, y1, dy = axis(in_h, out_h)
    x0, x1, dx = axis(in_w, out_w)
    out = np.empty((out_h, out_w, img.shape[2]))
    for y in range(out_h):
        top = img[y0[y], x0] + (img[y0[y], x1] - img[y0[y], x0]) * dx[:, None]
        bottom = img[y1[y], x0] + (img[y1[y], x1] - img[y1[y], x0]) * dx[:, None]
        out[y] = top + (bottom - top) * dy[y]
    return out


@pytest.mark.parametrize(
    ("size", "out"),
    [
        ((5, 7), (3, 4)),
        ((4, 4), (9, 11)),
        ((1, 1), (3, 2)),
        ((2, 3), (2, 3)),
        ((180, 320), (299, 299)),
        ((600, 800), (299, 299)),
        ((299, 299), (299, 299)),
    ],
)
def test_legacy_resize_matches_tf1_formula(size, out):
    rng = np.random.default_rng(sum(size) + sum(out))
    images = rng.integers(0, 256, (2, *size, 3), dtype=np.uint8)
    got = legacy_resize_bilinear(torch.from_numpy(images), *out)
    assert got.dtype == torch.float32
    assert got.shape == (2, *out, 3)
    for image, result in zip(images, got.numpy(), strict=True):
        np.testing.assert_allclose(result, tf1_resize_reference(image, *out), atol=1e-3, rtol=0)


def test_legacy_resize_is_not_torch_interpolate():
    image = np.random.default_rng(0).integers(0, 256, (1, 180, 320, 3), dtype=np.uint8)
    ours = legacy_resize_bilinear(torch.from_numpy(image), 299, 299)
    theirs = F.interpolate(
        torch.from_numpy(image).permute(0, 3, 1, 2).float(), size=(299, 299), mode="bilinear"
    ).permute(0, 2, 3, 1)
    assert (ours - theirs).abs().max() > 10  # half-pixel centres shift the whole image


# ---------------------------------------------------------------- loading


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "num_batches" not in k}


def test_pb_pth_and_tgz_give_the_same_network(inception_model, inception_pth, inception_tgz):
    from_pth = load_inception(inception_pth)
    from_tgz = load_inception(inception_tgz)
    ref = _state(inception_model)
    assert len(ref) == 94 * 5  # 94 convolutions: kernel + 4 batch-norm tensors each
    for other in (from_pth, from_tgz):
        got = _state(other)
        assert got.keys() == ref.keys()
        for key, value in ref.items():
            assert torch.equal(got[key], value), key
    frame = torch.from_numpy(factories.make_frames(1, 64, 80, seed=5))
    with torch.inference_mode():
        a, b = inception_model(frame), from_pth(frame)
    assert a.shape == (1, 2048)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not inception_model.training
    assert not any(p.requires_grad for p in inception_model.parameters())


def test_legacy_torch_serialization_is_read(tmp_path, inception_model):
    path = tmp_path / "legacy.pth"
    torch.save(factories.fid_state_dict(0), path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:1] == b"\x80"  # a pickle, not a zip
    got = _state(load_inception(path))
    for key, value in _state(inception_model).items():
        assert torch.equal(got[key], value), key


def test_graph_weights_land_where_they_belong(inception_model):
    params, flags, _ = factories.inception_params(0)
    state = inception_model.state_dict()
    scopes = conv_scopes()
    for scope in (
        "conv",
        "mixed_3/tower/conv_2",
        "mixed_9/tower_1/mixed/conv_1",
        "mixed_10/tower_2/conv",
    ):
        prefix = scopes[scope]
        kernel = params[scope]["conv2d_params"]  # HWIO
        np.testing.assert_array_equal(
            state[f"{prefix}.conv.weight"].numpy(), kernel.transpose(3, 2, 0, 1)
        )
        np.testing.assert_array_equal(
            state[f"{prefix}.bn.running_var"].numpy(), params[scope]["moving_variance"]
        )
    # scale_after_normalization=false: the graph's (random) gamma is not used
    unscaled = [s for s, used in flags.items() if not used]
    scaled = [s for s, used in flags.items() if used]
    assert unscaled and scaled
    for scope in unscaled[:3]:
        assert not np.allclose(params[scope]["gamma"], 1)
        assert torch.equal(
            state[f"{scopes[scope]}.bn.weight"],
            torch.ones_like(state[f"{scopes[scope]}.bn.weight"]),
        )
    for scope in scaled[:3]:
        np.testing.assert_array_equal(
            state[f"{scopes[scope]}.bn.weight"].numpy(), params[scope]["gamma"]
        )


def test_refuses_a_graph_with_a_missing_tensor(tmp_path):
    path = factories.write_inception_graphdef(
        tmp_path / "g.pb", drop={"mixed_3/tower/conv_1/batchnorm/gamma"}
    )
    with pytest.raises(
        InceptionWeightsError, match=r"missing tensor mixed_3/tower/conv_1/batchnorm/gamma"
    ) as err:
        load_inception(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, UsageError)


def test_refuses_a_graph_with_a_wrong_shape(tmp_path):
    bad = np.zeros((3, 3, 80, 100), np.float32)
    path = factories.write_inception_graphdef(
        tmp_path / "g.pb", replace={"conv_4/conv2d_params": bad}
    )
    with pytest.raises(
        InceptionWeightsError,
        match=r"conv_4/conv2d_params has shape \(3, 3, 80, 100\), expected \(3, 3, 80, 192\)",
    ):
        load_inception(path)


def test_refuses_the_graph_variant_with_an_average_pool_in_mixed_10(tmp_path):
    path = factories.write_inception_graphdef(tmp_path / "g.pb", mixed_10_pool="AvgPool")
    with pytest.raises(InceptionWeightsError, match=r"mixed_10/tower_2/pool is a AvgPool"):
        load_inception(path)


def test_refuses_another_network(tmp_path):
    other = factories.graphdef(
        [
            factories.node("input", "Placeholder", dtype=factories.a_type(factories.DT_FLOAT)),
            factories.const(
                "InceptionV3/Conv2d_1a_3x3/weights", np.zeros((3, 3, 3, 32), np.float32)
            ),
        ]
    )
    path = tmp_path / "other.pb"
    path.write_bytes(other)
    with pytest.raises(
        InceptionWeightsError,
        match=r"other\.pb: not Google's Inception-v3 .*no node conv/conv2d_params",
    ):
        load_inception(path)
    junk = tmp_path / "junk.pb"
    junk.write_bytes(b"\xff\xff\xff\xff not a protobuf")
    with pytest.raises(InceptionWeightsError, match=r"junk\.pb: not a TensorFlow GraphDef"):
        load_inception(junk)
    with pytest.raises(InceptionWeightsError, match=r"cannot read"):
        load_inception(tmp_path / "absent.pb")


def test_refuses_a_tgz_without_the_graph(tmp_path):
    path = tmp_path / "i.tgz"
    with tarfile.open(path, "w:gz") as tar:
        factories._add(tar, "inception-2015-12-05/other_graph.pb", b"\x0a\x00")
    with pytest.raises(InceptionWeightsError, match=r"i\.tgz: no classify_image_graph_def\.pb"):
        load_inception(path)


def test_refuses_a_state_dict_of_another_network_or_incomplete(tmp_path):
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, other)
    with pytest.raises(
        InceptionWeightsError,
        match=r"resnet\.pth: not an Inception-v3 .*no Conv2d_1a_3x3\.conv\.weight",
    ):
        load_inception(other)
    state = factories.fid_state_dict(0)
    del state["Mixed_6b.branch7x7dbl_3.bn.running_var"]
    incomplete = tmp_path / "incomplete.pth"
    torch.save(state, incomplete)
    with pytest.raises(
        InceptionWeightsError, match=r"missing key Mixed_6b\.branch7x7dbl_3\.bn\.running_var"
    ):
        load_inception(incomplete)
    state = factories.fid_state_dict(0)
    state["Mixed_7c.branch_pool.conv.weight"] = torch.zeros(192, 2048, 3, 3)
    wrong = tmp_path / "wrong.pth"
    torch.save(state, wrong)
    with pytest.raises(
        InceptionWeightsError,
        match=r"Mixed_7c\.branch_pool\.conv\.weight has shape \(192, 2048, 3, 3\)",
    ):
        load_inception(wrong)


def test_forward_takes_frames_of_any_size_in_batches(inception_model):
    with torch.inference_mode():
        out = inception_model(torch.from_numpy(factories.make_frames(2, 37, 51, seed=3)))
    assert out.shape == (2, 2048)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        inception_model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_cuda_convolutions_run_in_ieee_float32_not_tf32():
    from nextvlad.extract.inception import full_fp32_convolutions

    conv = torch.backends.cudnn.conv
    before = conv.fp32_precision
    with full_fp32_convolutions(torch.device("cuda")):
        assert conv.fp32_precision == "ieee"
    assert conv.fp32_precision == before
    with full_fp32_convolutions(torch.device("cpu")):
        assert conv.fp32_precision == before


# ---------------------------------------------------------------- parity with TensorFlow


def _assert_parity(report: dict) -> None:
    assert report["max_abs_byte_diff"] <= 1, report
    assert report["identical"] >= 0.995, report
    assert report["mean_rgb_max_diff"] <= 2e-3, report
    assert report["pool3_max_diff"] <= 1e-4, report
    assert report["unclipped_fraction"] > 0.8, report  # the bytes test something


def test_parity_with_tensorflow_fixture(inception_model):
    """Google's way (TF, one frame per session.run) on the same seed-0 graph, stored."""
    with np.load(parity.FIXTURE) as z:
        google = {k: z[k] for k in ("rgb", "features", "pool3", "mean_rgb")}
    mine = parity.ours(inception_model, parity.fixture_pca(), parity.parity_videos())
    _assert_parity(parity.agreement(mine, google))


@pytest.mark.slow
@pytest.mark.skipif(not parity.TF_PYTHON.exists(), reason="no TensorFlow venv at ~/tfenv")
def test_parity_with_tensorflow_live(inception_model, inception_pb, tmp_path):
    """The same comparison with TensorFlow run now (~/tfenv), on fresh frames and a PCA tgz."""
    videos = [
        factories.make_frames(2, 150, 200, seed=31),
        factories.make_frames(2, 400, 300, seed=32),
    ]
    mean, vals, vecs, _ = factories.calibrated_pca_arrays(parity.pool3(inception_model, videos))
    pca_dir = factories.write_pca(tmp_path / "pca", arrays=(mean, vals, vecs))
    from nextvlad.extract.pca import PCA

    google = parity.run_google(inception_pb, pca_dir, videos, tmp_path)
    _assert_parity(
        parity.agreement(parity.ours(inception_model, PCA.load(pca_dir), videos), google)
    )
