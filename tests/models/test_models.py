"""Frame, mixture and video models: masking, the mixture gate, single-branch extraction."""

from __future__ import annotations

import pytest
import torch

from nextvlad.models import MixtureModel, create_model

SMALL = {"num_clusters": 8, "hidden_size": 32, "num_classes": 6}


@pytest.mark.parametrize("name", ["nextvlad-8g-128k-2048h", "mix3-nextvlad-8g-112k-2048h"])
@pytest.mark.parametrize("training", [False, True])
def test_padding_changes_nothing_in_the_default_mode(name: str, training: bool) -> None:
    torch.manual_seed(0)
    model = create_model(name, dropout=0.0, **SMALL).train(training)
    x = torch.randn(3, 5, 1152)
    num_frames = torch.tensor([5, 3, 2])
    padded = torch.cat([x, 9.0 * torch.randn(3, 4, 1152)], dim=1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    a = model(x, num_frames)
    model.load_state_dict(state)
    b = model(padded, num_frames)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-4, atol=1e-5)
    model.load_state_dict(state)
    perm = torch.randperm(5)
    full = torch.tensor([5, 5, 5])
    c, d = model(x, full), None
    model.load_state_dict(state)
    d = model(x[:, perm], full)
    torch.testing.assert_close(c.logits, d.logits, rtol=1e-4, atol=1e-5)


def test_mixture_logits_are_the_gate_weighted_branch_logits() -> None:
    torch.manual_seed(0)
    model = create_model("mix3-nextvlad-8g-112k-2048h", **SMALL).eval()
    assert isinstance(model, MixtureModel)
    x, n = torch.randn(4, 6, 1152), torch.tensor([6, 2, 4, 1])
    out = model(x, n)
    assert out.branch_logits is not None and out.mix_weights is not None
    expected = (out.mix_weights.unsqueeze(-1) * out.branch_logits).sum(1)  # Eq. (12)
    torch.testing.assert_close(out.logits, expected)
    for m in range(3):
        single = model.extract_branch(m).eval()
        torch.testing.assert_close(single(x, n).logits, out.branch_logits[:, m])
    with pytest.raises(IndexError):
        model.extract_branch(3)


def test_reference_compat_gate_averages_over_padding() -> None:
    torch.manual_seed(0)
    clean = create_model("mix3-nextvlad-8g-112k-2048h", **SMALL).eval()
    compat = create_model("mix3-nextvlad-8g-112k-2048h", reference_compat=True, **SMALL).eval()
    compat.load_state_dict(clean.state_dict())
    x, n = torch.randn(2, 6, 1152), torch.tensor([6, 2])
    a, b = clean(x, n), compat(x, n)
    assert a.mix_weights is not None and b.mix_weights is not None
    torch.testing.assert_close(a.mix_weights[0], b.mix_weights[0])  # no padding: same
    assert not torch.allclose(a.mix_weights[1], b.mix_weights[1])


def test_wrong_input_shapes_raise_clear_errors() -> None:
    model = create_model("nextvlad-8g-128k-2048h", **SMALL).eval()
    with pytest.raises(ValueError, match=r"\(batch, frames, 1152\)"):
        model(torch.randn(2, 5, 1024), torch.tensor([5, 5]))
    with pytest.raises(ValueError, match="num_frames"):
        model(torch.randn(2, 5, 1152), torch.tensor([5]))
    video = create_model("video-logistic", num_classes=5).eval()
    with pytest.raises(ValueError, match="video features"):
        video(torch.randn(2, 100))


def test_video_model_takes_video_or_frame_features() -> None:
    torch.manual_seed(0)
    model = create_model("video-moe", num_classes=5).eval()
    frames = torch.randn(2, 4, 1152)
    n = torch.tensor([4, 2])
    from_frames = model(frames, n).logits
    means = torch.stack([frames[0].mean(0), frames[1, :2].mean(0)])
    torch.testing.assert_close(from_frames, model(means).logits)


def test_one_stream_custom_features() -> None:
    from nextvlad.models import FrameModelConfig, StreamConfig, build_model

    config = FrameModelConfig(
        streams=(StreamConfig("clip", 512, num_clusters=16, groups=4),),
        hidden_size=64,
        num_classes=10,
    )
    model = build_model(config).eval()
    assert model(torch.randn(2, 7, 512), torch.tensor([7, 3])).logits.shape == (2, 10)
