"""Audio at another rate resampled once into a cache folder, as DESED_task writes its *_16k copies.

With `data.resample_cache` on, every clip whose file is not mono at the features' rate is
decoded, mixed down, resampled (librosa, as DESED_task's resample_folder.py does) and written
as a float32 WAV under `<workdir>/audio_<rate>/<split>/`, once; later runs and other feature
settings read the copy. A file that cannot be read is left where it is: the
feature stage logs it as it logs any unreadable clip.

`data.resample_copy = 'desed_task'` writes DESED_task's copy instead, sample for sample: every
file at another rate has each channel resampled (librosa.resample) and rounded to 16 bits as
torchaudio.save writes it (round to nearest, clipped), the channels kept (the feature stage
mixes them down, as DESED_task's read_audio does), under `<workdir>/audio_<rate>_desed_task/`;
a file at the features' rate is read as it is, as DESED_task reads its *_16k folders. The
rounding is a small noise (half a step of 2^-15), yet the float copy's features differ from
DESED_task's by up to 0.1 of the [-1, 1] scale on generated clips (their quietest bands, near
the -50 dB floor) and by 0.6-0.7 on recordings that the resampler pushes past full scale,
which DESED_task's copy clips (tests/parity/test_features.py).
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import pathlib

import numpy as np
import soundfile
from absl import logging
from tqdm import tqdm

from sedjax.data import audio, dataset, features
from sedjax.system import files

FLOAT, DESED_TASK = "float", "desed_task"
COPIES = (FLOAT, DESED_TASK)  # data.resample_copy


def _needs_resampling(path: pathlib.Path, rate: int, copy: str = FLOAT) -> bool:
    """Whether the clip's header says it is not mono at `rate` (copy 'desed_task': not at
    `rate`; several channels are read as they are)."""
    # a header soundfile cannot read: left as it is, the feature stage decodes it or reports it
    found = audio.probe(path)
    if found is None:
        return False
    return found[0] != rate if copy == DESED_TASK else found != (rate, 1)


def desed_task_copy(path, rate: int) -> np.ndarray:
    """What DESED_task's local/resample_folder.py writes for a file: each channel resampled
    to `rate` (librosa.resample, its default method) and rounded to 16 bits as torchaudio.save
    does (nearest, clipped): int16 (n,) or (n, channels) (AudioError: as read_audio)."""
    y, sr = audio.read_audio(path)
    channels = y.reshape(len(y), -1).T
    if sr != rate:
        import librosa

        channels = [librosa.resample(np.ascontiguousarray(c), orig_sr=sr, target_sr=rate)
                    for c in channels]
    out = np.stack(channels, axis=1).astype(np.float32)
    out = np.clip(np.rint(out * np.float32(32768)), -32768, 32767).astype(np.int16)
    return out[:, 0] if y.ndim == 1 else out


def _convert(job) -> bool:
    """Writes the copy at the feature rate of one (source, target, feature config, copy) job:
    mono float32, or DESED_task's (desed_task_copy); False when the source cannot be read."""
    source, target, feature_config, copy = job
    rate = int(feature_config.sample_rate)
    try:
        y = desed_task_copy(source, rate) if copy == DESED_TASK else audio.load_audio(source, rate)
    except audio.AudioError:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_path(target) as tmp:
        soundfile.write(str(tmp), y, rate, subtype="PCM_16" if copy == DESED_TASK else "FLOAT",
                        format="WAV")
    return True


def cached_split(split: dataset.Split, feature_config, cache_dir: pathlib.Path,
                 copy: str = FLOAT) -> dataset.Split:
    """The split with the paths of clips at another rate (or with several channels) replaced
    by mono copies at feature_config.sample_rate in cache_dir/<split>/ (written once); copy
    'desed_task': by DESED_task's copies (desed_task_copy) of the files at another rate.
    cache_dir: cache_dir(workdir, feature_config, copy)."""
    if copy not in COPIES:
        raise ValueError(f"unknown resample copy {copy!r}; choose one of {COPIES}")
    rate = int(feature_config.sample_rate)
    folder = pathlib.Path(cache_dir) / split.name
    targets = [folder / pathlib.Path(p).name for p in split.paths]
    todo = [i for i, t in enumerate(targets) if not t.is_file()]
    with futures.ThreadPoolExecutor(features.num_workers(feature_config)) as pool:
        flags = list(pool.map(lambda i: _needs_resampling(split.paths[i], rate, copy), todo))
        todo = [i for i, flag in zip(todo, flags) if flag]
        if todo:
            jobs = [(split.paths[i], targets[i], feature_config, copy) for i in todo]
            with tqdm(total=len(jobs), desc=f"resample {split.name} to {rate} Hz",
                      unit="clip", disable=None) as bar:
                for _ in pool.map(_convert, jobs):
                    bar.update(1)
            logging.info("%s: %d clips resampled to %d Hz into %s", split.name, len(todo),
                         rate, folder)
    paths = [t if t.is_file() else p for p, t in zip(split.paths, targets)]
    return dataclasses.replace(split, paths=paths)


def cache_dir(workdir: pathlib.Path, feature_config, copy: str = FLOAT) -> pathlib.Path:
    """<workdir>/audio_<rate> (copy 'desed_task': audio_<rate>_desed_task): where the
    resampled copies go."""
    suffix = "_desed_task" if copy == DESED_TASK else ""
    return pathlib.Path(workdir) / f"audio_{int(feature_config.sample_rate)}{suffix}"

