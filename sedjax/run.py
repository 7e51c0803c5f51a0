"""The shared stages in order: validate, data, features, statistics, recipe, predict, score, report.

workdir/
  config.json                  the resolved config
  synthetic/                   generated dataset (data.dataset == 'synthetic')
  item_access_error.log.csv    clips listed in the metadata whose audio is missing
  features/                    <split>-<hash>.npy log-mel memmaps, stats-<hash>.npy
  (the recipe's own folders)   e.g. pass1/, pass2/, pseudo_labels.npy for two_pass
  tensorboard/                 per-epoch scalars (losses, validation score, learning rate)
  model/                       the weights that predicted + normalization (sedjax.detect)
  training.json                the recipe's summary, written once its model predicted
  predictions/                 <split>_probs.npy (frame probabilities), <split>_events.csv,
                               <split>_psd_roc.npz (PSD-ROC curves)
  results.json, results.txt    sed_eval event/segment scores, PSDS1/2 and best collar F1
  class_scores.png, psd_roc.png, training_curves.png, piano_roll.png

Every stage is skipped when its output is already there, so a killed run resumes.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import time

import jax
import numpy as np
from absl import logging

from sedjax import (evaluation, files, plots, postprocess, psds, recipes, report, sharding,
                    tensorboard, validation)
from sedjax.data import dataset, features, pipeline, synthetic
from sedjax.models import crnn
from sedjax.recipes import common
from sedjax.train import checkpoint, loop

SCORED_SPLITS = ("test", "eval")


@contextlib.contextmanager
def _timed(timings: dict, name: str):
    """Records the wall time of the block into timings[name] (seconds)."""
    start = time.time()
    yield
    timings[name] = round(time.time() - start, 2)


def load_data(config, workdir: pathlib.Path) -> tuple[dict, dict]:
    """Dataset splits (real or synthetic) and their features: ({split: Split}, {split: arrays})."""
    root = config.data.root
    if config.data.dataset == "synthetic":
        root = workdir / "synthetic"
        if sharding.is_primary():  # one writer; the others read it once it is complete
            synthetic.ensure_dataset(config.data, root)
        sharding.sync("synthetic dataset")
    splits = dataset.load_dataset(root, config.data.classes, workdir, config.data.use_eval,
                                  config.data.get("use_strong", False))
    arrays = {}
    for name, split in splits.items():
        feats, frames = features.extract_split(name, split.paths, split.filenames,
                                               config.features, workdir / "features")
        labels = split.weak if split.weak is not None else np.zeros(
            (len(split), len(config.data.classes)), np.float32)
        arrays[name] = pipeline.SplitArrays(feats, frames, labels)
    return splits, arrays


def normalization_stats(config, splits: dict, arrays: dict, workdir: pathlib.Path) -> tuple:
    """Per-band mean/std over the training clips (weak + unlabel_in_domain, each once)."""
    names = ("weak", "unlabel_in_domain")
    key = features.cache_key(config.features, [f for n in names for f in splits[n].filenames])
    path = workdir / "features" / f"stats-{key}.npy"
    if not path.exists() and sharding.is_primary():
        mean, std = features.band_stats([(arrays[n].features, arrays[n].frames) for n in names])
        files.save_npy(path, np.stack([mean, std]))
    sharding.sync("normalization statistics")
    mean, std = np.load(path)
    return mean, std


def predict_frames(inputs: common.Inputs, state, name: str) -> np.ndarray:
    """Frame probabilities (N, T', C) of a split."""
    b = inputs.batches[name]
    return loop.predict(common.eval_fn("frame", b), state, b, np.arange(len(b.arrays)),
                        inputs.config.runtime.predict_batch_size)


def score_split(config, split: dataset.Split, arrays: pipeline.SplitArrays, probs: np.ndarray,
                events_path: pathlib.Path) -> tuple[dict, dict, list]:
    """Post-processes frame probabilities into events, writes them and scores them with
    sed_eval; PSDS and the best collar F1 over thresholds from the frame probabilities with
    sed_scores_eval. Returns (results, PSD-ROC curves, events)."""
    valid = crnn.valid_output_frames(arrays.frames, config.features.num_frames, config.model)
    seconds = crnn.frame_seconds(config)
    events = postprocess.probabilities_to_events(
        split.filenames, probs, config.postprocess, config.data.classes, seconds, valid)
    postprocess.write_events_csv(events_path, events, split.filenames)
    reference = [{"filename": f, "onset": on, "offset": off, "event_label": label}
                 for f, clip in zip(split.filenames, split.events) for on, off, label in clip]
    results = evaluation.evaluate_events(reference, events, split.filenames, config.data.classes,
                                         config.evaluation)
    # scores median-filtered as the events are (the DCASE 2022-23 baselines' choice)
    results["threshold_independent"], curves = psds.threshold_independent(
        probs, split.filenames, seconds, config.data.classes, reference,
        num_valid_frames=valid, median_filter=config.postprocess.median_filter,
        settings=config.evaluation.get("psds"))
    return results, curves, events


def plot_run(config, workdir: pathlib.Path, training: dict, split: dataset.Split,
             arrays: pipeline.SplitArrays, probs: np.ndarray, events: list) -> None:
    """training_curves.png (every stage of the recipe) and piano_roll.png (a few test clips)."""
    histories, best = {}, {}
    for stage in training:
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
    plots.plot_piano_rolls(clips, config.data.classes, crnn.frame_seconds(config),
                           config.features.hop_length / config.features.sample_rate,
                           config.postprocess.threshold, workdir / "piano_roll.png")


def train_and_evaluate(config, workdir) -> dict:
    """Runs (or resumes) every stage and returns the summary written to results.json."""
    mesh = sharding.make_mesh()
    validation.validate(config, sharding.num_shards(mesh))
    recipe = recipes.get(config.recipe)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    primary = sharding.is_primary()  # the one process that writes shared files
    if primary:
        files.write_text(workdir / "config.json", config.to_json_best_effort(indent=2))
    timings: dict = {}
    with _timed(timings, "data"):
        splits, arrays = load_data(config, workdir)
    stats = normalization_stats(config, splits, arrays, workdir)
    logging.info("devices: %d x %s", sharding.num_shards(mesh), jax.devices()[0].device_kind)
    batches = {name: pipeline.Batches(a, mesh, stats, config.runtime)
               for name, a in arrays.items()}
    inputs = common.Inputs(config, splits, arrays, batches, mesh, stats, workdir)

    pred_dir = workdir / "predictions"
    pred_dir.mkdir(exist_ok=True)
    scored = [n for n in SCORED_SPLITS if n in splits]
    training = report.read_json(workdir / "training.json")
    if training is None or not all((pred_dir / f"{n}_probs.npy").exists() for n in scored):
        # scalars per epoch for `tensorboard --logdir WORKDIR`, written by process 0 only
        if primary:
            inputs.writer = tensorboard.SummaryWriter(workdir / "tensorboard")
        with _timed(timings, "training"):
            try:
                trained = recipe.train(inputs)
            finally:
                if inputs.writer is not None:
                    inputs.writer.close()
        with _timed(timings, "predict"):
            for name in scored:  # every process predicts (a collective); one writes
                probs = predict_frames(inputs, trained.state, name).astype(np.float32)
                if primary:
                    files.save_npy(pred_dir / f"{name}_probs.npy", probs)
        training = {"recipe": config.recipe, **trained.summary}
        if primary:
            checkpoint.save_model(workdir, trained.state, stats)
            report.write_json(workdir / "training.json", training)
    else:
        logging.info("training: done before (recipe %s); reusing %s", training["recipe"],
                     pred_dir)

    sharding.sync("predictions")
    if not primary:  # scoring and reports read the predictions process 0 wrote
        logging.info("process %d: done; process 0 scores and reports", jax.process_index())
        return {}
    results, curves = {}, {}
    with _timed(timings, "evaluation"):
        for name in scored:
            probs = np.load(pred_dir / f"{name}_probs.npy")
            results[name], curves[name], events = score_split(
                config, splits[name], arrays[name], probs, pred_dir / f"{name}_events.csv")
            psds.save_curves(pred_dir / f"{name}_psd_roc.npz", curves[name])
            if name == "test":
                plot_run(config, workdir, training, splits[name], arrays[name], probs, events)
    summary = {**results, **training, "timings_s": timings,
               "devices": sharding.num_shards(mesh)}
    report.write_results(workdir, summary)
    table = (evaluation.format_table(results["test"]) + "\n\n"
             + psds.format_lines(results["test"]["threshold_independent"]))
    files.write_text(workdir / "results.txt", table + "\n")
    report.plot_class_scores(results["test"], workdir / "class_scores.png")
    report.plot_psd_roc(curves["test"], workdir / "psd_roc.png",
                        results["test"]["threshold_independent"])
    print(table)
    ev = results["test"]["event_based"]
    er = ev["error_rate_macro"]
    er = (f"{er:.3f}" if evaluation.error_rate_is_defined(er) else
          f"{er:.0e} (sed_eval's ER of a class without reference events)")
    print(f"event-based macro F1 {100 * ev['f_measure_macro']:.2f} %  ER {er}  (test, "
          f"{len(splits['test'])} clips)  -> {workdir / 'results.json'}")
    return summary
