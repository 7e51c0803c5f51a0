"""Log-mel features: librosa reference, batched jnp frontend, memmap cache, stats.

Two recipes of features, chosen by the config's `features` section: the seed's (natural log of
Slaney mel magnitudes, per-band mean/std over the training clips) and DESED_task's (HTK mel
magnitudes of a symmetric Hamming window, 20 log10 clamped to [-50, 80] dB, then each clip
min-max scaled to [-1, 1] over its frames and bands: `scaler = 'instance_minmax'`, applied
here, so the cache holds the final features). `pad_to_num_frames` (DESED_task's pad_audio):
every clip zero-padded or cut to (num_frames - 1) * hop_length samples before its STFT, so
that a short clip's last frames, the frames of the silence after it and the scaler's min/max
over them are DESED_task's; off (the seed's), a clip ends where its audio ends (reflection at
its own end) and the frames after it are zero.
"""

from __future__ import annotations

import concurrent.futures as futures
import functools
import hashlib
import json
import multiprocessing
import os
import pathlib
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import scipy.signal
from absl import logging
from tqdm import tqdm

from sedjax.data import audio, pipeline
from sedjax.system import files, sharding

# Feature-config fields that change the numbers (the others are speed knobs).
_KEY_FIELDS = ("sample_rate", "n_fft", "win_length", "hop_length", "window", "center",
               "pad_mode", "spectrogram", "n_mels", "fmin", "fmax", "htk", "mel_norm",
               "log_eps", "num_frames", "frontend", "window_periodic", "log", "db_amin",
               "db_range", "scaler")


def num_workers(config) -> int:
    """Worker count from the config (0 = all cores)."""
    return config.num_workers or os.cpu_count() or 1


# ---------------------------------------------------------------------------- frames
def num_valid_frames(num_samples: int, config) -> int:
    """Frames a centered STFT gives for `num_samples`, capped at config.num_frames."""
    return min(config.num_frames, 1 + num_samples // config.hop_length)


def padded_samples(config) -> int | None:
    """With features.pad_to_num_frames, the length every clip is zero-padded or cut to before
    its STFT, (num_frames - 1) * hop_length samples (DESED_task: audio_max_len * fs, 10 s at
    16 kHz for 626 frames); None when off. The clip's valid frames stay its own
    (num_valid_frames): only the feature values change."""
    if not config.get("pad_to_num_frames", False):
        return None
    return (config.num_frames - 1) * config.hop_length


# ---------------------------------------------------------------------------- librosa reference
@functools.lru_cache(maxsize=8)
def _window(name: str, win_length: int, periodic: bool = True) -> np.ndarray:
    # fftbins=True: periodic (the seed's); False: symmetric (torch's periodic=False, DESED's)
    return scipy.signal.get_window(name, win_length, fftbins=periodic)


def window(config) -> np.ndarray:
    """The analysis window of config (periodic unless window_periodic is False)."""
    return _window(config.window, config.win_length, bool(config.window_periodic))


def _log_and_scale(mel, valid, config, xp):
    """Log compression then the per-clip scaler: (frames, n_mels) -> same; `valid` (frames, 1)
    marks the frames that hold audio (the scaler reads only those); xp: numpy or jax.numpy."""
    if config.log == "db":  # torchaudio AmplitudeToDB(stype='amplitude', amin) + clamp
        lo, hi = config.db_range
        out = xp.clip(20.0 * xp.log10(xp.maximum(mel, config.db_amin)), lo, hi)
    else:
        out = xp.log(mel + config.log_eps)
    if config.scaler == "instance_minmax":  # DESED_task's TorchScaler('instance', 'minmax')
        big = xp.asarray(np.inf, out.dtype)
        low = xp.min(xp.where(valid, out, big))
        high = xp.max(xp.where(valid, out, -big))
        out = (out - low) / (high - low + 1e-8) * 2.0 - 1.0  # TorchScaler: `out * 2 - 1`
    return out


@functools.lru_cache(maxsize=8)
def _mel_basis(sr, n_fft, n_mels, fmin, fmax, htk, norm) -> np.ndarray:
    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                               htk=htk, norm=norm)


