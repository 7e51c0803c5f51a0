"""Log-mel features: librosa reference recipe, jnp frontend, cache behaviour, statistics."""

import os
import pathlib
import subprocess
import sys
import time

import librosa
import numpy as np
import pytest
import scipy.signal
import soundfile

from configs import baseline
from sedjax.data import audio, features


def seed_recipe(y: np.ndarray) -> np.ndarray:
    """The seed's recipe (configs/baseline.py) written out with librosa/scipy (float64), first
    500 frames."""
    window = scipy.signal.get_window("hamming", 1764)  # periodic = asymmetric
    spec = np.abs(librosa.stft(y.astype(np.float64), n_fft=2048, hop_length=882, win_length=1764,
                               window=window, center=True, pad_mode="reflect"))
    mel = librosa.filters.mel(sr=44100, n_fft=2048, n_mels=64, fmin=0, fmax=22050, htk=False,
                              norm="slaney", dtype=np.float64)
    return np.log(mel @ spec + np.spacing(1)).T[:500]


def signal(n: int, seed: int = 0, sr: int = 44100) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    return (0.05 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * 440 * t)
            + 0.2 * np.sin(2 * np.pi * 3000 * t) * (t > 2) * (t < 6)).astype(np.float32)


@pytest.fixture(scope="module")
def cfg():
    return baseline.get_config().features


def test_log_mel_equals_the_seed_recipe(cfg):
    y = signal(441000)
    out = features.log_mel(y, 44100, cfg)
    assert out.shape == (500, 64) and out.dtype == np.float32
    assert np.abs(out - seed_recipe(y)).max() < 1e-4


def test_log_mel_needs_the_feature_config():
    with pytest.raises(TypeError):  # no default config: the library does not read configs/
        features.log_mel(signal(4410), 44100)


def test_log_mel_converts_rate_and_channels(cfg):
    y = signal(441000)
    stereo_22k = np.stack([librosa.resample(y, orig_sr=44100, target_sr=22050)] * 2, axis=1)
    out = features.log_mel(stereo_22k, 22050, cfg)
    back = librosa.resample(stereo_22k.mean(1), orig_sr=22050, target_sr=44100)
    assert np.abs(out - seed_recipe(back)).max() < 1e-4


def test_short_clip_is_zero_after_its_frames(cfg):
    y = signal(300000)
    out = features.log_mel(y, 44100, cfg)
    n = features.num_valid_frames(300000, cfg)
    assert n == 1 + 300000 // 882
    assert np.abs(out[:n] - seed_recipe(y)[:n]).max() < 1e-4
    assert not out[n:].any()


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_jax_frontend_equals_librosa(cfg, pad_mode):
    cfg = cfg.copy_and_resolve_references()
    cfg.pad_mode = pad_mode
    lengths = [441000, 300000, 445000]  # full, short, longer than 10 s
    size = features.buffer_samples(cfg)
    waves = np.zeros((3, size), np.float32)
    refs = []
    for i, n in enumerate(lengths):
        y = signal(n, seed=i)
        waves[i, : min(n, size)] = y[:size]
        refs.append(features.log_mel(y, 44100, cfg))
    out = np.asarray(features.make_jax_frontend(cfg)(waves, np.minimum(lengths, size)))
    for i, n in enumerate(lengths):
        valid = features.num_valid_frames(n, cfg)
        assert np.abs(out[i, :valid] - refs[i][:valid]).max() < 1e-4


