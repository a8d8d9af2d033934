"""YT8MMetrics: parity with the official eval_util values, streaming, ties, edge cases."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from nextvlad.metrics import YT8MMetrics
from tests.conftest import shared_path

FIXTURE = "fixtures/metrics/official_eval_util.npz"
KEYS = ("gap", "map", "hit_at_one", "perr")


# --- an independent, slow reference written from the definitions ------------------------


def _runs(scores: list[float], positives: list[bool]) -> list[list[bool]]:
    """Labels grouped in runs of equal score, runs by descending score."""
    by_score: dict[float, list[bool]] = {}
    for score, positive in zip(scores, positives, strict=True):
        by_score.setdefault(score, []).append(positive)
    return [by_score[s] for s in sorted(by_score, reverse=True)]


def _ap_of_ranking(labels: list[bool], num_positives: int) -> float:
    hits, total = 0, 0.0
    for rank, positive in enumerate(labels, start=1):
        if positive:
            hits += 1
            total += hits / rank
    return total / num_positives


def _distinct_orders(run: list[bool]) -> list[tuple[bool, ...]]:
    """Every distinct arrangement of a run's labels (choose where its positives go)."""
    size, count = len(run), sum(run)
    assert math.comb(size, count) <= 50_000, "test case too large for enumeration"
    return [
        tuple(i in where for i in range(size))
        for where in itertools.combinations(range(size), count)
    ]


def expected_ap_brute_force(
    scores: list[float], positives: list[bool], num_positives: int
) -> float:
    """AP averaged over every joint order of every run of tied scores (small inputs)."""
    if num_positives == 0:
        return 0.0
    orders = [_distinct_orders(run) for run in _runs(scores, positives)]
    values = [
        _ap_of_ranking([label for run in choice for label in run], num_positives)
        for choice in itertools.product(*orders)
    ]
    return sum(values) / len(values)


def expected_ap(scores: list[float], positives: list[bool], num_positives: int) -> float:
    """AP averaged over the orders of each tied run (linearity: runs are independent)."""
    if num_positives == 0:
        return 0.0
    total, rank, hits = 0.0, 0, 0
    for run in _runs(scores, positives):
        orders = _distinct_orders(run)
        run_sum = 0.0
        for order in orders:
            local_hits = hits
            for offset, positive in enumerate(order, start=1):
                if positive:
                    local_hits += 1
                    run_sum += local_hits / (rank + offset)
        total += run_sum / len(orders)
        rank += len(run)
        hits += sum(run)
    return total / num_positives


def reference(predictions: np.ndarray, labels: np.ndarray, top_k: int, ap=expected_ap) -> dict:
    """The official definitions, one video and one class at a time."""
    num_videos, num_classes = predictions.shape
    k = min(top_k, num_classes)
    pooled = []
    for video in range(num_videos):
        for c in np.argpartition(predictions[video], -k)[-k:]:
            pooled.append((float(predictions[video, c]), bool(labels[video, c]), int(c)))
    gap = ap([s for s, _, _ in pooled], [p for _, p, _ in pooled], int(labels.sum()))
    aps = []
    for c in range(num_classes):
        count = int(labels[:, c].sum())
        if count:
            mine = [(s, p) for s, p, cls in pooled if cls == c]
            aps.append(ap([s for s, _ in mine], [p for _, p in mine], count))
    hits, perr = 0.0, 0.0
    for video in range(num_videos):
        hits += float(labels[video, np.argmax(predictions[video])])
        n = int(labels[video].sum())
        if n:
            top = np.argpartition(predictions[video], -n)[-n:]
            perr += sum(bool(labels[video, j]) and predictions[video, j] > 0 for j in top) / n
    return {
        "gap": gap,
        "map": float(np.mean(aps)) if aps else math.nan,
        "hit_at_one": hits / num_videos,
        "perr": perr / num_videos,
    }


def run(predictions, labels, top_k: int = 20, batches: int = 1) -> dict:
    metrics = YT8MMetrics(predictions.shape[1], top_k=top_k)
    for p, y in zip(
        np.array_split(predictions, batches), np.array_split(labels, batches), strict=True
    ):
        metrics.update(p, y)
    return metrics.compute()


