"""Audio in: the one reader of every sound file sedjax decodes, and the mono/resampling step.

Training clips (sedjax.data.features), detection on any recording (sedjax.detect) and the
resample cache (sedjax.data.resample) all read with `read_audio`: soundfile (libsndfile) first;
a file it cannot decode (mp3 on an older libsndfile, say) goes to librosa.load, whose audioread
backend uses ffmpeg or the system's decoders. A file that cannot be used is an AudioError naming
the file, with the reason in a few words (`reason`, which the feature cache records per clip):
no such file, empty, cannot decode, truncated, non-finite samples.
"""

from __future__ import annotations

import os
import struct
import warnings

import numpy as np
import soundfile

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")  # what a folder of audio is searched for


class AudioError(OSError):
    """An audio file that cannot be used: str() is '<path>: <reason>'."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = os.fspath(path), reason


def _wav_declared_frames(path: str) -> int | None:
    """Sample frames the data chunk of a RIFF/WAVE header declares; None for other files and
    for streamed headers (size 0 or 0xFFFFFFFF: written before the length was known)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            return None
        block_align = 0
        while len(chunk := f.read(8)) == 8:
            kind, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if kind == b"fmt ":
                fmt = f.read(size)
                block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else 0
                f.seek(size & 1, 1)
            elif kind == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                f.seek(size + (size & 1), 1)  # chunks are padded to an even size
    return None


def _short(error: Exception, path: str) -> str:
    """A decoder's message without the full path it repeats (the error names the file)."""
    return str(error).strip().replace(path, os.path.basename(path)) or type(error).__name__


def _read_soundfile(path: str) -> tuple[np.ndarray, int, int]:
    """(samples, rate, frames the file declares) as soundfile decodes the whole file."""
    with soundfile.SoundFile(path) as f:
        declared, sr = f.frames, f.samplerate
        y = f.read(dtype="float32", always_2d=False)
    # libsndfile reads a cut WAV up to its end without a word and reports that length as its
    # frame count; only the header's data size tells that samples are missing
    return y, sr, max(declared, _wav_declared_frames(path) or 0)


def _read_librosa(path: str, first: Exception) -> tuple[np.ndarray, int]:
    """The fallback decoder for what soundfile cannot decode (`first`: soundfile's error)."""
    import librosa  # slow to import: only when soundfile fails

    try:
        with warnings.catch_warnings():  # librosa warns before its audioread fallback
            warnings.simplefilter("ignore")
            y, sr = librosa.load(path, sr=None, mono=False, dtype=np.float32)
    except Exception as second:  # noqa: BLE001 - every decoder failure means the same here
        raise AudioError(path, f"cannot decode: {_short(first, path)} (fallback decoder: "
                               f"{_short(second, path)})") from None
    y = np.asarray(y, np.float32)
    return (y if y.ndim == 1 else np.ascontiguousarray(y.T)), int(sr)  # librosa: (channels, n)


def read_audio(path) -> tuple[np.ndarray, int]:
    """Decodes a whole file: (float32 samples, (n,) mono or (n, channels), sample rate).

    Raises AudioError for a missing or empty file, one no decoder reads, one that holds no
    samples or fewer than its header declares, or samples that are not finite.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AudioError(path, "no such file")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "empty: 0 bytes")
    try:
        y, sr, declared = _read_soundfile(path)
    except Exception as first:  # noqa: BLE001 - soundfile raises several types for "cannot decode"
        (y, sr), declared = _read_librosa(path, first), 0
    if len(y) == 0:
        raise AudioError(path, "empty: 0 samples")
    if len(y) < declared:
        raise AudioError(path, f"truncated: header says {declared} samples, file holds {len(y)}")
    if not np.isfinite(y).all():
        raise AudioError(path, "cannot decode: samples that are NaN or infinite")
    return y, sr


def to_mono_resampled(waveform: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Any channel layout ((n,), or (n, channels) as read_audio gives it) at any rate -> mono
    float32 at target_rate (the channels' mean; librosa.resample with its default method)."""
    y = np.asarray(waveform, np.float32)
    if y.ndim == 2:
        y = y.mean(axis=1)
    if sample_rate != target_rate:
        import librosa

        y = librosa.resample(y, orig_sr=sample_rate, target_sr=target_rate)
    return np.ascontiguousarray(y, np.float32)


def load_audio(path, sample_rate: int) -> np.ndarray:
    """read_audio, then mono at sample_rate (AudioError when the file cannot be used)."""
    y, sr = read_audio(path)
    return to_mono_resampled(y, sr, sample_rate)


def duration(path) -> float | None:
    """The file's length in seconds from its header, without decoding; None when soundfile
    cannot open it."""
    try:
        return float(soundfile.info(os.fspath(path)).duration)
    except Exception:  # noqa: BLE001 - any failure: not known from the header
        return None


def probe(path) -> tuple[int, int] | None:
    """(sample rate, channels) from the file's header, without decoding; None when soundfile
    cannot open it (read_audio then decodes it otherwise or says why)."""
    try:
        info = soundfile.info(os.fspath(path))
    except Exception:  # noqa: BLE001 - any failure: not known from the header
        return None
    return int(info.samplerate), int(info.channels)
