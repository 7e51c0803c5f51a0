"""Audio at another rate resampled once into a cache folder, as DESED_task writes its *_16k copies.

With `data.resample_cache` on, every clip whose file is not mono at the features' rate is
decoded, mixed down, resampled (librosa, as DESED_task's resample_folder.py does) and written
as a float32 WAV under `<workdir>/audio_<rate>/<split>/`, once; later runs and other feature
settings read the copy. A file that cannot be read is left where it is: the
feature stage logs it as it logs any unreadable clip.
"""

from __future__ import annotations

import concurrent.futures as futures
import pathlib

import soundfile
from absl import logging
from tqdm import tqdm

from sedjax.data import audio, dataset, features
from sedjax.runtime import files


def _needs_resampling(path: pathlib.Path, rate: int) -> bool:
    """Whether the clip's header says it is not mono at `rate`."""
    # a header soundfile cannot read: left as it is, the feature stage decodes it or reports it
    found = audio.probe(path)
    return found is not None and found != (rate, 1)


def _convert(job) -> bool:
    """Writes the mono copy at the feature rate of one (source, target, feature config) job;
    False when the source cannot be read."""
    source, target, feature_config = job
    try:
        y = audio.load_audio(source, feature_config.sample_rate)
    except audio.AudioError:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_path(target) as tmp:
        soundfile.write(str(tmp), y, feature_config.sample_rate, subtype="FLOAT", format="WAV")
    return True


def cached_split(split: dataset.Split, feature_config, cache_dir: pathlib.Path
                 ) -> dataset.Split:
    """The split with the paths of clips at another rate (or with several channels) replaced
    by mono copies at feature_config.sample_rate in cache_dir/<split>/ (written once)."""
    rate = int(feature_config.sample_rate)
    folder = pathlib.Path(cache_dir) / split.name
    targets = [folder / pathlib.Path(p).name for p in split.paths]
    todo = [i for i, t in enumerate(targets) if not t.is_file()]
    with futures.ThreadPoolExecutor(features.num_workers(feature_config)) as pool:
        flags = list(pool.map(lambda i: _needs_resampling(split.paths[i], rate), todo))
        todo = [i for i, flag in zip(todo, flags) if flag]
        if todo:
            jobs = [(split.paths[i], targets[i], feature_config) for i in todo]
            with tqdm(total=len(jobs), desc=f"resample {split.name} to {rate} Hz",
                      unit="clip", disable=None) as bar:
                for _ in pool.map(_convert, jobs):
                    bar.update(1)
            logging.info("%s: %d clips resampled to %d Hz into %s", split.name, len(todo),
                         rate, folder)
    paths = [t if t.is_file() else p for p, t in zip(split.paths, targets)]
    return dataset.Split(split.name, split.filenames, paths, split.weak, split.events)


def cache_dir(workdir: pathlib.Path, feature_config) -> pathlib.Path:
    """<workdir>/audio_<rate>: where the resampled copies go."""
    return pathlib.Path(workdir) / f"audio_{int(feature_config.sample_rate)}"