def random_case(seed: int, videos: int, classes: int, levels: int | None = None):
    """Distinct probabilities (quantised to `levels` values when given, to force ties), labels."""
    rng = np.random.default_rng(seed)
    size = videos * classes
    predictions = ((rng.permutation(size) + 0.5) / size).reshape(videos, classes)  # distinct
    if levels is not None:
        predictions = np.floor(predictions * levels) / levels
    predictions = predictions.astype(np.float32)
    labels = (rng.random((videos, classes)) < 3.0 / classes).astype(np.uint8)
    labels[rng.random((videos, classes)) < 0.3 * (predictions > 0.6)] = 1  # some signal
    return predictions, labels


def assert_close(result: dict, expected: dict, tol: float) -> None:
    for key in KEYS:
        if math.isnan(expected[key]):
            assert math.isnan(result[key]), key
        else:
            assert abs(result[key] - expected[key]) <= tol, (key, result[key], expected[key])


# --- parity with the official code -------------------------------------------------------


def _fixture_cases():
    data = np.load(shared_path(FIXTURE))
    return data, json.loads(str(data["cases"]))


@pytest.mark.parametrize("name", ["small", "wide", "topk3"])
def test_matches_official_eval_util(name: str) -> None:
    data, cases = _fixture_cases()
    case = next(c for c in cases if c["name"] == name)
    predictions, labels = data[f"{name}/predictions"], data[f"{name}/labels"]
    result = run(predictions, labels, top_k=case["top_k"], batches=case["batches"])
    assert result["num_videos"] == case["num_videos"]
    expected = {
        "gap": case["gap"],
        "map": case["mean_ap"],
        "hit_at_one": case["hit_at_one"],
        "perr": case["perr"],
    }
    assert_close(result, expected, 1e-6)
    one_shot = run(predictions, labels, top_k=case["top_k"], batches=1)
    assert abs(one_shot["gap"] - case["gap_one_shot"]) <= 1e-6
    for key in KEYS:
        assert one_shot[key] == pytest.approx(result[key], abs=1e-12)


def test_fixture_cases_all_covered() -> None:
    _, cases = _fixture_cases()
    assert {c["name"] for c in cases} == {"small", "wide", "topk3"}


@pytest.mark.parametrize("seed", range(4))
def test_matches_reference_without_ties(seed: int) -> None:
    predictions, labels = random_case(seed, videos=60, classes=30)
    assert len(np.unique(predictions)) == predictions.size
    assert_close(
        run(predictions, labels, top_k=7, batches=3), reference(predictions, labels, 7), 1e-12
    )


@pytest.mark.parametrize("seed", range(4))
def test_ties_follow_argpartition_and_expected_order(seed: int) -> None:
    """Heavy ties: top-k/top-n sets as numpy.argpartition, tied runs averaged over orders."""
    predictions, labels = random_case(seed, videos=12, classes=8, levels=20)
    expected = reference(predictions, labels, 3)
    assert_close(run(predictions, labels, top_k=3, batches=3), expected, 1e-12)


def test_tied_runs_match_brute_force_over_all_orders() -> None:
    predictions = np.array(
        [[0.5, 0.5, 0.2, 0.9], [0.5, 0.9, 0.5, 0.2], [0.2, 0.5, 0.9, 0.5]], dtype=np.float32
    )
    labels = np.array([[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 0, 0]], dtype=np.uint8)
    expected = reference(predictions, labels, 3, ap=expected_ap_brute_force)
    assert_close(run(predictions, labels, top_k=3), expected, 1e-12)


def test_gap_is_plain_ap_when_ties_do_not_mix_labels() -> None:
    # Scores tie only among negatives: the official value does not depend on tie order.
    predictions = np.array([[0.9, 0.3, 0.3, 0.1], [0.8, 0.3, 0.7, 0.3]], dtype=np.float32)
    labels = np.array([[1, 0, 0, 1], [0, 0, 1, 0]], dtype=np.uint8)
    # Ranked top-3 pairs: .9+ .8- .7+ .3- .3- .3- (the 0.1 positive is outside its top 3).
    gap = (1 / 1 + 2 / 3) / 3
    assert run(predictions, labels, top_k=3)["gap"] == pytest.approx(gap, abs=1e-15)