def write_clips(folder: pathlib.Path, n: int) -> list[pathlib.Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"clip{i}.wav"
        sr = 44100 if i % 2 else 22050  # some clips need resampling
        length = sr * (10 if i % 3 else 7)  # some are shorter
        soundfile.write(path, signal(length, seed=i, sr=sr), sr, subtype="PCM_16")
        paths.append(path)
    return paths


@pytest.mark.parametrize("frontend", ["jax", "librosa"])
def test_cache_is_reused_and_rebuilt_on_config_change(tmp_path, cfg, frontend):
    cfg = cfg.copy_and_resolve_references()
    cfg.frontend, cfg.num_workers, cfg.batch_size = frontend, 2, 2
    paths = write_clips(tmp_path / "audio", 5)
    names = [p.name for p in paths]
    feats, frames, errors = features.extract_split("weak", paths, names, cfg, tmp_path / "cache")
    assert errors == {}
    assert feats.shape == (5, 500, 64) and isinstance(feats, np.memmap)
    short = 1 + 7 * 44100 // 882
    np.testing.assert_array_equal(frames, [short, 500, 500, short, 500])
    for i in (0, 1):
        y = audio.load_audio(paths[i], cfg.sample_rate)
        np.testing.assert_allclose(feats[i], features.log_mel(y, 44100, cfg), atol=1e-4)
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    stamp = os.stat(tmp_path / "cache" / cached[0]).st_mtime_ns
    again, _, _ = features.extract_split("weak", paths, names, cfg, tmp_path / "cache")
    assert os.stat(tmp_path / "cache" / cached[0]).st_mtime_ns == stamp  # reused
    np.testing.assert_array_equal(again, feats)
    cfg.n_mels = 40
    changed, _, _ = features.extract_split("weak", paths, names, cfg, tmp_path / "cache")
    assert changed.shape == (5, 500, 40)
    assert len(list((tmp_path / "cache").glob("weak-*.npy"))) == 4  # 2 x (features + frames)


def test_killed_cache_build_leaves_nothing_that_looks_complete(tmp_path, cfg):
    paths = write_clips(tmp_path / "audio", 8)
    stuck = tmp_path / "stuck"
    code = f"""
import pathlib, time
from configs import baseline
from sedjax.data import audio, features
cfg = baseline.get_config().features
# threads only: nothing outlives the kill
cfg.frontend, cfg.batch_size, cfg.num_workers = 'jax', 1, 1
read = audio.load_audio
def load_then_hang(path, sample_rate, calls=[]):
    # the kill must land mid-build, however fast this machine is: hang at the 5th clip
    calls.append(path)
    if len(calls) == 5:
        pathlib.Path({str(stuck)!r}).touch()
        time.sleep(600)
    return read(path, sample_rate)
audio.load_audio = load_then_hang
paths = {[str(p) for p in paths]!r}
features.extract_split('weak', paths, paths, cfg, {str(tmp_path / 'cache')!r})
"""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=pathlib.Path(__file__).parents[1])
    deadline = time.time() + 300
    while time.time() < deadline and not stuck.exists() and proc.poll() is None:
        time.sleep(0.1)
    assert stuck.exists(), "the featurizing process never reached its 5th clip"
    proc.kill()
    proc.wait()
    left = [p.name for p in (tmp_path / "cache").iterdir()]
    assert any(name.endswith(".partial") for name in left)
    assert not [n for n in left if n.endswith(".npy")]  # nothing that reads as complete
    cfg = cfg.copy_and_resolve_references()
    cfg.frontend, cfg.num_workers = "librosa", 2
    feats, _, _ = features.extract_split("weak", paths[:3], [str(p) for p in paths[:3]], cfg,
                                         tmp_path / "cache2")
    assert feats.shape[0] == 3


def test_band_stats_count_each_valid_frame_once():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 10, 4)).astype(np.float32)
    b = rng.standard_normal((2, 10, 4)).astype(np.float32) + 5
    fa, fb = np.array([10, 4, 7]), np.array([10, 2])
    mean, std = features.band_stats([(a, fa), (b, fb)], chunk=2)
    frames = np.concatenate([a[0], a[1, :4], a[2, :7], b[0], b[1, :2]])
    np.testing.assert_allclose(mean, frames.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, frames.std(0), rtol=1e-4)
    x = np.asarray(features.normalize(a, fa, mean, std))
    np.testing.assert_allclose(x[1, :4], (a[1, :4] - mean) / std, rtol=1e-5)
    assert not x[1, 4:].any() and not x[2, 7:].any()


def test_undecodable_audio_names_the_file(tmp_path, cfg):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    with pytest.raises(IOError, match="bad.wav"):
        audio.load_audio(bad, cfg.sample_rate)


