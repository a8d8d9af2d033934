"""VGGish's log-mel front end (``mel_features.py`` and ``vggish_input.py`` of Google's AudioSet
release), in NumPy float64 as the original computes it.

16 kHz mono samples -> frames of 25 ms (400 samples) every 10 ms (160), each weighted by a
periodic Hann window -> the magnitude (not the power) of a 512-point real FFT (257 bins) -> 64
triangular mel bands over 125-7500 Hz on the HTK mel scale ``1127 ln(1 + f / 700)``, the DC
bin's weights zeroed -> ``log(mel + 0.01)`` -> examples of 96 frames (0.96 s). Only whole
frames and whole examples are kept (no padding), as ``mel_features.frame`` does.

Examples start every ``hop_seconds``: VGGish's own ``waveform_to_examples`` uses 0.96 s (the
examples tile the audio), Google's YouTube-8M pipeline (MediaPipe's ``feature_extraction.pbtxt``:
a 0.96 s window with -0.04 s overlap) 1.0 s, so that example ``i`` covers ``[i, i + 0.96)`` s,
beside the rgb frame of second ``i``. :data:`YT8M_EXAMPLE_HOP_SECONDS` is the default here.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000  # Hz
STFT_WINDOW_SECONDS = 0.025
STFT_HOP_SECONDS = 0.010
NUM_MEL_BINS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01  # log(mel + LOG_OFFSET) keeps the log finite
EXAMPLE_WINDOW_SECONDS = 0.96  # 96 frames
VGGISH_EXAMPLE_HOP_SECONDS = 0.96  # vggish_params.EXAMPLE_HOP_SECONDS (AudioSet)
YT8M_EXAMPLE_HOP_SECONDS = 1.0  # one example a second, as YouTube-8M's features are

WINDOW_SAMPLES = round(SAMPLE_RATE * STFT_WINDOW_SECONDS)  # 400
HOP_SAMPLES = round(SAMPLE_RATE * STFT_HOP_SECONDS)  # 160
FFT_LENGTH = 1 << (WINDOW_SAMPLES - 1).bit_length()  # 512: the next power of two
EXAMPLE_FRAMES = round(EXAMPLE_WINDOW_SECONDS / STFT_HOP_SECONDS)  # 96

_CHUNK_FRAMES = 4096  # STFT frames computed at a time (bounds the memory of long audio)


def hertz_to_mel(hertz: np.ndarray | float) -> np.ndarray:
    """The HTK mel scale: ``1127 ln(1 + f / 700)``."""
    return 1127.0 * np.log(1.0 + np.asarray(hertz, np.float64) / 700.0)


def mel_weight_matrix(
    num_mel_bins: int = NUM_MEL_BINS,
    num_spectrogram_bins: int = FFT_LENGTH // 2 + 1,
    sample_rate: int = SAMPLE_RATE,
    lower_hz: float = MEL_MIN_HZ,
    upper_hz: float = MEL_MAX_HZ,
) -> np.ndarray:
    """(num_spectrogram_bins, num_mel_bins) float64: triangles evenly spaced in mel, meeting
    zero at their neighbours' centres; the DC bin's row zeroed."""
    nyquist = sample_rate / 2.0
    if not 0.0 <= lower_hz < upper_hz <= nyquist:
        raise ValueError(f"mel range {lower_hz}-{upper_hz} Hz not within 0-{nyquist} Hz")
    bins_mel = hertz_to_mel(np.linspace(0.0, nyquist, num_spectrogram_bins))[:, None]  # (S, 1)
    edges = np.linspace(hertz_to_mel(lower_hz), hertz_to_mel(upper_hz), num_mel_bins + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]  # (M,) each
    rising = (bins_mel - lower) / (center - lower)  # (S, M)
    falling = (upper - bins_mel) / (upper - center)  # (S, M)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


_HANN = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WINDOW_SAMPLES) / WINDOW_SAMPLES)  # periodic
_MEL = mel_weight_matrix()


def num_frames(num_samples: int) -> int:
    """Whole 25 ms frames in ``num_samples`` samples."""
    return max(0, 1 + (num_samples - WINDOW_SAMPLES) // HOP_SAMPLES)


def log_mel_spectrogram(waveform: np.ndarray) -> np.ndarray:
    """(F, 64) float64 log-mel frames of 16 kHz mono samples ``waveform`` (T,)."""
    samples = np.asarray(waveform, np.float64).reshape(-1)
    count = num_frames(samples.size)
    out = np.empty((count, NUM_MEL_BINS), np.float64)
    if count == 0:
        return out
    frames = np.lib.stride_tricks.sliding_window_view(samples, WINDOW_SAMPLES)[::HOP_SAMPLES]
    for start in range(0, count, _CHUNK_FRAMES):
        chunk = frames[start : start + _CHUNK_FRAMES] * _HANN  # (C, 400)
        magnitude = np.abs(np.fft.rfft(chunk, FFT_LENGTH))  # (C, 257)
        out[start : start + len(chunk)] = np.log(magnitude @ _MEL + LOG_OFFSET)  # (C, 64)
    return out


def num_examples(num_frames: int, hop_seconds: float = YT8M_EXAMPLE_HOP_SECONDS) -> int:
    """Whole 96-frame examples in ``num_frames`` log-mel frames, one every ``hop_seconds``."""
    hop = _hop_frames(hop_seconds)
    return max(0, 1 + (num_frames - EXAMPLE_FRAMES) // hop)


def samples_needed(examples: int, hop_seconds: float = YT8M_EXAMPLE_HOP_SECONDS) -> int:
    """The samples that the first ``examples`` examples are computed from."""
    if examples <= 0:
        return 0
    last_frame = (examples - 1) * _hop_frames(hop_seconds) + EXAMPLE_FRAMES - 1
    return last_frame * HOP_SAMPLES + WINDOW_SAMPLES


def _hop_frames(hop_seconds: float) -> int:
    hop = round(hop_seconds / STFT_HOP_SECONDS)
    if hop < 1:
        raise ValueError(f"example hop of {hop_seconds} s is under one 10 ms frame")
    return hop


def log_mel_examples(
    waveform: np.ndarray,
    hop_seconds: float = YT8M_EXAMPLE_HOP_SECONDS,
    max_examples: int | None = None,
) -> np.ndarray:
    """(N, 96, 64) float32 VGGish input examples of 16 kHz mono ``waveform`` (T,): one every
    ``hop_seconds``, whole examples only, at most ``max_examples``."""
    hop = _hop_frames(hop_seconds)
    samples = np.asarray(waveform).reshape(-1)
    if max_examples is not None:  # only the samples the first examples need
        samples = samples[: samples_needed(max_examples, hop_seconds)]
    log_mel = log_mel_spectrogram(samples)  # (F, 64)
    count = num_examples(len(log_mel), hop_seconds)
    if count == 0:
        return np.zeros((0, EXAMPLE_FRAMES, NUM_MEL_BINS), np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(log_mel, EXAMPLE_FRAMES, axis=0)
    examples = windows[: (count - 1) * hop + 1 : hop]  # (N, 64, 96)
    return np.ascontiguousarray(examples.transpose(0, 2, 1), np.float32)  # (N, 96, 64)
