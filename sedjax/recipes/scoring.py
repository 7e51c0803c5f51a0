"""The scoring stages of a run: the post-processing chosen on validation, then each scored
split's events, sed_eval scores, PSDS and PSD-ROC curves, and the test split's pictures.

    run_dir/postprocess.json            the post-processing chosen on validation
    run_dir/predictions/<split>_events.csv, <split>_psd_roc.npz
    run_dir/training_curves.png, piano_roll.png

Reads the frame probabilities that the run's prediction stage wrote (predictions/<split>_probs.npy);
the test split's labels are read here only, once, after every choice is made.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from sedjax.data import dataset, event_files, pipeline
from sedjax.metrics import csebbs, detection, psds, tuning
from sedjax.models import time_grid
from sedjax.recipes import common
from sedjax.reporting import outputs, plots
from sedjax.system import timings
from sedjax.train import checkpoint


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
