"""The log-mel front end against a NumPy float64 transcription of VGGish's ``mel_features.py``
and ``vggish_input.waveform_to_examples`` (the reference below: loops and formulas as the
original writes them, not the vectorized code under test)."""

from __future__ import annotations

import numpy as np
import pytest

from nextvlad.extract import mel

# --------------------------------------------------------------------------------------------
# Reference: mel_features.py / vggish_input.py, transcribed.


def ref_frame(data: np.ndarray, window_length: int, hop_length: int) -> np.ndarray:
    num_samples = data.shape[0]
    num_frames = 1 + int(np.floor((num_samples - window_length) / hop_length))
    return np.stack(
        [data[i * hop_length : i * hop_length + window_length] for i in range(num_frames)]
    )


def ref_periodic_hann(window_length: int) -> np.ndarray:
    return 0.5 - (0.5 * np.cos(2 * np.pi / window_length * np.arange(window_length)))


def ref_stft_magnitude(signal, fft_length, hop_length, window_length):
    frames = ref_frame(signal, window_length, hop_length)
    window = ref_periodic_hann(window_length)
    return np.abs(np.fft.rfft(frames * window, int(fft_length)))


def ref_hertz_to_mel(frequencies_hertz):
    return 1127.0 * np.log(1.0 + (frequencies_hertz / 700.0))


def ref_mel_matrix(num_mel_bins, num_spectrogram_bins, audio_sample_rate, lower, upper):
    nyquist_hertz = audio_sample_rate / 2.0
    spectrogram_bins_hertz = np.linspace(0.0, nyquist_hertz, num_spectrogram_bins)
    spectrogram_bins_mel = ref_hertz_to_mel(spectrogram_bins_hertz)
    band_edges_mel = np.linspace(ref_hertz_to_mel(lower), ref_hertz_to_mel(upper), num_mel_bins + 2)
    weights = np.empty((num_spectrogram_bins, num_mel_bins))
    for i in range(num_mel_bins):
        lower_edge_mel, center_mel, upper_edge_mel = band_edges_mel[i : i + 3]
        lower_slope = (spectrogram_bins_mel - lower_edge_mel) / (center_mel - lower_edge_mel)
        upper_slope = (upper_edge_mel - spectrogram_bins_mel) / (upper_edge_mel - center_mel)
        weights[:, i] = np.maximum(0.0, np.minimum(lower_slope, upper_slope))
    weights[0, :] = 0.0
    return weights


def ref_log_mel(data: np.ndarray) -> np.ndarray:
    sample_rate = 16000
    window_length_samples = round(sample_rate * 0.025)
    hop_length_samples = round(sample_rate * 0.010)
    fft_length = 2 ** int(np.ceil(np.log(window_length_samples) / np.log(2.0)))
    spectrogram = ref_stft_magnitude(data, fft_length, hop_length_samples, window_length_samples)
    matrix = ref_mel_matrix(64, spectrogram.shape[1], sample_rate, 125.0, 7500.0)
    return np.log(np.dot(spectrogram, matrix) + 0.01)


def ref_examples(data: np.ndarray, hop_seconds: float) -> np.ndarray:
    log_mel = ref_log_mel(data)
    window = round(0.96 * 100.0)
    hop = round(hop_seconds * 100.0)
    return ref_frame(log_mel, window, hop)


# --------------------------------------------------------------------------------------------


def _sound(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * 16000)) / 16000
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def test_constants_are_vggish_params():
    assert (mel.WINDOW_SAMPLES, mel.HOP_SAMPLES, mel.FFT_LENGTH) == (400, 160, 512)
    assert (mel.EXAMPLE_FRAMES, mel.NUM_MEL_BINS) == (96, 64)
    assert (mel.MEL_MIN_HZ, mel.MEL_MAX_HZ, mel.LOG_OFFSET) == (125.0, 7500.0, 0.01)
    assert mel.SAMPLE_RATE == 16000
    assert mel.VGGISH_EXAMPLE_HOP_SECONDS == 0.96
    assert mel.YT8M_EXAMPLE_HOP_SECONDS == 1.0


def test_mel_matrix_matches_mel_features():
    ours = mel.mel_weight_matrix()
    ref = ref_mel_matrix(64, 257, 16000, 125.0, 7500.0)
    assert ours.shape == (257, 64)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    assert not ours[0].any()  # the DC bin carries no weight
    assert (ours.max(axis=0) > 0.5).all()  # every band has a triangle