def desed_task_recipe(y: np.ndarray) -> np.ndarray:
    """DESED_task's features written out from torchaudio's definitions in numpy (float64):
    MelSpectrogram(16 kHz, n_fft = win = 2048, hop 256, symmetric Hamming, power 1, center,
    reflect, 128 HTK triangles 0-8 kHz without normalization), AmplitudeToDB(amin 1e-5)
    clamped to [-50, 80], TorchScaler('instance', 'minmax'): to [-1, 1]."""
    n_fft, hop, sr, n_mels = 2048, 256, 16000, 128
    n = np.arange(n_fft)
    window = 0.54 - 0.46 * np.cos(2 * np.pi * n / (n_fft - 1))  # periodic=False
    padded = np.pad(y.astype(np.float64), n_fft // 2, mode="reflect")
    frames = 1 + len(y) // hop
    spec = np.abs(np.fft.rfft(np.stack([padded[i * hop: i * hop + n_fft] * window
                                        for i in range(frames)]), axis=-1))  # (T, bins)
    # torchaudio.functional.melscale_fbanks(mel_scale='htk', norm=None)
    freqs = np.linspace(0, sr // 2, n_fft // 2 + 1)
    mel = np.linspace(2595 * np.log10(1 + 0 / 700), 2595 * np.log10(1 + 8000 / 700), n_mels + 2)
    f_pts = 700 * (10 ** (mel / 2595) - 1)
    slopes = f_pts[None, :] - freqs[:, None]
    diff = np.diff(f_pts)
    fb = np.maximum(0, np.minimum(-slopes[:, :-2] / diff[:-1], slopes[:, 2:] / diff[1:]))
    db = np.clip(20 * np.log10(np.maximum(spec @ fb, 1e-5)), -50, 80)
    return (db - db.min()) / (db.max() - db.min() + 1e-8) * 2 - 1


@pytest.fixture(scope="module")
def desed_cfg():
    from configs import desed_baseline
    return desed_baseline.get_config().features


def test_desed_features_equal_desed_tasks_recipe(desed_cfg):
    y = signal(160000, seed=3, sr=16000)
    y[:16000] = 0.0  # 1 s of silence: below DESED's -50 dB floor, where the clamp acts
    want = desed_task_recipe(y)
    assert want.shape == (626, 128)
    got = features.log_mel(y, 16000, desed_cfg)
    np.testing.assert_allclose(got, want, atol=2e-4)
    assert got.min() == -1.0 and abs(got.max() - 1.0) < 1e-6


@pytest.mark.parametrize("pad", [True, False])
def test_desed_jax_frontend_equals_librosa_with_short_clip(desed_cfg, pad):
    cfg = desed_cfg.copy_and_resolve_references()
    cfg.pad_to_num_frames = pad
    waves = np.zeros((3, features.buffer_samples(cfg)), np.float32)
    clips = [signal(n, seed=4 + i, sr=16000) for i, n in enumerate((160000, 100000, 170000))]
    for i, y in enumerate(clips):
        waves[i, :min(len(y), waves.shape[1])] = y[:waves.shape[1]]
    got = np.asarray(features.make_jax_frontend(cfg)(waves, np.array([160000, 100000, 170000])))
    for row, y in zip(got, clips):
        np.testing.assert_allclose(row, features.log_mel(y, 16000, cfg), atol=2e-4)
    if pad:  # DESED_task: the clip padded with zeros to 10 s; their frames are its minimum
        assert (got[1, 395:] == -1.0).all() and got[1, :391].min() > -1.0
        cut = features.log_mel(clips[2][:160000], 16000, cfg)  # a long clip: its first 10 s
        np.testing.assert_allclose(got[2], cut, atol=2e-4)
    else:  # the scaler reads the clip's own frames only: zeros after the short clip's 391
        assert (got[1, 391:] == 0).all() and got[1, :391].max() == pytest.approx(1.0, abs=1e-5)
        assert got[1, :391].min() == pytest.approx(-1.0, abs=1e-5)
    assert features.num_valid_frames(100000, cfg) == 391  # the clip's own frames either way
