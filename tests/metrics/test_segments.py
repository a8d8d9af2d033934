"""SegmentMAP against a brute-force reading of Google's segment_eval_inference.py."""

from __future__ import annotations

import random

import pytest

from nextvlad.metrics import SegmentMAP, segment_id

# --- an independent reference, plain loops, from the definition ---------------------------


def brute_force_map(
    ratings: list[tuple[str, int, float]],
    submission: list[tuple[int, list[str]]],
    top_n: int | None,
) -> float:
    """Google's steps one by one: ratings (last one wins), cut, drop unrated, score (L-i)/L,
    sort by score, AP with the class's positive count as denominator, mean over the
    submission's classes (a class without positives: 0)."""
    truth: dict[tuple[str, int], float] = {}
    for seg, cls, score in ratings:
        truth[(seg, cls)] = score
    positives: dict[int, int] = {}
    for (_, cls), score in truth.items():
        if score > 0:
            positives[cls] = positives.get(cls, 0) + 1
    aps = []
    for cls, entries in submission:
        if top_n:
            entries = entries[:top_n]
        kept = [seg for seg in entries if (seg, cls) in truth]
        length = len(kept)
        scored = [((length - i) / length, truth[(seg, cls)]) for i, seg in enumerate(kept)]
        scored.sort(key=lambda pair: pair[0], reverse=True)
        denominator = positives.get(cls, 0)
        if denominator == 0 or not scored:
            aps.append(0.0)
            continue
        total, hits = 0.0, 0
        for rank, (_, label) in enumerate(scored, start=1):
            if label > 0:
                hits += 1
                total += hits / rank * (1.0 / denominator)
        aps.append(total)
    return sum(aps) / len(aps)


def _ours(ratings, submission, top_n) -> SegmentMAP:  # type: ignore[no-untyped-def]
    metric = SegmentMAP(top_n=top_n)
    for seg, cls, score in ratings:
        metric.add_rating(seg, cls, score)
    for cls, entries in submission:
        metric.update(cls, entries)
    return metric


def _random_case(rng: random.Random):  # type: ignore[no-untyped-def]
    videos = [f"v{i}" for i in range(rng.randint(1, 6))]
    segments = [segment_id(v, 5 * s) for v in videos for s in range(rng.randint(1, 4))]
    classes = list(range(rng.randint(1, 6)))
    ratings = []
    for seg in segments:
        for cls in rng.sample(classes, rng.randint(0, len(classes))):
            ratings.append((seg, cls, rng.choice([0.0, 1.0, 1.0, 0.5])))
    if ratings and rng.random() < 0.3:  # a pair rated twice: the last rating counts
        seg, cls, _ = rng.choice(ratings)
        ratings.append((seg, cls, rng.choice([0.0, 1.0])))
    pool = [*segments, "unrated:0", "v0:999"]
    chosen = rng.sample([*classes, max(classes) + 1], rng.randint(1, len(classes) + 1))
    submission = []
    for cls in chosen:
        entries = rng.sample(pool, rng.randint(0, len(pool)))
        if entries and rng.random() < 0.2:  # a segment listed twice
            entries.append(entries[0])
        submission.append((cls, entries))
    top_n = rng.choice([None, 0, 1, 2, 3, 5, 100])
    return ratings, submission, top_n


def test_random_cases_match_brute_force() -> None:
    rng = random.Random(1234)
    checked_cut = 0
    for _ in range(3000):
        ratings, submission, top_n = _random_case(rng)
        expected = brute_force_map(ratings, submission, top_n)
        assert _ours(ratings, submission, top_n).compute()["map"] == pytest.approx(
            expected, abs=1e-12
        )
        checked_cut += bool(top_n) and any(len(e) > top_n for _, e in submission)
    assert checked_cut > 100  # the cut below L was exercised


def test_hand_computed_values() -> None:
    ratings = [
        ("a:0", 1, 1.0),
        ("b:0", 1, 0.0),
        ("c:0", 1, 1.0),
        ("d:0", 1, 1.0),  # a positive the submission never lists: denominator 3
        ("a:0", 2, 0.0),
        ("b:5", 2, 1.0),
    ]
    submission = [(1, ["x:0", "b:0", "a:0", "c:0"]), (2, ["b:5"]), (3, ["a:0"])]
    metric = _ours(ratings, submission, None)
    # class 1: x:0 unrated, dropped; b:0 (neg), a:0 (pos, 1/2), c:0 (pos, 2/3) over 3
    ap1 = (1 / 2 + 2 / 3) / 3
    assert metric.average_precisions() == pytest.approx({1: ap1, 2: 1.0, 3: 0.0})
    result = metric.compute()
    assert result["map"] == pytest.approx((ap1 + 1.0 + 0.0) / 3)
    assert result["num_classes"] == 3
    assert result["num_classes_without_positives"] == 1
    assert result["num_rated_pairs"] == 6
    assert result["num_rated_segments"] == 5
    assert result["num_positive_segments"] == 4
    assert result["num_entries"] == 6 and result["num_rated_entries"] == 4


def test_cut_comes_before_dropping_unrated() -> None:
    """Google cuts the submitted list, then drops unrated pairs: an unrated entry inside the
    top n takes a place."""
    ratings = [("p:0", 0, 1.0), ("n:0", 0, 0.0)]
    metric = _ours(ratings, [(0, ["u:0", "n:0", "p:0"])], 2)
    assert metric.compute()["map"] == 0.0  # p:0 is third: cut
    metric = _ours(ratings, [(0, ["u:0", "n:0", "p:0"])], 3)
    assert metric.compute()["map"] == pytest.approx(0.5)


def test_duplicates_count_twice_as_google() -> None:
    metric = _ours([("p:0", 0, 1.0)], [(0, ["p:0", "p:0"])], None)
    assert metric.compute()["map"] == pytest.approx(2.0)  # (1/1 + 2/2) / 1


def test_class_scored_twice_and_late_ratings_are_refused() -> None:
    metric = _ours([("p:0", 0, 1.0)], [(0, ["p:0"])], None)
    with pytest.raises(ValueError, match="class 0 is scored twice"):
        metric.update(0, [])
    with pytest.raises(ValueError, match="before the first update"):
        metric.add_rating("q:0", 0, 1.0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="no class scored"):
        SegmentMAP().compute()
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="top_n"):
            SegmentMAP(top_n=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        SegmentMAP().add_rating("a:0", 1, float("nan"))
    assert SegmentMAP(top_n=0).top_n is None


def test_add_video_builds_the_ids() -> None:
    metric = SegmentMAP()
    metric.add_video("vid", [0, 5], [3, 3], [1.0, 0.0])
    metric.update(3, ["vid:5", "vid:0"])
    assert metric.compute()["map"] == pytest.approx(0.5)
    assert metric.num_positives(3) == 1 and metric.num_rated_segments == 2
