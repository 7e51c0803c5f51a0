"""The data stages of a run: the dataset's splits, their features (and frame embeddings) and
the normalization statistics, each computed once into the workdir and read back after.

    workdir/synthetic/                 the generated dataset (data.dataset 'synthetic')
    workdir/item_access_error.log.csv  clips listed in the metadata whose audio is missing
    workdir/features/                  <split>-<hash>.npy log-mel memmaps, stats-<hash>.npy,
                                       embeddings-<split>-<hash>.npy (model.embeddings.source
                                       'beats'), beats_fbank-<split>-<hash>.npy (the input
                                       of a trained encoder: model.beats.trainable)

sedjax.run calls `load_data` then `normalization_stats`; `sedjax.embed` lists the splits with
`list_data`. In a multi-process job process 0 writes and the others read what it wrote.
"""

from __future__ import annotations

import pathlib

import numpy as np
from absl import logging

from sedjax.data import (beats_embeddings, dataset, embeddings, features, pipeline, resample,
                         split_roles, synthetic)
from sedjax.metrics import tuning
from sedjax.system import files, sharding, timings

VALIDATION = "validation"  # the split tuned post-processing is chosen on


def data_layout(config) -> str:
    """The dataset's layout: data.dataset, or for generated data data.synthetic.layout."""
    if config.data.dataset == "synthetic":
        return config.data.synthetic.layout
    return config.data.dataset


def load_data(config, workdir: pathlib.Path) -> tuple[dict, dict]:
    """Dataset splits (real or synthetic) and their features: ({split: Split}, {split: arrays})."""
    with timings.stage("data"):
        splits = list_data(config, workdir)
    with timings.stage("features"):
        return load_features(config, workdir, splits)


def list_data(config, workdir: pathlib.Path) -> dict:
    """The dataset's splits ({name: Split}): generated first for a synthetic dataset, other
    sample rates converted once when data.resample_cache."""
    root = data_root(config, workdir)
    if config.data.dataset == "synthetic":
        if sharding.is_primary():  # one writer; the others read it once it is complete
            synthetic.ensure_dataset(config.data, root)
        sharding.sync("synthetic dataset")
    primary = sharding.is_primary()  # the one writer of the error log
    layout = data_layout(config)
    roles = announce_roles(config, root, layout)
    splits = dataset.load_dataset(root, config.data.classes, workdir, config.data.use_eval,
                                  config.data.use_strong, write_log=primary,
                                  use_validation=config.data.use_validation,
                                  layout=layout, sample_rate=config.features.sample_rate,
                                  roles=roles)
    if tuning.enabled(config) and VALIDATION not in splits:
        choices = (split_roles.SYNTH_VALIDATION if roles == split_roles.DESED_TASK
                   else dataset.LAYOUTS[layout]["validation"])[0]
        raise dataset.DatasetError(
            f"postprocess.tune: tuned post-processing needs a validation split "
            f"({choices} under {root}); there is none: set "
            f"--config.postprocess.tune.median_filters=() or add one")
    if config.data.resample_cache:  # other rates / stereo converted once (DESED's *_16k)
        copy = config.data.get("resample_copy", resample.FLOAT)
        where = resample.cache_dir(workdir, config.features, copy)
        if primary:
            for name in splits:
                splits[name] = resample.cached_split(splits[name], config.features, where, copy)
        sharding.sync("resampled audio")
        if not primary:  # every copy exists now: the same paths, nothing written
            splits = {n: resample.cached_split(s, config.features, where, copy)
                      for n, s in splits.items()}
    return splits


def announce_roles(config, root: pathlib.Path, layout: str) -> str:
    """The split roles in use (sedjax.data.split_roles) on a DESED-layout folder, said in one
    line (logged, and printed by process 0); 'sedjax' for the DCASE2018 layout."""
    roles = split_roles.resolve(config.data.split_roles, dataset.dataset_root(root, layout),
                                layout)
    if layout == "desed":
        # only the mean teacher holds weak clips out for its choices (two_pass's pass 1 holds
        # out its own share for its thresholds)
        held_out = config.data.weak_held_out if config.recipe == "mean_teacher" else 0.0
        line = split_roles.describe(config.data.split_roles, roles, held_out,
                                    config.data.use_validation)
        logging.info("%s", line)
        if sharding.is_primary():
            print(line, flush=True)
    return roles


