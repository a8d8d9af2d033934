"""The paper's models as named presets (Table 1, Table 2) and the video-level baselines.

Each preset is a builder whose keyword arguments are the options a user may override
(``create_model("nextvlad-8g-128k-2048h", num_classes=40)``). The audio stream always gets
half the clusters and half the groups of the rgb stream, as in the reference code.
Run settings (learning rate, batch size, decay) are training options, not presets.
"""

from __future__ import annotations

from functools import partial

from nextvlad.models._registry import register_model
from nextvlad.models.config import (
    YT8M_NUM_CLASSES,
    FrameModelConfig,
    MixtureConfig,
    StreamConfig,
    VideoModelConfig,
    youtube8m_streams,
)


def nextvlad_config(
    *,
    groups: int = 8,
    num_clusters: int = 128,
    hidden_size: int = 2048,
    expansion: int = 2,
    gating_reduction: int = 8,
    dropout: float = 0.5,
    num_classes: int = YT8M_NUM_CLASSES,
    reference_compat: bool = False,
) -> FrameModelConfig:
    """NeXtVLAD model of Fig. 3: two NeXtVLAD streams, SE context gating, logistic."""
    return FrameModelConfig(
        streams=youtube8m_streams(num_clusters, groups, expansion),
        aggregator="nextvlad",
        hidden_size=hidden_size,
        dropout=dropout,
        gating="se",
        gating_reduction=gating_reduction,
        num_classes=num_classes,
        reference_compat=reference_compat,
    )


def mixture_config(
    *,
    num_branches: int = 3,
    temperature: float = 3.0,
    distill_weight: float = 9.0,
    groups: int = 8,
    num_clusters: int = 112,
    hidden_size: int = 2048,
    expansion: int = 2,
    gating_reduction: int = 16,
    dropout: float = 0.5,
    num_classes: int = YT8M_NUM_CLASSES,
    reference_compat: bool = False,
) -> MixtureConfig:
    """Mixture of NeXtVLAD branches with on-the-fly distillation (Fig. 5, Eq. (12)-(16))."""
    branch = nextvlad_config(
        groups=groups,
        num_clusters=num_clusters,
        hidden_size=hidden_size,
        expansion=expansion,
        gating_reduction=gating_reduction,
        dropout=dropout,
        num_classes=num_classes,
        reference_compat=reference_compat,
    )
    return MixtureConfig(
        branch=branch,
        num_branches=num_branches,
        temperature=temperature,
        distill_weight=distill_weight,
    )


def netvlad_config(
    *,
    num_clusters: int = 128,
    hidden_size: int = 2048,
    dropout: float = 0.5,
    gating: str = "context",
    reduce: int | None = None,
    sample_frames: int | None = None,
    num_classes: int = YT8M_NUM_CLASSES,
    reference_compat: bool = False,
) -> FrameModelConfig:
    """NetVLAD baseline (Willow, Miech et al.): two NetVLAD streams, context gating, logistic
    (the paper uses a logistic classifier for every row of Table 1)."""
    return FrameModelConfig(
        streams=youtube8m_streams(num_clusters, reduce=reduce),
        aggregator="netvlad",
        hidden_size=hidden_size,
        dropout=dropout,
        gating=gating,
        sample_frames=sample_frames,
        num_classes=num_classes,
        reference_compat=reference_compat,
    )


def meanpool_config(
    *,
    hidden_size: int = 2048,
    dropout: float = 0.5,
    gating_reduction: int = 8,
    num_classes: int = YT8M_NUM_CLASSES,
) -> FrameModelConfig:
    """Mean of the real frames per stream, then the NeXtVLAD model's head."""
    return FrameModelConfig(
        streams=(StreamConfig("rgb", 1024), StreamConfig("audio", 128)),
        aggregator="mean",
        hidden_size=hidden_size,
        dropout=dropout,
        gating="se",
        gating_reduction=gating_reduction,
        num_classes=num_classes,
    )


