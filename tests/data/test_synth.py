"""The synthetic set: determinism, round trip through files, and the structure it promises."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nextvlad.data import (
    VIDEO_LEVEL,
    SynthConfig,
    VideoDataset,
    dequantize,
    quantize,
    read_videos,
    synthetic_videos,
    write_synthetic,
)
from nextvlad.data.synth import _world, frame_options
from nextvlad.errors import ConfigError


def test_quantisation_matches_youtube8m() -> None:
    q = np.arange(256, dtype=np.uint8)
    x = dequantize(q)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, q * 4.0 / 255 + 4.0 / 512 - 2.0, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(quantize(x), q)
    values = np.linspace(-2.5, 2.5, 1001, dtype=np.float32)
    back = dequantize(quantize(values))
    inside = np.abs(values) <= 1.99
    assert np.abs(back - values)[inside].max() <= 2.0 / 255 + 1e-6


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = write_synthetic(tmp_path / "a", videos=6, shards=2, seed=4)
    b = write_synthetic(tmp_path / "b", videos=6, shards=2, seed=4)
    c = write_synthetic(tmp_path / "c", videos=6, shards=2, seed=5)
    assert [p.name for p in a] == ["synth-00000-of-00002.tfrecord", "synth-00001-of-00002.tfrecord"]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True))
    assert a[0].read_bytes() != c[0].read_bytes()
    meta = json.loads((tmp_path / "a" / "synth.json").read_text())
    assert meta["videos"] == 6 and meta["level"] == "frame" and meta["config"]["num_classes"] == 25


def test_round_trip_reads_back_identically(frame_files: list[str]) -> None:
    expected = list(synthetic_videos(48, seed=3))
    got = list(read_videos(frame_files, max_frames=300, num_classes=25))
    assert [v.id for v in got] == [v.id for v in expected]
    for e, g in zip(expected, got, strict=True):
        assert g.labels.tolist() == e.labels.tolist()
        assert g.num_frames == e.num_frames
        for name in ("rgb", "audio"):
            np.testing.assert_array_equal(g.features[name], e.features[name])


def test_shape_of_the_set() -> None:
    videos = list(synthetic_videos(100, num_classes=25, seed=0))
    lengths = [v.num_frames or 0 for v in videos]
    assert min(lengths) >= 60 and max(lengths) <= 300
    assert 140 < np.mean(lengths) < 220
    counts = [len(v.labels) for v in videos]
    assert min(counts) >= 1 and max(counts) <= 4
    assert all(len(set(v.labels.tolist())) == len(v.labels) for v in videos)
    labels = np.concatenate([v.labels for v in videos])
    assert labels.min() >= 0 and labels.max() < 25
    assert videos[0].features["rgb"].dtype == np.uint8
    assert len({v.id for v in videos}) == 100
    small = list(synthetic_videos(20, num_classes=3, seed=0))
    assert max(int(v.labels.max()) for v in small) < 3


def test_video_level_is_the_mean_of_the_frames(video_files: list[str]) -> None:
    frames = list(synthetic_videos(5, seed=3))
    means = list(read_videos(video_files, VIDEO_LEVEL))[:5]
    for f, m in zip(frames, means, strict=True):
        assert f.id == m.id and f.labels.tolist() == m.labels.tolist()
        np.testing.assert_allclose(
            m.features["mean_rgb"], dequantize(f.features["rgb"]).mean(0), rtol=1e-6, atol=1e-6
        )
    dataset = VideoDataset(video_files, VIDEO_LEVEL, num_classes=25)
    assert len(list(dataset)) == 40


def test_concepts_are_visible_in_frames_and_hidden_in_the_mean() -> None:
    """Frame by frame the nearest prototype finds the labels (AUC ~1); the mean of the frames,
    scored against the very same prototypes, is close to chance (AUC ~0.6)."""
    config = SynthConfig()
    protos = _world(config)[0]
    unit = protos / np.linalg.norm(protos, axis=1, keepdims=True)
    frame_scores, mean_scores, truth = [], [], []
    for video in synthetic_videos(80, seed=11):
        x = dequantize(video.features["rgb"])
        cosine = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ unit.T
        frame_scores.append(cosine.reshape(len(x), 25, 3).max(axis=(0, 2)))
        mean_scores.append((unit @ x.mean(0)).reshape(25, 3).max(axis=1))
        truth.append(np.isin(np.arange(25), video.labels))

    def auc(scores: list[np.ndarray]) -> float:
        s, y = np.concatenate(scores), np.concatenate(truth)
        return float((s[y][:, None] > s[~y][None, :]).mean())

    assert auc(frame_scores) > 0.99
    assert auc(mean_scores) < 0.75


def test_config_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        SynthConfig(num_classes=0)
    with pytest.raises(ConfigError):
        SynthConfig(min_frames=10, max_frames=5)
    with pytest.raises(ConfigError):
        write_synthetic(tmp_path, videos=1, shards=0)
    paths = write_synthetic(tmp_path, videos=2, shards=3, prefix="val")
    assert [len(list(read_videos([str(p)]))) for p in paths] == [1, 0, 1]


def test_frame_count_distributions(tmp_path: Path) -> None:
    """``N``, ``LOW-HIGH`` and ``yt8m`` (min(U(120, 500), 300)); ``60-300`` is the default set
    byte for byte, and the cut at 300 changes no video that was shorter."""
    assert frame_options("300") == {"min_frames": 300, "max_frames": 300}
    assert frame_options("60-300") == {"min_frames": 60, "max_frames": 300}
    yt8m = frame_options("yt8m")
    assert yt8m == {"min_frames": 120, "max_frames": 500, "truncate_frames": 300}
    for bad in ("0", "5-2", "x", "10-", "-10", "yt8"):
        with pytest.raises(ConfigError):
            frame_options(bad)
    with pytest.raises(ConfigError, match="truncate_frames"):
        SynthConfig(truncate_frames=0)

    fixed = synthetic_videos(5, config=SynthConfig(**frame_options("300")))
    assert {v.num_frames for v in fixed} == {300}
    cut = list(synthetic_videos(200, seed=2, config=SynthConfig(**yt8m)))
    uncut = list(synthetic_videos(200, seed=2, config=SynthConfig(min_frames=120, max_frames=500)))
    lengths = np.array([v.num_frames for v in cut])
    assert lengths.min() >= 120 and lengths.max() == 300
    assert 0.45 < (lengths == 300).mean() < 0.61  # 201 of the 381 lengths are 300 or more
    assert 245 < lengths.mean() < 270  # 257.2 expected
    for c, u in zip(cut, uncut, strict=True):
        assert c.num_frames == min(u.num_frames or 0, 300)
        if c.num_frames < 300:
            assert c.labels.tolist() == u.labels.tolist()
            np.testing.assert_array_equal(c.features["rgb"], u.features["rgb"])

    ranged = SynthConfig(**frame_options("60-300"))
    write_synthetic(tmp_path / "default", videos=6, shards=2, seed=4)
    write_synthetic(tmp_path / "ranged", videos=6, shards=2, seed=4, config=ranged)
    written = sorted(p.name for p in (tmp_path / "default").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "ranged").iterdir())
    for name in written:  # the shards and synth.json
        assert (tmp_path / "default" / name).read_bytes() == (
            tmp_path / "ranged" / name
        ).read_bytes()
    meta = json.loads((tmp_path / "default" / "synth.json").read_text())
    assert "truncate_frames" not in meta["config"]
    write_synthetic(tmp_path / "yt8m", videos=2, shards=1, config=SynthConfig(**yt8m))
    meta = json.loads((tmp_path / "yt8m" / "synth.json").read_text())
    assert meta["config"]["truncate_frames"] == 300


def test_segment_rated_set(tmp_path: Path) -> None:
    """Deterministic for a seed; the same frames and labels as the plain set; ratings on the
    5-frame grid, positives where the segment shows its class's concept."""
    a = write_synthetic(tmp_path / "a", videos=8, shards=2, seed=4, segment_ratings=5)
    b = write_synthetic(tmp_path / "b", videos=8, shards=2, seed=4, segment_ratings=5)
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True))
    plain = write_synthetic(tmp_path / "p", videos=8, shards=2, seed=4)
    assert a[0].read_bytes() != plain[0].read_bytes()
    meta = json.loads((tmp_path / "a" / "synth.json").read_text())
    assert meta["segment_ratings"] == 5
    assert "segment_ratings" not in json.loads((tmp_path / "p" / "synth.json").read_text())
    rated = list(read_videos([str(p) for p in a]))
    unrated = list(read_videos([str(p) for p in plain]))
    config = SynthConfig()
    protos = _world(config)[0]
    unit = protos / np.linalg.norm(protos, axis=1, keepdims=True)
    positives = negatives = 0
    for r, u in zip(rated, unrated, strict=True):
        assert r.id == u.id and r.labels.tolist() == u.labels.tolist() and u.segments is None
        np.testing.assert_array_equal(r.features["rgb"], u.features["rgb"])
        seg = r.segments
        assert seg is not None and 1 <= seg.labels.size <= 5
        x = dequantize(r.features["rgb"])
        cosine = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ unit.T  # (T, C*P)
        per_class = cosine.reshape(len(x), 25, 3).max(axis=2)  # (T, C)
        for start, label, score in zip(seg.start_times, seg.labels, seg.scores, strict=True):
            near = per_class[start : start + 5, label] > 0.5  # frames showing the concept
            if score == 1.0:
                assert near.sum() >= 3
                positives += 1
            else:
                assert near.sum() == 0
                negatives += 1
    assert positives > 0 and negatives > 0
    with pytest.raises(ConfigError, match="frame-level"):
        write_synthetic(tmp_path / "v", videos=1, frame_level=False, segment_ratings=5)


def test_no_video_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A set of no video is no data set: `synth --videos 0` is a usage error (exit 2), and
    nothing is written."""
    from nextvlad.cli import main

    with pytest.raises(ConfigError, match="videos must be at least 1, got 0"):
        write_synthetic(tmp_path / "lib", videos=0)
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--out", str(tmp_path / "cli"), "--videos", "0"])
    assert exit_info.value.code == 2
    assert "nextvlad synth: error: --videos must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists() and not (tmp_path / "lib").exists()
