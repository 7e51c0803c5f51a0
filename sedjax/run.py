"""The shared stages in order: validate, data, features, statistics, recipe, predict, score, report.

workdir/
  config.json                  the resolved config
  synthetic/                   generated dataset (data.dataset == 'synthetic')
  item_access_error.log.csv    clips listed in the metadata whose audio is missing
  features/                    <split>-<hash>.npy log-mel memmaps, stats-<hash>.npy;
                               embeddings-<split>-<hash>.npy BEATs frame embeddings
                               (model.embeddings.source 'beats')
  (the recipe's own folders)   e.g. pass1/, pass2/, pseudo_labels.npy for two_pass
  tensorboard/                 per-epoch scalars (losses, validation score, learning rate)
  model/                       the weights that predicted + normalization (sedjax.detect)
  training.json                the recipe's summary, written once its model predicted
  predictions/                 <split>_probs.npy (frame probabilities), <split>_events.csv,
                               <split>_psd_roc.npz (PSD-ROC curves), for validation (when the
                               dataset has it), test and eval
  postprocess.json             the post-processing chosen on validation (postprocess.tune:
                               median-filter lengths or cSEBB parameters per class)
  results.json, results.txt    sed_eval event/segment scores, PSDS1/2 and best collar F1 of
                               the validation and test splits
  class_scores.png, psd_roc.png, training_curves.png, piano_roll.png

Several runs (config.num_runs = K > 1, seeds seed .. seed + K - 1, one program): the recipe's
checkpoints, features and tensorboard/ stay in the workdir; each run's own outputs (config.json,
model/, predictions/, training.json, results.json, ... as above, and the recipe's result.json
files) go to workdir/run{k}/, laid out as a single run's workdir; workdir/results.json holds
each run's headline scores with their mean and sample std, workdir/training.json each run's
training summary.

Every stage is skipped when its output is already there, so a killed run resumes.

Protocol: every choice a run makes (early stopping, the kept checkpoint, thresholds, tuned
post-processing) uses the validation split (or, without one, clips held out of training);
the test split's labels are read only by the scoring stage, once, at the end. Which DESED split
plays which role is data.split_roles' (sedjax.data.split_roles: without a public evaluation set,
DESED_task's: validation = its synthetic validation set, test = its validation split).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import numpy as np
from absl import logging

from sedjax import recipes
from sedjax.config import stages, validate
from sedjax.data import (beats_embeddings, dataset, embeddings, event_files, features,
                         pipeline, resample, split_roles, synthetic)
from sedjax.metrics import csebbs, detection, psds, tuning
from sedjax.models import time_grid
from sedjax.recipes import common
from sedjax.reporting import outputs, plots, run_report, summary, tensorboard
from sedjax.runtime import (compilation_cache, files, preemption, sharding, timings,
                            workdir_lock)
from sedjax.train import checkpoint, loop, runs as runs_lib

SCORED_SPLITS = ("validation", "test", "eval")  # predicted and scored, in this order


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
    if tuning.enabled(config) and common.VALIDATION not in splits:
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
        if e.source == "beats":  # computed by sedjax's BEATs, cached beside the features
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


def predict_frames(inputs: common.Inputs, state, name: str) -> list[np.ndarray]:
    """Frame probabilities (N, T', C) of a split, one array per run."""
    b = inputs.run_batches(name)
    rows = np.arange(len(b.arrays))
    return inputs.runs.predict(common.eval_fn("frame", b), state, b, [rows] * inputs.runs.count,
                               inputs.config.runtime.predict_batch_size)


def score_split(config, split: dataset.Split, arrays: pipeline.SplitArrays, probs: np.ndarray,
                events_path: pathlib.Path) -> tuple[dict, dict, list]:
    """Post-processes frame probabilities into events, writes them and scores them with
    sed_eval; PSDS and the best collar F1 over thresholds from the frame probabilities with
    sed_scores_eval. Returns (results, PSD-ROC curves, events)."""
    events, results = common.detect_and_score(config, split, probs, arrays.frames)
    event_files.write_events(events_path, events, split.filenames)
    valid = time_grid.valid_output_frames(arrays.frames, config.features.num_frames, config.model)
    boxes = detection.csebbs_settings(config.postprocess)
    def threshold_independent():
        # scores median-filtered as the events are (the DCASE 2022-23 baselines' choice), or
        # the cSEBBs' boxes with their confidences
        tables = None if not boxes else csebbs.score_tables(
            boxes, split.filenames, probs, config.data.classes, time_grid.frame_seconds(config),
            valid)
        return psds.threshold_independent(
            probs, split.filenames, time_grid.frame_seconds(config), config.data.classes,
            split.reference_events(), num_valid_frames=valid,
            median_filter=None if boxes else config.postprocess.median_filter,
            settings=config.evaluation.psds, tables=tables)
    figures = outputs.optional(f"PSDS and collar F1 of {events_path.name}", threshold_independent)
    results["threshold_independent"], curves = figures or ({"error": "not computed"}, {})
    return results, curves, events


def plot_run(config, workdir: pathlib.Path, stage_names: tuple, split: dataset.Split,
             arrays: pipeline.SplitArrays, probs: np.ndarray, events: list) -> None:
    """training_curves.png (every stage of the recipe) and piano_roll.png (a few test clips)."""
    histories, best = {}, {}
    for stage in stage_names:
        path = workdir / stage / "result.json"
        if path.is_file():
            result = json.loads(path.read_text())
            histories[stage] = result.get("history", [])
            best[stage] = result.get("best_epoch", -2) + 1
    plots.plot_training_curves(histories, workdir / "training_curves.png", best)
    # the first clips with reference events (the same clips in every run of a dataset)
    chosen = [i for i, clip in enumerate(split.events) if clip][: config.runtime.piano_roll_clips]
    by_file: dict = {}
    for e in events:
        by_file.setdefault(e["filename"], []).append((e["onset"], e["offset"], e["event_label"]))
    clips = [{"filename": split.filenames[i], "logmel": np.asarray(arrays.features[i]),
              "valid_frames": int(arrays.frames[i]), "probs": probs[i],
              "reference": split.events[i], "estimated": by_file.get(split.filenames[i], [])}
             for i in chosen]
    plots.plot_piano_rolls(clips, config.data.classes, time_grid.frame_seconds(config),
                           config.features.hop_length / config.features.sample_rate,
                           config.postprocess.threshold, workdir / "piano_roll.png")


def train_and_evaluate(config, workdir) -> dict:
    """Runs (or resumes) every stage and returns the summary written to results.json; one run
    per workdir at a time (sedjax.runtime.workdir_lock)."""
    mesh = sharding.make_mesh()
    validate.validate(config, sharding.num_shards(mesh))
    recipe = recipes.get(config.recipe)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # before the run's first compilation (JAX looks for a cache once per process)
    compilation_cache.enable(config.runtime.compilation_cache)
    with workdir_lock.hold(workdir, primary=sharding.is_primary()), timings.recording() as rec:
        summary = _train_and_evaluate(config, workdir, recipe, mesh)
        if summary:  # process 0: the finished timings, also into results.json
            summary = run_report.final_timings(workdir, summary, rec.to_json())
            print(timings.line(summary["timings"]))
        return summary


def _train_and_evaluate(config, workdir: pathlib.Path, recipe, mesh) -> dict:
    splits, arrays = load_data(config, workdir)
    if sharding.is_primary():  # outputs of other values moved aside; config.json written
        stages.reconcile(config, workdir, recipe.picks_on_events(
            config, common.VALIDATION in splits))
    sharding.sync("config")
    _stop_point("the data and features", workdir)
    with timings.stage("statistics"):
        stats = normalization_stats(config, splits, arrays, workdir)
    logging.info("devices: %d x %s", sharding.num_shards(mesh), jax.devices()[0].device_kind)
    batches = {name: pipeline.Batches(a, mesh, stats, config.runtime)
               for name, a in arrays.items()}
    inputs = common.Inputs(config, splits, arrays, batches, mesh, stats, workdir)
    scored = [n for n in SCORED_SPLITS if n in splits]
    training = train_and_predict(recipe, inputs, scored)
    sharding.sync("predictions")
    # what is left is each process's own work: from here a SIGTERM ends the process at once;
    # one received before ends every process at this stop point
    preemption.default_sigterm()
    _stop_point("training and prediction", workdir)
    if not sharding.is_primary():  # scoring and reports read the predictions process 0 wrote
        logging.info("process %d: done; process 0 scores and reports", jax.process_index())
        return {}
    dirs, results, curves = inputs.run_dirs, [], []
    for d, t in zip(dirs, training):
        splits_results, split_curves, used = score_run(config, d, recipe, splits, arrays, scored)
        results.append(summary.RunResults(splits_results, used, t, timings.current().to_json(),
                                          sharding.num_shards(mesh)))
        curves.append(split_curves)
    with timings.stage("reporting"):
        summary_json = run_report.report(workdir, dirs, results, curves,
                                         {n: len(s) for n, s in splits.items()})
    # what each scored split was read from (DESED_task's roles test on validation.tsv)
    return {**summary_json, "split_sources": {n: splits[n].source for n in scored}}


def _stop_point(done: str, workdir: pathlib.Path) -> None:
    """Ends the run with exit status 143 when a stop was asked for (a SIGTERM, to any process of
    a multi-process job) since the last training step or stop point; every process calls it at
    the same places. What is done is saved in the workdir: the same command resumes."""
    if preemption.stop_requested_at_boundary():
        raise loop.Preempted(f"stopped by {preemption.reason()} after {done}; the finished "
                             f"stages are saved in {workdir}. Rerun the same command to "
                             "resume from there.")


def train_and_predict(recipe, inputs: common.Inputs, scored: list
                      ) -> list[summary.TrainingSummary]:
    """Trains the recipe and writes each run's frame probabilities of the scored splits and its
    model; skipped when an earlier program did both. Returns the runs' training summaries."""
    dirs, runs, workdir = inputs.run_dirs, inputs.runs, inputs.workdir
    for d in dirs:
        (d / "predictions").mkdir(parents=True, exist_ok=True)
    training = run_report.read_training(workdir, runs.count, recipe.stages)
    if training is not None and all((d / "predictions" / f"{n}_probs.npy").exists()
                                    for d in dirs for n in scored):
        logging.info("training: done before (recipe %s); reusing %s", recipe.name,
                     " ".join(str(d / "predictions") for d in dirs))
        return training
    primary = sharding.is_primary()
    # scalars per epoch for `tensorboard --logdir WORKDIR`, from process 0 only
    writer = tensorboard.SummaryWriter(workdir / "tensorboard") if primary else None
    with timings.stage("training"):
        try:
            trained = recipe.train(dataclasses.replace(inputs, writer=writer))
        finally:
            if writer is not None:
                writer.close()
    with timings.stage("predict"):
        for name in scored:  # every process predicts (a collective); one writes
            for d, probs in zip(dirs, predict_frames(inputs, trained.state, name)):
                if primary:
                    files.save_npy(d / "predictions" / f"{name}_probs.npy",
                                   probs.astype(np.float32))
    training = runs.label(trained.summaries)
    if primary:
        for k, d in enumerate(dirs):
            checkpoint.save_model(d, runs_lib.take(trained.state, k), inputs.stats)
        run_report.write_training(workdir, dirs, training, runs.configs)
    return training


def choose_postprocess(config, run_dir: pathlib.Path, splits: dict, arrays: dict):
    """The run's post-processing: config.postprocess, or (postprocess.tune) the median filter
    per class chosen on its validation predictions, written to run_dir/postprocess.json and
    beside the model (sedjax.detect reads it). Reads no test label."""
    if not tuning.enabled(config):
        for folder in (run_dir, run_dir / checkpoint.MODEL_DIR):  # a rerun's, now stale
            (folder / "postprocess.json").unlink(missing_ok=True)
        return config, None
    split, a = splits[common.VALIDATION], arrays[common.VALIDATION]
    probs = np.load(run_dir / "predictions" / f"{common.VALIDATION}_probs.npy")
    valid = time_grid.valid_output_frames(a.frames, config.features.num_frames, config.model)
    tuned = tuning.tune(config, split.filenames, split.reference_events(), probs,
                        time_grid.frame_seconds(config), valid)
    tuned["tuned_on"] = common.VALIDATION
    for folder in (run_dir, run_dir / checkpoint.MODEL_DIR):
        outputs.write_json(folder / "postprocess.json", tuned)
    return tuning.apply(config, tuned), tuned


def score_run(config, run_dir: pathlib.Path, recipe, splits: dict, arrays: dict,
              scored: list) -> tuple[dict, dict, dict]:
    """Scores one run's predictions of every scored split (events, PSD-ROC curves, pictures of
    the test split into run_dir) after the post-processing is chosen on validation; returns
    ({split: results}, {split: curves}, the post-processing used)."""
    pred_dir = run_dir / "predictions"
    with timings.stage("postprocess"):
        config, tuned = choose_postprocess(config, run_dir, splits, arrays)
    results, curves = {}, {}
    for name in scored:
        with timings.stage("scoring"):
            probs = np.load(pred_dir / f"{name}_probs.npy")
            results[name], curves[name], events = score_split(
                config, splits[name], arrays[name], probs, pred_dir / f"{name}_events.csv")
            if curves[name]:
                psds.save_curves(pred_dir / f"{name}_psd_roc.npz", curves[name])
        if name == "test":
            with timings.stage("reporting"):
                outputs.optional("the training curves and piano rolls", lambda: plot_run(
                    config, run_dir, recipe.stages, splits[name], arrays[name], probs, events))
    used = {"threshold": config.postprocess.threshold,
            "median_filter": tuning.configured_lengths(config),
            "tuned_on": None if tuned is None else tuned["tuned_on"]}
    if tuned is not None:
        used.update(method=tuned["method"], metric=tuned["metric"],
                    classes_without_reference_events=tuned.get(
                        "classes_without_reference_events", []))
        if tuned["method"] == "csebbs":
            used["csebbs"] = tuned["csebbs"]
            del used["median_filter"]
    return results, curves, used
