"""SegmentRanking and the 2019 submission writer against a dense brute force."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from nextvlad.metrics import read_submission
from nextvlad.training import segments as segments_module
from nextvlad.training.segments import SegmentRanking, write_segment_submission


def brute_force(
    probs: np.ndarray,
    ids: list[str],
    top_k: int,
    max_per_class: int,
    classes: np.ndarray | None = None,
) -> str:
    """The submission written the slow way, from the dense (N, C) matrix."""
    allowed = np.arange(probs.shape[1]) if classes is None else np.sort(classes)
    per_class: dict[int, list[tuple[float, int]]] = {}
    for i, row in enumerate(probs):
        chosen = sorted(allowed.tolist(), key=lambda c: -row[c])[:top_k]
        for c in chosen:
            per_class.setdefault(c, []).append((float(row[c]), i))
    lines = ["Class,Segments"]
    for c in sorted(per_class):
        best = sorted(per_class[c], key=lambda e: (-e[0], e[1]))[:max_per_class]
        lines.append(f"{c}," + " ".join(ids[i] for _, i in best))
    return "\n".join(lines) + "\n"


def fast(
    probs: np.ndarray,
    ids: list[str],
    top_k: int,
    max_per_class: int,
    classes: np.ndarray | None = None,
    batch: int = 7,
) -> tuple[str, int]:
    ranking = SegmentRanking(
        probs.shape[1], top_k=top_k, max_per_class=max_per_class, classes=classes
    )
    for lo in range(0, len(ids), batch):
        ranking.add(ids[lo : lo + batch], torch.from_numpy(probs[lo : lo + batch]))
    out = io.StringIO()
    count = write_segment_submission(out, ranking.ranked())
    return out.getvalue(), count


def random_case(seed: int, n: int, c: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    probs = rng.random((n, c), dtype=np.float32)  # distinct with probability 1
    ids = [f"v{i // 4}:{5 * (i % 4)}" for i in range(n)]
    return probs, ids


@pytest.mark.parametrize(
    ("seed", "n", "c", "top_k", "max_per_class"),
    [(0, 30, 6, 2, 100), (1, 50, 10, 3, 4), (2, 9, 5, 20, 3), (3, 1, 4, 1, 1), (4, 64, 12, 5, 7)],
)
def test_matches_brute_force(seed: int, n: int, c: int, top_k: int, max_per_class: int) -> None:
    probs, ids = random_case(seed, n, c)
    text, count = fast(probs, ids, top_k, max_per_class)
    assert text == brute_force(probs, ids, top_k, max_per_class)
    assert count == text.count("\n") - 1


def test_max_per_class_cut_keeps_the_best() -> None:
    probs, ids = random_case(5, 40, 3)
    text, _ = fast(probs, ids, top_k=3, max_per_class=5)
    lines = list(read_submission_text(text))
    assert [c for c, _ in lines] == [0, 1, 2]
    for c, entries in lines:
        assert len(entries) == 5
        best = np.argsort(-probs[:, c], kind="stable")[:5]
        assert entries == [ids[i] for i in best]


def test_whitelist_restricts_the_top_k() -> None:
    probs, ids = random_case(6, 25, 8)
    probs[:, 7] = 1.0  # the model's favourite class, outside the whitelist
    classes = np.array([5, 1, 3])
    text, _ = fast(probs, ids, top_k=2, max_per_class=10, classes=classes)
    assert text == brute_force(probs, ids, 2, 10, classes)
    assert {c for c, _ in read_submission_text(text)} <= {1, 3, 5}


def test_ties_go_to_the_window_seen_first() -> None:
    probs = np.full((6, 2), 0.5, np.float32)
    ids = [f"v:{5 * i}" for i in range(6)]
    text, _ = fast(probs, ids, top_k=2, max_per_class=4, batch=2)
    assert text == "Class,Segments\n0,v:0 v:5 v:10 v:15\n1,v:0 v:5 v:10 v:15\n"


def test_pruning_across_many_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segments_module, "_MIN_PRUNE", 10)
    probs, ids = random_case(7, 200, 6)
    ranking = SegmentRanking(6, top_k=3, max_per_class=4)
    for lo in range(0, 200, 5):
        ranking.add(ids[lo : lo + 5], torch.from_numpy(probs[lo : lo + 5]))
        assert ranking._held <= max(2 * 6 * 4, 10) + 15  # bounded, never all 600 triples
    out = io.StringIO()
    write_segment_submission(out, ranking.ranked())
    assert out.getvalue() == brute_force(probs, ids, 3, 4)


def test_written_file_reads_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    probs, ids = random_case(8, 20, 4)
    text, _ = fast(probs, ids, top_k=2, max_per_class=3)
    path = tmp_path / "sub.csv"
    path.write_text(text)
    lines = list(read_submission(path))
    assert [(line.class_id, line.segments) for line in lines] == list(read_submission_text(text))


def test_no_window_writes_the_header_only() -> None:
    out = io.StringIO()
    assert write_segment_submission(out, SegmentRanking(3).ranked()) == 0
    assert out.getvalue() == "Class,Segments\n"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="whitelist"):
        SegmentRanking(4, classes=np.array([1, 4]))
    with pytest.raises(ValueError, match="positive"):
        SegmentRanking(4, top_k=0)
    with pytest.raises(ValueError, match="shape"):
        SegmentRanking(4).add(["a:0"], torch.zeros(1, 3))


def read_submission_text(text: str) -> list[tuple[int, list[str]]]:
    rows = []
    for line in text.splitlines()[1:]:
        head, _, rest = line.partition(",")
        rows.append((int(head), rest.split()))
    return rows