# --- streaming and inputs ----------------------------------------------------------------


@pytest.mark.parametrize("levels", [None, 7])
def test_streaming_equals_one_batch(levels: int | None) -> None:
    predictions, labels = random_case(11, videos=97, classes=50, levels=levels)
    whole = run(predictions, labels, top_k=10)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, 97), size=8, replace=False))
    metrics = YT8MMetrics(50, top_k=10)
    for p, y in zip(np.split(predictions, cuts), np.split(labels, cuts), strict=True):
        metrics.update(p, y)
    streamed = metrics.compute()
    for key in KEYS:
        assert streamed[key] == pytest.approx(whole[key], abs=1e-12)
    assert streamed["num_videos"] == whole["num_videos"] == 97


def test_merge_equals_one_stream() -> None:
    predictions, labels = random_case(5, videos=50, classes=20, levels=9)
    first, second = YT8MMetrics(20, top_k=5), YT8MMetrics(20, top_k=5)
    first.update(predictions[:30], labels[:30])
    second.update(predictions[30:], labels[30:])
    first.compute()  # consolidating the state first must not matter
    first.merge(second)
    merged, whole = first.compute(), run(predictions, labels, top_k=5)
    for key in KEYS:
        assert merged[key] == pytest.approx(whole[key], abs=1e-12)
    with pytest.raises(ValueError, match="cannot merge"):
        first.merge(YT8MMetrics(20, top_k=6))


def test_tensor_and_numpy_inputs_agree() -> None:
    predictions, labels = random_case(3, videos=33, classes=16, levels=11)
    from_numpy = run(predictions, labels, top_k=6, batches=2)
    from_tensors = run(torch.from_numpy(predictions), torch.from_numpy(labels).bool(), 6, 2)
    assert from_tensors == from_numpy
    for dtype in (np.float64, np.int64, np.bool_, np.float32):
        assert run(predictions, labels.astype(dtype), top_k=6) == run(predictions, labels, 6)
    half = torch.from_numpy(predictions).to(torch.bfloat16)
    assert run(half, torch.from_numpy(labels), 6) == run(half.float().numpy(), labels, 6)
    assert run(predictions.astype(np.float16), labels, 6) == run(
        predictions.astype(np.float16).astype(np.float32), labels, 6
    )


def test_state_holds_only_top_k_per_video() -> None:
    predictions, labels = random_case(8, videos=64, classes=500)
    metrics = YT8MMetrics(500, top_k=20)
    for p, y in zip(np.array_split(predictions, 4), np.array_split(labels, 4), strict=True):
        metrics.update(p, y)
    scores, classes, positive = metrics._pooled()
    assert scores.shape == classes.shape == positive.shape == (64 * 20,)
    assert scores.nbytes + classes.nbytes + positive.nbytes == 64 * 20 * 7


# --- edge cases --------------------------------------------------------------------------


def test_video_without_positives_counts_as_zero() -> None:
    predictions = np.array([[0.9, 0.1, 0.2], [0.8, 0.5, 0.1]], dtype=np.float32)
    labels = np.array([[1, 0, 0], [0, 0, 0]], dtype=np.uint8)
    result = run(predictions, labels, top_k=2)
    assert result["hit_at_one"] == 0.5
    assert result["perr"] == 0.5
    assert result["gap"] == 1.0  # the only positive is ranked first
    assert result["map"] == 1.0  # classes 1 and 2 have no positive: left out


def test_all_zero_predictions() -> None:
    predictions = np.zeros((4, 5), dtype=np.float32)
    labels = np.array(
        [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]], dtype=np.uint8
    )
    result = run(predictions, labels, top_k=3)
    assert result["hit_at_one"] == 0.25  # argmax is class 0
    assert result["perr"] == 0.0  # a positive only counts when scored above 0
    assert_close(result, reference(predictions, labels, 3), 1e-12)