def mel_basis(config) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) mel filterbank exactly as librosa builds it."""
    norm = None if config.mel_norm in (None, "none") else config.mel_norm
    return _mel_basis(config.sample_rate, config.n_fft, config.n_mels, config.fmin,
                      config.fmax, config.htk, norm)


def log_mel(waveform: np.ndarray, sample_rate: int, config) -> np.ndarray:
    """One clip -> (num_frames, n_mels) float32 log-mel via librosa; zeros past the clip's end.

    `config`: the feature settings (a config's `features` section, e.g. configs/baseline.py's).
    """
    y = audio.to_mono_resampled(waveform, sample_rate, config.sample_rate)
    fixed = padded_samples(config)
    if fixed is not None:  # DESED_task's pad_audio: zeros after a short clip, a long one cut
        y = np.pad(y[:fixed], (0, max(0, fixed - len(y))))
    stft = librosa.stft(y, n_fft=config.n_fft, hop_length=config.hop_length,
                        win_length=config.win_length,
                        window=window(config),
                        center=config.center, pad_mode=config.pad_mode)
    spec = np.abs(stft)
    if config.spectrogram == "power":
        spec = spec ** 2
    mel = (mel_basis(config) @ spec).T[: config.num_frames]
    mel = _log_and_scale(mel, np.ones((len(mel), 1), bool), config, np)
    out = np.zeros((config.num_frames, config.n_mels), np.float32)
    out[: len(mel)] = mel
    return out


# ---------------------------------------------------------------------------- jnp frontend
def make_jax_frontend(config) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Returns a jitted fn (waves (B, S) f32, lengths (B,) i32) -> (B, num_frames, n_mels).

    Equal to `log_mel` row by row, zeros past each clip's last frame included.
    The same arithmetic as `log_mel`: reflect/zero padding at each clip's own end, framing,
    the periodic window zero-padded to n_fft, rfft, magnitude, librosa's mel matrix, log.
    """
    n_fft, hop, frames = config.n_fft, config.hop_length, config.num_frames
    half = n_fft // 2 if config.center else 0
    win = np.zeros(n_fft, np.float32)
    lpad = (n_fft - config.win_length) // 2  # librosa centres the short window in n_fft
    win[lpad: lpad + config.win_length] = window(config)
    basis = jnp.asarray(mel_basis(config).T, jnp.float32)  # (bins, mels)
    # Two gathers: the padded signal from a per-sample index map (the padding depends on each
    # clip's own length), then the frames from fixed positions in it. Indexing every
    # (frame, tap) through the padding arithmetic instead costs as much as the FFT on CPU.
    taps = np.arange(frames)[:, None] * hop + np.arange(n_fft)[None, :]
    taps = jnp.asarray(taps, jnp.int32)  # (frames, n_fft) positions in the padded signal
    padded_len = (frames - 1) * hop + n_fft
    win = jnp.asarray(win)
    reflect = config.pad_mode == "reflect"
    fixed = padded_samples(config)

    def one_clip(wave, length):
        if fixed is not None:  # the clip as DESED_task pads or cuts it: zeros after its end
            wave = jnp.where(jnp.arange(wave.shape[0]) < jnp.minimum(length, fixed), wave, 0.0)
            length = jnp.int32(fixed)
        p = jnp.arange(padded_len, dtype=jnp.int32) - half  # sample index of each padded slot
        if reflect:  # numpy 'reflect' (edge sample not repeated), as np.pad does it
            period = jnp.maximum(2 * (length - 1), 1)
            q = jnp.mod(p, period)
            p = jnp.where(q >= length, period - q, q)
            valid = jnp.ones_like(p, bool)
        else:
            valid = (p >= 0) & (p < length)
        padded = jnp.where(valid, wave[jnp.clip(p, 0, wave.shape[0] - 1)], 0.0)
        x = padded[taps] * win
        spec = jnp.abs(jnp.fft.rfft(x, axis=-1))
        if config.spectrogram == "power":
            spec = spec * spec
        # HIGHEST: accelerators default to reduced-precision matmuls, which would break 1e-4
        mel = jnp.matmul(spec, basis, precision=jax.lax.Precision.HIGHEST)
        valid_frames = jnp.minimum(frames, 1 + length // hop)
        valid = jnp.arange(frames)[:, None] < valid_frames
        logmel = _log_and_scale(mel, valid, config, jnp)
        return jnp.where(valid, logmel, 0.0)

    @jax.jit
    def frontend(waves, lengths):
        return jax.vmap(one_clip)(waves, lengths)

    return frontend


def buffer_samples(config) -> int:
    """Samples of a clip that the kept frames can read (longer clips are cut here)."""
    return (config.num_frames - 1) * config.hop_length + config.n_fft // 2


# ---------------------------------------------------------------------------- cache
def cache_key(config, filenames: Sequence[str], source: str = "") -> str:
    """Hash of the feature settings and the clip list (and `source`, what made the audio when
    the same names can hold other audio: a generated dataset's settings): any change gives a
    new cache file."""
    fields = {k: config[k] for k in _KEY_FIELDS}
    if config.scaler == "instance_minmax":  # scaled to [-1, 1]; caches of [0, 1] not reused
        fields["scaler_range"] = [-1, 1]
    if padded_samples(config) is not None:  # only when on: the seed's keys stay as they were
        fields["pad_to_num_frames"] = True
    key = [fields, list(filenames)] + ([source] if source else [])
    blob = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _librosa_item(path, config):
    """(log-mel, valid frames, None) of one clip, or (None, 0, reason) when it cannot be read."""
    try:
        y = audio.load_audio(path, config.sample_rate)
    except audio.AudioError as e:
        return None, 0, e.reason
    return log_mel(y, config.sample_rate, config), num_valid_frames(len(y), config), None


def _fill_librosa(paths, out, lengths, config, bar) -> dict[int, str]:
    workers = num_workers(config)
    errors = {}
    # spawn: forking a process that runs JAX's threads can deadlock
    with futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")
                                     ) as pool:
        for i, (mel, n, reason) in enumerate(pool.map(_librosa_item, paths,
                                                      [config] * len(paths), chunksize=4)):
            if reason is None:
                out[i], lengths[i] = mel, n
            else:
                errors[i] = reason
            bar.update(1)
    return errors


