"""The pipeline: frames -> network in batches -> PCA -> bytes, audio, records read back."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from nextvlad.data import VideoDataset
from nextvlad.data.example import parse_sequence_example
from nextvlad.data.schema import decode_video, infer_schema
from nextvlad.extract import ZERO_AUDIO_BYTE, Extractor, VideoError, iter_video_frames
from nextvlad.extract.audio import AudioExtractor, align_audio, decode_audio, quantize_audio
from nextvlad.extract.pca import PCA, quantize
from nextvlad.extract.pipeline import dequantize
from nextvlad.extract.writer import ShardWriter, encode_extracted
from tests.extract.factories import write_inception_pth, write_pca
from tests.extract.stand_ins import CheapNetwork, FakeAudio
from tests.extract.videos import write_images, write_video


@pytest.fixture(scope="module")
def pca_dir(tmp_path_factory) -> Path:
    return write_pca(tmp_path_factory.mktemp("pca") / "pca")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    # 25 fps, 130 frames: frames 0, 26, 51, 76, 101, 126 are kept at 1 fps.
    return write_video(tmp_path_factory.mktemp("v") / "clip.mp4", 25, 130)


def cheap(pca_dir: Path, **kwargs) -> Extractor:
    return Extractor(CheapNetwork(), PCA.load(pca_dir), **kwargs)


def test_features_are_googles_arithmetic_of_the_kept_frames(pca_dir, video):
    extractor = cheap(pca_dir, batch_size=4)
    got = extractor.extract(video, labels=[3, 1])
    frames = np.stack([f.rgb for f in iter_video_frames(video)])
    pool = CheapNetwork()(torch.from_numpy(frames)).numpy()
    features = PCA.load(pca_dir).project(pool)
    assert got.id == "clip" and got.labels == [3, 1]
    np.testing.assert_array_equal(got.rgb, quantize(features))
    np.testing.assert_allclose(got.mean_rgb, features.mean(axis=0), rtol=0, atol=1e-6)
    assert got.rgb.shape == (6, 1024) and got.rgb.dtype == np.uint8
    assert got.audio is None and got.mean_audio is None
    assert extractor.network.calls == [4, 2]  # batches of batch_size


@pytest.mark.slow
def test_real_inception_on_a_few_frames(tmp_path, pca_dir):
    """The whole way with the (random-weight) Inception-v3: pool_3 of a batch equals the
    network run frame by frame, and the bytes are those of its features."""
    from nextvlad.extract.inception import load_inception

    path = write_video(tmp_path / "short.mp4", 25, 30)  # 1 frame at 1 fps, 2 at 2 fps
    extractor = Extractor.from_files(
        write_inception_pth(tmp_path / "inception.pth"), pca_dir, fps=2.0, batch_size=2
    )
    got = extractor.extract(path)
    net = load_inception(tmp_path / "inception.pth")
    with torch.inference_mode():
        pool = np.concatenate(
            [net(torch.from_numpy(f.rgb[None])).numpy() for f in iter_video_frames(path, 2.0)]
        )
    features = PCA.load(pca_dir).project(pool)
    assert np.abs(got.rgb.astype(int) - quantize(features)).max() <= 1
    np.testing.assert_allclose(got.mean_rgb, features.mean(axis=0), atol=2e-3)


def test_zero_audio_is_the_byte_nearest_zero(pca_dir, video):
    assert ZERO_AUDIO_BYTE == 127
    values = np.abs(dequantize(np.arange(256)))
    assert values[127] < 1e-4 and values[127] == values.min()
    got = cheap(pca_dir, zero_audio=True).extract(video)
    assert got.audio.shape == (6, 128) and (got.audio == 127).all()
    np.testing.assert_array_equal(got.mean_audio, np.zeros(128, np.float32))


@pytest.fixture(scope="module")
def sound_video(tmp_path_factory) -> Path:
    """The same 6 kept frames, and 5.2 s of sound."""
    return write_video(tmp_path_factory.mktemp("s") / "sound.mp4", 25, 130, audio_seconds=5.2)


@pytest.mark.parametrize("rows", [10, 6, 2, 0])
def test_audio_rows_are_cut_or_padded_to_the_rgb_rows(pca_dir, sound_video, rows):
    audio = FakeAudio(rows)
    got = cheap(pca_dir, audio=audio).extract(sound_video)
    assert audio.calls and audio.calls[0][1] == 300  # at most max_frames examples
    table = audio.table()
    aligned = np.concatenate([table, np.repeat(table[-1:], 6, axis=0)])[:6] if rows else None
    if aligned is None:
        aligned = np.zeros((6, 128), np.float32)
    np.testing.assert_array_equal(got.audio, quantize_audio(aligned))
    np.testing.assert_allclose(got.mean_audio, aligned.mean(axis=0), rtol=1e-6)
    assert got.note is None


def test_vggish_audio_of_a_video(tmp_path, pca_dir, sound_video):
    """With the (random-weight) VGGish: the rows are the AudioExtractor's own, aligned."""
    from tests.extract.audio_factories import write_audio_pca, write_vggish_checkpoint

    ckpt = write_vggish_checkpoint(tmp_path / "vggish_model.ckpt")
    params = write_audio_pca(tmp_path / "vggish_pca_params.npz")
    audio = AudioExtractor.from_files(ckpt, params)
    got = Extractor(CheapNetwork(), PCA.load(pca_dir), audio=audio).extract(sound_video)
    rows = audio.extract(sound_video)
    assert len(rows) == 5  # 5.2 s: 5 examples of 0.96 s, one a second
    np.testing.assert_array_equal(got.audio, align_audio(rows, 6))
    embeddings = align_audio(audio.embeddings(decode_audio(sound_video)), 6)
    np.testing.assert_allclose(got.mean_audio, embeddings.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_folder_of_frames_of_two_sizes(tmp_path, pca_dir):
    folder = write_images(tmp_path / "frames", 3, size=(40, 30))
    write_images(tmp_path / "more", 2, size=(32, 32))
    for i, image in enumerate(sorted((tmp_path / "more").iterdir())):
        image.rename(folder / f"frame_{10 + i:03d}.png")
    extractor = cheap(pca_dir, batch_size=8)
    got = extractor.extract(folder)
    assert got.id == "frames" and got.num_frames == 5
    assert extractor.network.calls == [3, 2]  # one image size a batch


def test_no_frames_is_a_video_error(tmp_path, pca_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="no frames"):
        cheap(pca_dir).extract(tmp_path / "empty")


def test_extract_many_decodes_ahead_and_reports_failures(tmp_path, pca_dir, video):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    items = [(video, "a", [1]), (bad, None, []), (video, "c", [])]
    for workers in (0, 2):
        out = list(cheap(pca_dir).extract_many(items, workers=workers))
        assert [s for s, _ in out] == [video, bad, video]
        assert out[0][1].id == "a" and out[2][1].id == "c"
        assert isinstance(out[1][1], VideoError) and "bad.mp4" in str(out[1][1])


def test_records_read_back_through_the_projects_reader(tmp_path, pca_dir, video):
    got = cheap(pca_dir, zero_audio=True).extract(video, labels=[2, 5])
    record = encode_extracted(got)
    context, lists = parse_sequence_example(record)
    assert list(context) == ["id", "labels", "mean_rgb", "mean_audio"]
    assert list(lists) == ["rgb", "audio"]
    assert context["id"] == [b"clip"] and context["labels"].tolist() == [2, 5]
    assert [bytes(step[0]) for step in lists["rgb"]] == [r.tobytes() for r in got.rgb]
    schema = infer_schema(record)
    assert schema.frame_level and [f.dim for f in schema.features] == [1024, 128]
    decoded = decode_video(record, schema)
    np.testing.assert_array_equal(decoded.features["rgb"], got.rgb)
    with ShardWriter(tmp_path / "out", shard_size=2) as writer:
        writer.write(got.id, record)
    dataset = VideoDataset([str(p) for p in sorted((tmp_path / "out").glob("*.tfrecord"))])
    (batch,) = list(dataset.loader(4, num_workers=0))
    assert batch.ids == ["clip"] and batch.num_frames.tolist() == [6]
    assert batch.frames.shape == (1, 6, 1152)
    np.testing.assert_array_equal(batch.frames[0, :, :1024].numpy(), got.rgb)


def test_video_level_record(pca_dir, video):
    got = cheap(pca_dir).extract(video)
    record = encode_extracted(got, video_level=True)
    schema = infer_schema(record)
    assert not schema.frame_level and [f.name for f in schema.features] == ["mean_rgb"]
    decoded = decode_video(record, schema)
    np.testing.assert_allclose(decoded.features["mean_rgb"], got.mean_rgb)


def test_audio_is_decoded_only_as_far_as_max_frames_needs(pca_dir, sound_video):
    from nextvlad.extract.mel import samples_needed

    audio = FakeAudio(2)
    got = cheap(pca_dir, audio=audio, max_frames=2).extract(sound_video)
    assert got.num_frames == 2
    ((samples, examples),) = audio.calls
    assert examples == 2 and samples == samples_needed(2, 1.0) < 5 * 16000


@pytest.mark.slow
@pytest.mark.skipif(
    not (Path.home() / "tfenv" / "bin" / "python").exists(), reason="no TensorFlow venv at ~/tfenv"
)
def test_whole_pipeline_against_googles_way(tmp_path, inception_pb):
    """Video files -> bytes and mean_rgb, ours (PyAV, PyTorch) against Google's way run in
    TensorFlow (OpenCV's frame_iterator, the graph one frame a session.run) on the same
    random-weight graph and PCA: the issue's bound, ±1 a byte, >= 99.5 % identical, mean_rgb
    within 2e-3."""
    import subprocess

    from tests.extract import parity

    pca_dir = tmp_path / "pca"
    parity.fixture_pca().save(pca_dir)
    videos = [
        write_video(tmp_path / "a.mp4", 25, 80, size=(320, 180)),
        write_video(tmp_path / "b.mp4", Fraction(30000, 1001), 100, size=(200, 240)),
    ]
    out = tmp_path / "google.npz"
    cmd = [str(parity.TF_PYTHON), str(parity.GOOGLE_SCRIPT), "--graph", str(inception_pb)]
    cmd += ["--pca", str(pca_dir), "--videos", *map(str, videos), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    extractor = Extractor.from_files(inception_pb, pca_dir, batch_size=4)
    with np.load(out) as google:
        for i, path in enumerate(videos):
            got = extractor.extract(path)
            theirs = google[f"rgb_{i}"]
            assert got.rgb.shape == theirs.shape  # the same frames chosen
            diff = np.abs(got.rgb.astype(int) - theirs.astype(int))
            assert diff.max() <= 1 and (diff == 0).mean() >= 0.995
            assert ((theirs > 0) & (theirs < 255)).mean() > 0.2  # hundreds of bytes not clipped
            np.testing.assert_allclose(got.mean_rgb, google[f"mean_rgb_{i}"], atol=2e-3, rtol=0)
