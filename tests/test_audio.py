"""sedjax.data.audio: the one reader (soundfile, then librosa), its errors, mono/resampling.

The bad clips of every kind and the feature cache's handling of them: test_unreadable_audio.py.
"""

import numpy as np
import pytest
import soundfile

from sedjax.data import audio


def tone(n: int, channels: int, seed: int = 0) -> np.ndarray:
    """Noisy samples on the 16-bit grid, (n,) or (n, channels), so PCM_16 holds them exactly."""
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (n, channels))
    x = (np.round(x * 32768) / 32768).astype(np.float32)
    return x[:, 0] if channels == 1 else x


@pytest.mark.parametrize("channels", [1, 2])
def test_wav_samples_are_soundfiles_own(tmp_path, channels):
    path = tmp_path / "a.wav"
    soundfile.write(path, tone(8000, channels), 16000, subtype="PCM_16")
    y, sr = audio.read_audio(path)
    want, _ = soundfile.read(path, dtype="float32", always_2d=False)
    assert sr == 16000 and y.dtype == np.float32 and y.shape == want.shape
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(y, tone(8000, channels))


def test_what_soundfile_cannot_decode_goes_to_librosa(tmp_path, monkeypatch):
    path = tmp_path / "b.WAV"
    y = tone(4000, 2, seed=1)
    soundfile.write(path, y, 8000, subtype="PCM_16")

    def broken(path):
        raise RuntimeError("Format not recognised")

    monkeypatch.setattr(audio, "_read_soundfile", broken)  # as with mp3 on an old libsndfile
    got, sr = audio.read_audio(path)
    assert sr == 8000 and got.shape == y.shape  # librosa's (channels, n) turned to (n, channels)
    np.testing.assert_allclose(got, y, atol=1e-4)


def test_an_undecodable_file_names_itself_and_both_decoders_reasons(tmp_path):
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"definitely not audio" * 10)
    with pytest.raises(audio.AudioError) as err:
        audio.read_audio(path)
    e = err.value
    assert e.path == str(path) and str(e).startswith(f"{path}: cannot decode: ")
    assert e.reason.startswith("cannot decode: ") and "(fallback decoder: " in e.reason
    assert str(tmp_path) not in e.reason  # the reason says why; the path says which file


@pytest.mark.parametrize("make, reason", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b""), "empty: 0 bytes"),
    (lambda p: soundfile.write(p, np.zeros(0, np.float32), 8000), "empty: 0 samples"),
    (lambda p: soundfile.write(p, np.array([0.1, np.nan], np.float32), 8000, subtype="FLOAT"),
     "cannot decode: samples that are NaN or infinite"),
])
def test_each_failure_is_an_audio_error_with_its_reason(tmp_path, make, reason):
    path = tmp_path / "x.wav"
    make(path)
    with pytest.raises(OSError) as err:  # AudioError is an OSError: IOError handlers catch it
        audio.read_audio(path)
    assert isinstance(err.value, audio.AudioError) and err.value.reason == reason
    assert str(err.value) == f"{path}: {reason}"


def test_mono_and_resampling(tmp_path):
    stereo = tone(16000, 2, seed=2)
    mono = audio.to_mono_resampled(stereo, 16000, 16000)
    assert mono.dtype == np.float32 and mono.flags.c_contiguous
    np.testing.assert_array_equal(mono, stereo.mean(axis=1))
    half = audio.to_mono_resampled(stereo, 16000, 8000)
    assert len(half) == 8000
    path = tmp_path / "s.wav"
    soundfile.write(path, stereo, 16000, subtype="PCM_16")
    np.testing.assert_array_equal(audio.load_audio(path, 8000), half)


def test_probe_reads_the_header_only(tmp_path):
    path = tmp_path / "p.flac"
    soundfile.write(path, tone(2000, 2), 22050)
    assert audio.probe(path) == (22050, 2)
    (tmp_path / "bad.wav").write_bytes(b"nothing")
    assert audio.probe(tmp_path / "bad.wav") is None