def video_config(
    *,
    classifier: str = "logistic",
    moe_mixtures: int = 2,
    input_norm: str = "l2",
    num_classes: int = YT8M_NUM_CLASSES,
) -> VideoModelConfig:
    """Starter-code video-level classifier over mean_rgb ++ mean_audio."""
    return VideoModelConfig(
        classifier=classifier,
        moe_mixtures=moe_mixtures,
        input_norm=input_norm,
        num_classes=num_classes,
    )


register_model(
    "nextvlad-8g-128k-2048h",
    description="NeXtVLAD, G 8, K 128, H 2048, λ 2, r 8, dropout 0.5 (Table 1's best row)",
    paper_params=89_000_000,
    paper_label="Table 1: NeXtVLAD (8G, 0.5drop, 128K, 2048H)",
)(partial(nextvlad_config, groups=8, num_clusters=128))
register_model(
    "nextvlad-16g-128k-2048h",
    description="NeXtVLAD, G 16, K 128, H 2048, λ 2, r 8, dropout 0.5",
    paper_params=58_000_000,
    paper_label="Table 1: NeXtVLAD (16G, 0.5drop, 128K, 2048H)",
)(partial(nextvlad_config, groups=16, num_clusters=128))
register_model(
    "nextvlad-32g-128k-2048h",
    description="NeXtVLAD, G 32, K 128, H 2048, λ 2, r 8, dropout 0.2",
    paper_params=55_000_000,
    paper_label="Table 1: NeXtVLAD (32G, 0.2drop, 128K, 2048H)",
)(partial(nextvlad_config, groups=32, num_clusters=128, dropout=0.2))
register_model(
    "nextvlad-8g-112k-2048h",
    description="NeXtVLAD, G 8, K 112, H 2048, λ 2, r 16, dropout 0.5 (one final branch)",
    paper_params=79_000_000,
    paper_label="Table 2: single NeXtVLAD",
)(partial(nextvlad_config, groups=8, num_clusters=112, gating_reduction=16))
register_model(
    "mix3-nextvlad-8g-112k-2048h",
    description="3 NeXtVLAD branches (G 8, K 112, H 2048, r 16), gate, distillation T 3, λ 9",
    paper_params=237_000_000,
    paper_label="Table 2: 3 NeXtVLAD (3T)",
)(mixture_config)
register_model(
    "netvlad-128k-2048h",
    description="NetVLAD, K 128, H 2048, context gating, dropout 0.5",
    paper_params=297_000_000,
    paper_label="Table 1: NetVLAD (-, 0.5drop, 128K, 2048H)",
)(partial(netvlad_config, num_clusters=128, hidden_size=2048))
register_model(
    "netvlad-random-256k-1024h",
    description="NetVLAD, K 256, H 1024, context gating, 300 random frames a video in training",
    paper_params=274_000_000,
    paper_label="Table 1: NetVLAD_random (-, 0.5drop, 256K, 1024H)",
)(partial(netvlad_config, num_clusters=256, hidden_size=1024, sample_frames=300))
register_model(
    "netvlad-small-128k-2048h",
    description="NetVLAD on frames linearly reduced to 1/4 (256 rgb, 32 audio), K 128, H 2048",
    paper_params=88_000_000,
    paper_label="Table 1: NetVLAD_small (-, 0.5drop, 128K, 2048H)",
)(partial(netvlad_config, num_clusters=128, hidden_size=2048, reduce=4))
register_model(
    "meanpool-2048h",
    description="Mean of the real frames (rgb, audio), FC 2048 + BN, SE gating, logistic",
)(meanpool_config)
register_model(
    "nextvlad-8g-16k-256h",
    description="small NeXtVLAD for CPU demos and tests: G 8, K 16, H 256, λ 1, r 8, dropout 0.5",
)(partial(nextvlad_config, groups=8, num_clusters=16, hidden_size=256, expansion=1))
register_model(
    "meanpool-256h",
    description="mean-pool baseline with the small NeXtVLAD's head (H 256), for demos and tests",
)(partial(meanpool_config, hidden_size=256))
register_model(
    "video-logistic",
    description="Logistic regression on L2-normalised mean_rgb ++ mean_audio (starter code)",
)(partial(video_config, classifier="logistic"))
register_model(
    "video-moe",
    description="Mixture of 2 logistic experts on L2-normalised video features (starter code)",
)(partial(video_config, classifier="moe"))
