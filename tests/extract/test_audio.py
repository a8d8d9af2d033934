"""Audio: decoding to 16 kHz mono through PyAV, vggish_postprocess's PCA and quantization
against a NumPy transcription, the PCA file's refusals, alignment with the rgb rows, and the
whole extractor on generated files."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from nextvlad._yt8m import DEQUANT_BIAS, DEQUANT_SCALE
from nextvlad.errors import NextVLADError, UsageError
from nextvlad.extract.audio import (
    ZERO_AUDIO_BYTE,
    AudioDecodeError,
    AudioExtractor,
    AudioPCA,
    AudioPCAError,
    align_audio,
    decode_audio,
    quantize_audio,
)
from nextvlad.extract.mel import log_mel_examples
from tests.extract._audio_fixtures import vggish_ckpt, vggish_pca  # noqa: F401
from tests.extract.audio_factories import write_audio_file, write_audio_pca


def ref_postprocess(pca_matrix, pca_means, embeddings_batch):
    """vggish_postprocess.Postprocessor.postprocess, transcribed."""
    pca_means = pca_means.reshape(-1, 1)
    pca_applied = np.dot(pca_matrix, (embeddings_batch.T - pca_means)).T
    clipped = np.clip(pca_applied, -2.0, 2.0)
    quantized = (clipped - -2.0) * (255.0 / (2.0 - -2.0))
    return quantized.astype(np.uint8)


def _peak_hz(wave: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[np.argmax(spectrum)])


# --------------------------------------------------------------------------------------------
# Decoding


def test_wav_stereo_44k_becomes_16k_mono_mean(tmp_path):
    path = write_audio_file(tmp_path / "s.wav", seconds=2.0, rate=44100, layout="stereo")
    wave = decode_audio(path)
    assert wave is not None and wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 32000) <= 16
    assert abs(_peak_hz(wave) - 440.0) < 2.0
    # the mean of the channels, as VGGish takes (FFmpeg's own mono mix would give 0.707)
    middle = wave[1000:-1000]
    assert abs(np.abs(middle).max() - 0.5) < 0.01
    assert abs(np.sqrt(np.mean(middle**2)) - 0.5 / np.sqrt(2)) < 0.01


def test_aac_in_mp4_decodes_to_16k(tmp_path):
    path = write_audio_file(tmp_path / "s.mp4", seconds=2.0, rate=44100, layout="stereo")
    wave = decode_audio(path)
    assert wave is not None
    assert abs(len(wave) - 32000) <= 1200  # AAC adds its encoder delay and a last frame
    assert abs(_peak_hz(wave) - 440.0) < 2.0
    assert 0.4 < np.abs(wave).max() < 0.6


def test_channels_are_averaged(tmp_path):
    path = tmp_path / "lr.wav"
    rate = 48000
    t = np.arange(rate) / rate
    left, right = 0.4 * np.sin(2 * np.pi * 300 * t), 0.4 * np.sin(2 * np.pi * 2000 * t)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="stereo")
        data = np.round(np.stack([left, right], axis=1) * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout="stereo")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    wave = decode_audio(path)
    assert wave is not None
    spectrum = np.abs(np.fft.rfft(wave[:16000])) / 8000
    freqs = np.fft.rfftfreq(16000, 1 / 16000)
    for hz in (300, 2000):
        assert abs(spectrum[np.argmin(np.abs(freqs - hz))] - 0.2) < 0.02  # half of each


def test_max_samples_decodes_a_prefix(tmp_path):
    path = write_audio_file(tmp_path / "long.wav", seconds=3.0)
    whole = decode_audio(path)
    first = decode_audio(path, max_samples=5000)
    assert whole is not None and first is not None and len(first) == 5000
    np.testing.assert_array_equal(first, whole[:5000])


def test_mono_8k_is_upsampled(tmp_path):
    path = write_audio_file(
        tmp_path / "m.wav", seconds=1.0, rate=8000, layout="mono", frequency=1000
    )
    wave = decode_audio(path)
    assert wave is not None and abs(len(wave) - 16000) <= 16
    assert abs(_peak_hz(wave) - 1000.0) < 2.0


def _video_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            image = np.full((32, 32, 3), 40 * i, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def test_audio_beside_video(tmp_path):
    path = tmp_path / "both.mp4"
    rate = 44100
    t = np.arange(2 * rate) / rate
    wave = (0.5 * np.sin(2 * np.pi * 880 * t)).astype(np.float32)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="mono")
        packets = []
        for i in range(20):
            image = np.full((32, 32, 3), 10 * i, np.uint8)
            packets += video.encode(av.VideoFrame.from_ndarray(image, format="rgb24"))
        for start in range(0, len(wave), 1024):
            frame = av.AudioFrame.from_ndarray(
                wave[None, start : start + 1024].copy(), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, start
            packets += audio.encode(frame)
        packets += [*video.encode(None), *audio.encode(None)]
        for packet in packets:
            container.mux(packet)
    decoded = decode_audio(path)
    assert decoded is not None and abs(len(decoded) - 32000) <= 1200
    assert abs(_peak_hz(decoded) - 880.0) < 2.0


def test_no_audio_stream_is_none(tmp_path):
    assert decode_audio(_video_only(tmp_path / "v.mp4")) is None


def test_a_corrupt_file_is_named(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(5000))
    with pytest.raises(AudioDecodeError, match=r"broken\.mp4"):
        decode_audio(path)


def test_a_truncated_file_is_named(tmp_path):
    path = write_audio_file(tmp_path / "cut.mp4", seconds=2.0)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(AudioDecodeError, match=r"cut\.mp4") as info:
        decode_audio(path)
    assert isinstance(info.value, NextVLADError) and not isinstance(info.value, UsageError)
    assert "\n" not in str(info.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(AudioDecodeError, match=r"nothing\.wav"):
        decode_audio(tmp_path / "nothing.wav")


# --------------------------------------------------------------------------------------------
# PCA and quantization


def test_quantization_is_vggish_postprocess():
    values = np.array([-3.0, -2.0, -1.999, -0.01, 0.0, 0.01, 1.0, 1.99, 1.9999, 2.0, 7.0])
    expected = ref_postprocess(np.eye(11), np.zeros(11), values[None])[0]
    got = quantize_audio(values)
    np.testing.assert_array_equal(got, expected)
    # truncation, not rounding: 0.0 -> 127.5 -> 127; 1.9999 -> 254.998 -> 254
    assert list(got) == [0, 0, 0, 126, 127, 128, 191, 254, 254, 255, 255]


def test_postprocess_matches_the_transcription(tmp_path):
    path = write_audio_pca(tmp_path / "pca.npz", seed=4, scale=2.0)
    pca = AudioPCA.load(path)
    rng = np.random.default_rng(1)
    embeddings = rng.standard_normal((50, 128)).astype(np.float32)
    with np.load(path) as npz:
        expected = ref_postprocess(npz["pca_eigen_vectors"], npz["pca_means"], embeddings)
    got = quantize_audio(pca.apply(embeddings))
    np.testing.assert_array_equal(got, expected)
    assert 0 < (got == 0).mean() < 0.2 and 0 < (got == 255).mean() < 0.2  # clipping, some


def test_zero_byte_dequantizes_nearest_zero():
    dequantized = np.arange(256) * DEQUANT_SCALE + DEQUANT_BIAS
    assert ZERO_AUDIO_BYTE == int(np.argmin(np.abs(dequantized))) == 127
    assert quantize_audio(np.zeros(1))[0] == ZERO_AUDIO_BYTE


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"pca_means": np.zeros(128)}, "pca_eigen_vectors missing"),
        ({"pca_eigen_vectors": np.eye(128)}, "pca_means missing"),
        ({"pca_eigen_vectors": np.eye(64), "pca_means": np.zeros(128)}, r"shape \[64, 64\]"),
        ({"pca_eigen_vectors": np.eye(128), "pca_means": np.zeros(100)}, "100 values"),
    ],
)
def test_a_wrong_pca_file_is_named(tmp_path, arrays, message):
    path = tmp_path / "p.npz"
    np.savez(path, **arrays)
    with pytest.raises(AudioPCAError, match=message) as info:
        AudioPCA.load(path)
    assert isinstance(info.value, UsageError) and "p.npz" in str(info.value)


def test_a_pickled_pca_file_is_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, pca_eigen_vectors=np.array([{"x": 1}], dtype=object), pca_means=np.zeros(128))
    with pytest.raises(AudioPCAError, match=r"pickled\.npz"):
        AudioPCA.load(path)


@pytest.mark.parametrize("content", [b"", b"not a zip", "npy"])
def test_an_unreadable_pca_file_is_named(tmp_path, content):
    path = tmp_path / "junk.npz"
    if content == "npy":
        with open(path, "wb") as file:
            np.save(file, np.eye(128))
    else:
        path.write_bytes(content)
    with pytest.raises(AudioPCAError, match=r"junk\.npz"):
        AudioPCA.load(path)


# --------------------------------------------------------------------------------------------
# Alignment with the rgb rows


def test_align_cuts_extra_rows():
    rows = np.arange(5 * 128, dtype=np.uint8).reshape(5, 128)
    np.testing.assert_array_equal(align_audio(rows, 3), rows[:3])


def test_align_pads_with_the_last_row():
    rows = np.arange(2 * 128, dtype=np.uint8).reshape(2, 128)
    aligned = align_audio(rows, 4)
    assert aligned.shape == (4, 128) and aligned.dtype == np.uint8
    np.testing.assert_array_equal(aligned[:2], rows)
    np.testing.assert_array_equal(aligned[2:], np.stack([rows[1], rows[1]]))


def test_align_pads_no_rows_with_the_zero_byte():
    aligned = align_audio(np.zeros((0, 128), np.uint8), 3)
    assert (aligned == ZERO_AUDIO_BYTE).all() and aligned.shape == (3, 128)
    floats = align_audio(np.zeros((0, 128), np.float32), 2)
    assert floats.dtype == np.float32 and not floats.any()


# --------------------------------------------------------------------------------------------
# The extractor


@pytest.fixture(scope="module")
def extractor(vggish_ckpt, vggish_pca):  # noqa: F811
    return AudioExtractor.from_files(vggish_ckpt, vggish_pca)


def test_features_are_one_row_a_second(extractor):
    t = np.arange(round(3.5 * 16000)) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    rows = extractor.features(wave)
    assert rows.shape == (3, 128) and rows.dtype == np.uint8
    assert len(np.unique(rows)) > 20  # not degenerate, not all clipped
    embeddings = extractor.embeddings(wave)
    assert embeddings.shape == (3, 128) and embeddings.dtype == np.float32
    np.testing.assert_array_equal(quantize_audio(embeddings.astype(np.float64)), rows)
    assert extractor.features(wave, max_examples=2).shape == (2, 128)
    assert extractor.features(wave[:8000]).shape == (0, 128)


def test_features_compose_the_stages(extractor, vggish_pca):  # noqa: F811
    import torch

    rng = np.random.default_rng(2)
    wave = (0.2 * rng.standard_normal(16000 * 2)).astype(np.float32)
    examples = log_mel_examples(wave)
    with torch.inference_mode():
        embedded = extractor.model(torch.from_numpy(examples)).numpy()
    with np.load(vggish_pca) as npz:
        expected = ref_postprocess(npz["pca_eigen_vectors"], npz["pca_means"], embedded)
    np.testing.assert_array_equal(extractor.features(wave), expected)


def test_the_vggish_hop_is_an_option(extractor):
    vggish_hop = AudioExtractor(extractor.model, extractor.pca, hop_seconds=0.96)
    wave = (0.2 * np.random.default_rng(3).standard_normal(16000 * 5)).astype(np.float32)
    tiled, per_second = vggish_hop.features(wave), extractor.features(wave)
    assert tiled.shape == per_second.shape == (5, 128)  # 498 frames hold 5 of either
    np.testing.assert_array_equal(tiled[0], per_second[0])  # both start at 0 s
    assert (tiled[1:] != per_second[1:]).any()  # then at 0.96 s vs 1.0 s


def test_extract_a_file(extractor, tmp_path):
    path = write_audio_file(tmp_path / "tone.mp4", seconds=3.0)
    rows = extractor.extract(path)
    assert rows is not None and rows.shape == (3, 128)
    wave = decode_audio(path)
    assert wave is not None
    np.testing.assert_array_equal(rows, extractor.features(wave))


def test_extract_at_most_max_examples(extractor, tmp_path):
    path = write_audio_file(tmp_path / "four.wav", seconds=4.0)
    whole = extractor.extract(path)
    two = extractor.extract(path, max_examples=2)
    assert whole is not None and two is not None and len(whole) == 4
    np.testing.assert_array_equal(two, whole[:2])


def test_extract_without_audio_is_none(extractor, tmp_path):
    assert extractor.extract(_video_only(tmp_path / "silent.mp4")) is None


def test_a_bad_pca_file_stops_from_files(vggish_ckpt, tmp_path):  # noqa: F811
    path = tmp_path / "bad.npz"
    path.write_bytes(b"junk")
    with pytest.raises(AudioPCAError, match=r"bad\.npz"):
        AudioExtractor.from_files(vggish_ckpt, path)
