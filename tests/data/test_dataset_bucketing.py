"""Length bucketing: same videos, batches of similar length."""

from __future__ import annotations

from pathlib import Path

from nextvlad.data import VideoDataset, write_synthetic


def test_bucketed_batches_cover_every_video_once_with_less_padding(tmp_path: Path) -> None:
    write_synthetic(tmp_path, videos=96, shards=2, num_classes=25, seed=3)
    plain = VideoDataset(str(tmp_path / "*.tfrecord"), num_classes=25, shuffle=True, seed=1)
    bucketed = VideoDataset(
        str(tmp_path / "*.tfrecord"), num_classes=25, shuffle=True, seed=1, bucket_size=8
    )

    def padded(dataset: VideoDataset) -> tuple[list[str], int, int]:
        ids, real, total = [], 0, 0
        for batch in dataset.loader(8):
            assert batch.frames is not None and batch.num_frames is not None
            ids += batch.ids
            real += int(batch.num_frames.sum())
            total += batch.frames.shape[0] * batch.frames.shape[1]
        return sorted(ids), real, total

    ids_a, real_a, total_a = padded(plain)
    ids_b, real_b, total_b = padded(bucketed)
    assert ids_a == ids_b and len(ids_a) == 96 and real_a == real_b
    assert total_b < total_a  # fewer padded frames
    assert padded(bucketed) == (ids_b, real_b, total_b)  # deterministic for the seed
