"""Every preset: forward, backward, gradients everywhere, no NaN; registry behaviour; counts."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nextvlad.errors import ConfigError
from nextvlad.losses import yt8m_loss
from nextvlad.models import (
    MixtureModel,
    VideoModel,
    config_from_dict,
    config_to_dict,
    count_config_parameters,
    create_model,
    get_config,
    list_models,
    parameter_report,
    preset_options,
    register_model,
)

PRESETS = list_models()


def small_overrides(name: str) -> dict[str, Any]:
    """Tiny sizes for a preset, keeping its structure (groups, streams, gating kind)."""
    options = preset_options(name)
    small = {"num_clusters": 8, "hidden_size": 32, "num_classes": 7}
    return {k: v for k, v in small.items() if k in options}


def test_the_issue_presets_are_registered() -> None:
    assert set(PRESETS) >= {
        "nextvlad-8g-128k-2048h",
        "nextvlad-16g-128k-2048h",
        "nextvlad-32g-128k-2048h",
        "nextvlad-8g-112k-2048h",
        "mix3-nextvlad-8g-112k-2048h",
        "netvlad-128k-2048h",
        "netvlad-random-256k-1024h",
        "netvlad-small-128k-2048h",
        "meanpool-2048h",
        "video-logistic",
        "video-moe",
    }


@pytest.mark.parametrize("name", PRESETS)
def test_forward_backward_every_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, **small_overrides(name)).train()
    config = get_config(name, **small_overrides(name))
    b, t = 4, 10
    num_frames = torch.tensor([10, 7, 1, 0])
    if isinstance(model, VideoModel):
        features = torch.randn(b, config.feature_dim)
        num_frames = None
    else:
        features = torch.randn(b, t, config.feature_dim)
    labels = (torch.rand(b, config.num_classes) < 0.3).float()
    out = model(features, num_frames)
    assert out.logits.shape == (b, config.num_classes)
    assert torch.isfinite(out.logits).all()
    if isinstance(model, MixtureModel):
        assert out.branch_logits is not None and out.mix_weights is not None
        assert out.branch_logits.shape == (b, 3, config.num_classes)
        torch.testing.assert_close(out.mix_weights.sum(-1), torch.ones(b))
    terms = yt8m_loss(
        out.logits,
        labels,
        branch_logits=out.branch_logits,
        l2_tensors=model.regularized_parameters(),  # type: ignore[operator]
    )
    terms["total"].backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: {pname} has an all-zero gradient"
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(features, num_frames).logits).all()


@pytest.mark.parametrize("name", PRESETS)
def test_config_round_trips_through_json_dict(name: str) -> None:
    config = get_config(name)
    assert config_from_dict(config_to_dict(config)) == config


def test_exact_parameter_counts_of_the_reference() -> None:
    assert count_config_parameters(get_config("nextvlad-8g-128k-2048h")) == 88_889_378
    assert count_config_parameters(get_config("nextvlad-8g-112k-2048h")) == 78_643_170


@pytest.mark.parametrize("name", ["mix3-nextvlad-8g-112k-2048h", "netvlad-128k-2048h"])
def test_counts_within_one_percent_of_the_paper(name: str) -> None:
    report = parameter_report(name)
    assert report.paper_params is not None
    assert abs(report.trainable_params / report.paper_params - 1) < 0.01


def test_mixture_is_three_branches_plus_gate() -> None:
    branch = count_config_parameters(get_config("nextvlad-8g-112k-2048h"))
    mixture = count_config_parameters(get_config("mix3-nextvlad-8g-112k-2048h"))
    gate = 2 * 1152 + 1152 * 3 + 3  # batch norm (gamma, beta) and FC with bias
    assert mixture == 3 * branch + gate


def test_overrides() -> None:
    config = get_config("nextvlad-8g-128k-2048h", num_classes=40, hidden_size=None)
    assert config.num_classes == 40 and config.hidden_size == 2048  # None is ignored
    assert config.streams[1].num_clusters == 64 and config.streams[1].groups == 4
    with pytest.raises(ConfigError, match="does not take"):
        get_config("nextvlad-8g-128k-2048h", clusters=3)
    with pytest.raises(ConfigError, match="did you mean nextvlad-8g-128k-2048h"):
        get_config("nextvlad-8g-128k-2048")
    with pytest.raises(ConfigError, match="must divide"):
        get_config("nextvlad-8g-128k-2048h", groups=6)
    with pytest.raises(ConfigError, match="positive"):
        get_config("nextvlad-8g-128k-2048h", hidden_size=0)
    with pytest.raises(ConfigError, match="dropout"):
        get_config("meanpool-2048h", dropout=1.5)


def test_registering_a_name_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("video-moe", description="again")(lambda: None)