def load_features(config, workdir: pathlib.Path, splits: dict) -> tuple[dict, dict]:
    """The splits' log-mel features (computed once into workdir/features), clips whose audio
    cannot be read dropped from both: ({split: Split}, {split: SplitArrays})."""
    primary = sharding.is_primary()
    arrays = {}
    source = audio_source(config, workdir)
    e = config.model.embeddings
    for name, split in list(splits.items()):
        feats, frames, unreadable = features.extract_split(
            name, split.paths, split.filenames, config.features, workdir / "features",
            source=source)
        extra = {}
        if beats_embeddings.trainable(config):  # the encoder trains: its input, BEATs' fbank
            extra["embeddings"], not_encoded = beats_embeddings.extract_fbank_split(
                name, split.paths, split.filenames, config, workdir / "features", source)
            unreadable = {**not_encoded, **unreadable}
        elif e.source == "beats":  # computed by sedjax's BEATs, cached beside the features
            extra["embeddings"], _, not_encoded = beats_embeddings.extract_split(
                name, split.paths, split.filenames, config, workdir / "features", source)
            unreadable = {**not_encoded, **unreadable}
        if unreadable:  # the same rows on every process: each read every process's share
            split = splits[name] = dataset.drop_unreadable(
                split, unreadable, workdir / dataset.ERROR_LOG, write_log=primary)
            keep = np.setdiff1d(np.arange(len(frames)), list(unreadable))
            feats, frames = pipeline.take_rows(feats, keep), frames[keep]
            extra = {k: pipeline.take_rows(v, keep) for k, v in extra.items()}
        labels = split.weak if split.weak is not None else np.zeros(
            (len(split), len(config.data.classes)), np.float32)
        if e.source == "files" and e.dir:  # pre-extracted embeddings (DESED_task's BEATs)
            extra["embeddings"] = embeddings.load(e.dir, name, split.filenames, e.frames,
                                                  e.size)
        arrays[name] = pipeline.SplitArrays(feats, frames, labels, extra)
    return splits, arrays


def data_root(config, workdir: pathlib.Path) -> pathlib.Path:
    """The dataset's folder: data.root, or for generated data workdir/synthetic."""
    if config.data.dataset == "synthetic":
        return pathlib.Path(workdir) / "synthetic"
    return pathlib.Path(config.data.root)


def audio_source(config, workdir: pathlib.Path) -> str:
    """Where the audio came from, when names alone do not say (features.cache_key): a generated
    dataset's settings (its marker), so that regenerating it never reuses old features; for a
    real dataset, its folder (another folder may hold other audio under the same names)."""
    root = data_root(config, workdir)
    if config.data.dataset != "synthetic":
        return f"root={root.expanduser().resolve()}"
    return (root / synthetic.MARKER).read_text()


def normalization_stats(config, splits: dict, arrays: dict, workdir: pathlib.Path) -> tuple:
    """Per-band mean/std over the training clips (weak + unlabel_in_domain, each once); with
    features.scaler 'instance_minmax' each clip is scaled already: mean 0, std 1."""
    if config.features.scaler == "instance_minmax":
        n = config.features.n_mels
        return np.zeros(n, np.float32), np.ones(n, np.float32)
    names = ("weak", "unlabel_in_domain")
    key = features.cache_key(config.features, [f for n in names for f in splits[n].filenames],
                             audio_source(config, workdir))
    path = workdir / "features" / f"stats-{key}.npy"
    if not path.exists() and sharding.is_primary():
        mean, std = features.band_stats([(arrays[n].features, arrays[n].frames) for n in names])
        files.save_npy(path, np.stack([mean, std]))
    sharding.sync("normalization statistics")
    mean, std = np.load(path)
    return mean, std