def test_top_k_larger_than_num_classes() -> None:
    predictions, labels = random_case(2, videos=6, classes=5, levels=8)
    assert run(predictions, labels, top_k=50) == run(predictions, labels, top_k=6)
    assert_close(run(predictions, labels, top_k=50), reference(predictions, labels, 50), 1e-12)


def test_one_class() -> None:
    predictions = np.array([[0.3], [0.7], [0.5]], dtype=np.float32)
    labels = np.array([[0], [1], [1]], dtype=np.uint8)
    result = run(predictions, labels, top_k=20)
    assert result["gap"] == pytest.approx(1.0) and result["map"] == pytest.approx(1.0)
    assert result["hit_at_one"] == pytest.approx(2 / 3) and result["perr"] == pytest.approx(2 / 3)


def test_class_whose_positives_miss_every_top_k_counts_as_zero() -> None:
    predictions = np.array([[0.9, 0.8, 0.1], [0.2, 0.9, 0.1]], dtype=np.float32)
    labels = np.array([[1, 0, 1], [0, 1, 0]], dtype=np.uint8)
    result = run(predictions, labels, top_k=1)
    assert result["map"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    assert result["gap"] == pytest.approx((1 / 1 + 2 / 2) / 3)


def test_no_positive_label_at_all() -> None:
    result = run(np.full((3, 4), 0.5, np.float32), np.zeros((3, 4), np.uint8), top_k=2)
    assert result["gap"] == 0.0 and result["hit_at_one"] == 0.0 and result["perr"] == 0.0
    assert math.isnan(result["map"])


def test_empty_batch_is_ignored_and_compute_needs_videos() -> None:
    metrics = YT8MMetrics(4)
    metrics.update(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.uint8))
    with pytest.raises(ValueError, match="no videos"):
        metrics.compute()
    metrics.update(np.full((1, 4), 0.5, np.float32), np.ones((1, 4), np.uint8))
    assert metrics.num_videos == 1
    metrics.reset()
    assert metrics.num_videos == 0
    with pytest.raises(ValueError, match="no videos"):
        metrics.compute()


def test_returns_plain_python_numbers() -> None:
    result = run(*random_case(1, videos=10, classes=8), top_k=3)
    assert set(result) == {*KEYS, "num_videos"}
    assert all(type(result[key]) is float for key in KEYS)
    assert type(result["num_videos"]) is int


# --- invalid input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predictions", "labels", "match"),
    [
        (np.zeros((2, 5), np.float32), np.zeros((2, 5)), "shape \\(batch, 4\\)"),
        (np.zeros(4, np.float32), np.zeros(4), "shape \\(batch, 4\\)"),
        (np.zeros((2, 4), np.float32), np.zeros((3, 4)), "does not match"),
        (np.zeros((2, 4), np.float32), np.zeros((2, 4, 1)), "does not match"),
        (np.zeros((2, 4), np.int64), np.zeros((2, 4)), "floating point"),
        (np.full((2, 4), np.nan, np.float32), np.zeros((2, 4)), "NaN"),
        (np.zeros((2, 4), np.float32), np.full((2, 4), 2), "0 or 1"),
        (np.zeros((2, 4), np.float32), np.full((2, 4), 0.5), "0 or 1"),
        (np.zeros((2, 4), np.float32), np.full((2, 4), -1), "0 or 1"),
        (np.zeros((2, 4), np.float32), np.full((2, 4), np.nan), "0 or 1"),
        (np.zeros((2, 4), np.float32), np.zeros((2, 4), "U1"), "bool or numeric"),
        ([[0.0] * 4], np.zeros((1, 4)), "numpy array or a torch tensor"),
    ],
)
def test_invalid_input_raises(predictions, labels, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        YT8MMetrics(4).update(predictions, labels)


@pytest.mark.parametrize(("num_classes", "top_k"), [(0, 20), (4, 0), (4, -1), (4.0, 20), (True, 2)])
def test_invalid_construction_raises(num_classes, top_k) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        YT8MMetrics(num_classes, top_k=top_k)