def _fill_jax(paths, out, lengths, config, bar) -> dict[int, str]:
    frontend = make_jax_frontend(config)
    size, batch = buffer_samples(config), config.batch_size
    errors = {}

    def decode(path):
        try:
            y = audio.load_audio(path, config.sample_rate)
        except audio.AudioError as e:
            return np.zeros(0, np.float32), 0, e.reason
        return y[:size], len(y), None

    with futures.ThreadPoolExecutor(num_workers(config)) as pool:
        decoded = pool.map(decode, paths)  # decodes ahead while the device computes
        pending = None
        for start in range(0, len(paths), batch):
            stop = min(start + batch, len(paths))
            waves = np.zeros((stop - start, size), np.float32)
            lens = np.zeros(stop - start, np.int32)
            for j in range(stop - start):
                y, n, reason = next(decoded)
                waves[j, : len(y)], lens[j] = y, len(y)
                lengths[start + j] = num_valid_frames(n, config)
                if reason is not None:
                    errors[start + j] = reason
            result = frontend(waves, lens)  # async: the device works while we decode on
            if pending is not None:
                _write(out, *pending, bar)
            pending = (start, result)
        if pending is not None:
            _write(out, *pending, bar)
    return errors


def _write(out, start, result, bar):
    result = np.asarray(result)
    out[start: start + len(result)] = result
    bar.update(len(result))


def share_rows(num_rows: int, index: int, count: int) -> tuple[int, int]:
    """Rows [start, stop) that process `index` of `count` featurizes (contiguous, near equal)."""
    return index * num_rows // count, (index + 1) * num_rows // count


def _share_files(stem: str, start: int, stop: int, count: int) -> tuple[pathlib.Path, ...]:
    """(features, frames, errors) files of one share; a single process keeps the plain names
    (<split>-<hash>.npy), so caches written before process shares existed stay valid."""
    base = stem if count == 1 else f"{stem}.rows{start}-{stop}"
    return tuple(pathlib.Path(base + ext) for ext in (".npy", ".frames.npy", ".errors.json"))


def _complete(share: Sequence[pathlib.Path]) -> bool:
    # the features file is renamed into place last; an errors file is absent only in a cache
    # written before unreadable clips were recorded (when any of them stopped the build)
    return share[0].exists() and share[1].exists()


def _build_share(name: str, paths, filenames, first_row: int, share, config) -> None:
    """Featurizes `paths` (rows first_row...) into the share's files, each written atomically."""
    feats_path, frames_path, errors_path = share
    lengths = np.zeros(len(paths), np.int32)
    fill = _fill_jax if config.frontend == "jax" else _fill_librosa
    # The main file appears under its name only when complete (a killed build leaves *.partial).
    with files.atomic_path(feats_path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                        shape=(len(paths), config.num_frames, config.n_mels))
        _reserve_space(tmp)
        with tqdm(total=len(paths), desc=f"log-mel {name} ({config.frontend})", unit="clip",
                  disable=None) as bar:
            errors = fill(list(paths), out, lengths, config, bar)
        for i in errors:  # a clip that cannot be read: zero features, no valid frame
            out[i], lengths[i] = 0.0, 0
        out.flush()
        del out
        files.save_npy(frames_path, lengths)
        rows = [{"row": first_row + i, "filename": filenames[i], "reason": errors[i]}
                for i in sorted(errors)]
        files.write_text(errors_path, json.dumps(rows, indent=1) + "\n")
    logging.info("features %s: wrote %s (%d of %d clips unreadable)", name, feats_path,
                 len(errors), len(paths))