def test_mel_matrix_rejects_a_range_past_nyquist():
    with pytest.raises(ValueError, match="mel range"):
        mel.mel_weight_matrix(upper_hz=9000.0)


@pytest.mark.parametrize("seconds", [0.025, 0.5, 1.0, 2.37])
def test_log_mel_spectrogram_matches_mel_features(seconds):
    wave = _sound(seconds)
    ours = mel.log_mel_spectrogram(wave)
    ref = ref_log_mel(wave.astype(np.float64))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)


def test_log_mel_spectrogram_in_chunks_is_the_whole(monkeypatch):
    wave = _sound(1.3)
    whole = mel.log_mel_spectrogram(wave)
    monkeypatch.setattr(mel, "_CHUNK_FRAMES", 7)
    chunked = mel.log_mel_spectrogram(wave)
    assert chunked.shape == whole.shape
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-12)  # BLAS may round otherwise


def test_a_sine_lands_in_its_mel_band():
    t = np.arange(16000) / 16000
    log_mel = mel.log_mel_spectrogram(np.sin(2 * np.pi * 1000 * t))
    edges = np.linspace(mel.hertz_to_mel(125.0), mel.hertz_to_mel(7500.0), 66)
    expected = int(np.argmin(np.abs(edges[1:-1] - mel.hertz_to_mel(1000.0))))
    assert abs(int(np.argmax(log_mel.mean(axis=0))) - expected) <= 1


@pytest.mark.parametrize("seconds", [0.98, 1.0, 3.0, 5.5])
def test_examples_with_vggish_hop_match_waveform_to_examples(seconds):
    wave = _sound(seconds, seed=1)
    ours = mel.log_mel_examples(wave, hop_seconds=0.96)
    ref = ref_examples(wave.astype(np.float64), 0.96)
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-5)


def test_examples_one_a_second_start_on_whole_seconds():
    wave = _sound(4.2, seed=2)
    ours = mel.log_mel_examples(wave)  # YouTube-8M: 1.0 s hop
    log_mel = ref_log_mel(wave.astype(np.float64))
    assert ours.shape == (4, 96, 64)
    for i in range(4):  # example i = log-mel frames 100 i .. 100 i + 95 (seconds i .. i + 0.96)
        np.testing.assert_allclose(ours[i], log_mel[100 * i : 100 * i + 96], rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize(
    ("samples", "hop", "expected"),
    [
        (0, 1.0, 0),
        (399, 1.0, 0),
        (15599, 1.0, 0),  # 95 frames
        (15600, 1.0, 1),  # 96 frames: one whole example
        (16000 * 10, 1.0, 10),
        (16000 * 10, 0.96, 10),
        (16000 * 30, 0.96, 31),  # the 0.96 s hop drifts from one a second
        (16000 * 30, 1.0, 30),
    ],
)
def test_only_whole_examples(samples, hop, expected):
    examples = mel.log_mel_examples(np.zeros(samples, np.float32), hop_seconds=hop)
    assert examples.shape == (expected, 96, 64)
    assert mel.num_examples(mel.num_frames(samples), hop) == expected


def test_max_examples_takes_a_prefix_and_reads_only_what_it_needs():
    wave = _sound(6.0, seed=3)
    whole = mel.log_mel_examples(wave)
    first = mel.log_mel_examples(wave, max_examples=3)
    np.testing.assert_array_equal(first, whole[:3])
    assert mel.log_mel_examples(wave, max_examples=0).shape == (0, 96, 64)
    assert len(mel.log_mel_examples(wave, max_examples=50)) == len(whole)


@pytest.mark.parametrize("hop", [1.0, 0.96])
@pytest.mark.parametrize("count", [1, 2, 7])
def test_samples_needed_is_exact(hop, count):
    needed = mel.samples_needed(count, hop)
    assert len(mel.log_mel_examples(np.zeros(needed, np.float32), hop)) == count
    assert len(mel.log_mel_examples(np.zeros(needed - 1, np.float32), hop)) == count - 1
    assert mel.samples_needed(0, hop) == 0


def test_silence_is_the_log_offset():
    examples = mel.log_mel_examples(np.zeros(16000, np.float32))
    np.testing.assert_allclose(examples, np.log(0.01), rtol=1e-6)