def _reserve_space(path: pathlib.Path) -> None:
    """Allocates the disk blocks of the (sparse) file at `path` now.

    Writing a memmap page that the disk has no room for kills the process with SIGBUS, without
    a word; allocated up front, a full disk is an OSError (ENOSPC) here instead, which the
    command reports in one line. Filesystems that cannot preallocate are written as before.
    """
    if not hasattr(os, "posix_fallocate"):  # not on macOS
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as e:
        if e.errno in files.DISK_FULL:
            raise
        logging.info("features: cannot preallocate %s (%s)", path, e.strerror)
    finally:
        os.close(fd)


def _read_shares(shares) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Every share's features (read-only memmaps, joined without a copy), frames and errors."""
    for share in shares:
        if not _complete(share):
            raise FileNotFoundError(f"{share[0]}: feature share not found; every process of "
                                    "the run builds its own share before any reads them")
    parts = [np.load(share[0], mmap_mode="r") for share in shares]
    frames = np.concatenate([np.load(share[1]) for share in shares]).astype(np.int32)
    errors = {}
    for share in shares:
        if share[2].exists():
            errors.update({int(e["row"]): e["reason"] for e in json.loads(share[2].read_text())})
    feats = parts[0] if len(parts) == 1 else pipeline.join_rows(parts)
    return feats, frames, errors


def extract_split(name: str, paths: Sequence[pathlib.Path], filenames: Sequence[str], config,
                  cache_dir, process_index: int | None = None, process_count: int | None = None,
                  source: str = "") -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Features of a split, from the cache when complete; else built and cached atomically.

    Process `process_index` of `process_count` (default: this JAX process of all of them)
    featurizes only its contiguous share of the rows into files of its own, waits for the
    others, then reads every share. Returns (features (N, num_frames, n_mels) float32
    un-normalized: a read-only memmap, or a row view joining one per share; valid frames (N,)
    int32; {row: reason} of the clips that cannot be read, whose rows are zero) - the same on
    every process. source: see cache_key.
    """
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    cache_dir = pathlib.Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = str(cache_dir / f"{name}-{cache_key(config, filenames, source)}")
    whole = _share_files(stem, 0, len(paths), 1)
    if _complete(whole):  # built before in one process: every process reads it
        logging.info("features %s: reusing %s", name, whole[0])
        return _read_shares([whole])
    bounds = [share_rows(len(paths), k, count) for k in range(count)]
    shares = [_share_files(stem, a, b, count) for a, b in bounds]
    start, stop = bounds[index]
    if stop > start and not _complete(shares[index]):
        _build_share(name, paths[start:stop], filenames[start:stop], start, shares[index],
                     config)
    elif stop > start:
        logging.info("features %s: reusing %s", name, shares[index][0])
    sharding.sync(f"features {name}")  # every share is complete once all processes got here
    return _read_shares([s for s, (a, b) in zip(shares, bounds) if b > a])


# ---------------------------------------------------------------------------- normalization
def band_stats(splits: Sequence[tuple[np.ndarray, np.ndarray]], chunk: int = 256
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std over the valid frames of the given (features, frames) splits."""
    total, sum_, sum_sq = 0, 0.0, 0.0
    for feats, lengths in splits:
        for start in range(0, len(feats), chunk):
            x = np.asarray(feats[start: start + chunk], np.float64)
            mask = np.arange(x.shape[1])[None, :] < lengths[start: start + chunk, None]
            x = x[mask]
            total += len(x)
            sum_ = sum_ + x.sum(0)
            sum_sq = sum_sq + (x * x).sum(0)
    mean = sum_ / total
    std = np.sqrt(np.maximum(sum_sq / total - mean * mean, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-8).astype(np.float32)


def normalize(features, frames, mean, std) -> jax.Array:
    """(x - mean) / std on valid frames, zero after a clip's end (the seed's zero padding).

    Runs inside the jitted steps (jnp), so features stay un-normalized in the cache.
    """
    x = (features - mean) / std
    valid = jnp.arange(x.shape[1])[None, :, None] < jnp.asarray(frames)[:, None, None]
    return jnp.where(valid, x, 0.0)
