"""Post-processing chosen on the validation split (config.postprocess.tune), never on test.

Two methods (postprocess.tune.method), each choosing per class on the validation clips'
frame probabilities by postprocess.tune.metric:
- 'median_filter': a median-filter length from a grid (postprocess.tune.median_filters). With
  metric 'event_f1' the candidates are thresholded at postprocess.threshold as the test is and
  scored with the challenge's metric (sed_eval, config.evaluation); with 'psds1' or
  'collar_f1' the median-filtered probabilities are scored over every threshold
  (sed_scores_eval: single-class PSDS1, best collar-based F1).
- 'csebbs': change-point bounding boxes (sedjax.metrics.csebbs, the optional `sebbs` package), their
  step filter and merge thresholds from postprocess.tune.csebbs' grid.
A class's score depends on that class's outputs only, so choosing per class is choosing the
best combination. Median filter: ties keep the configured length (then the shorter one).

A class without reference events in validation (a small validation split, or recordings of a
few classes) has nothing to be chosen by, so it keeps the configured post-processing: its
configured median-filter length; with cSEBBs the grid's middle values and, for detection,
postprocess.threshold. Such classes are listed in the result
('classes_without_reference_events').
"""

from __future__ import annotations

from typing import Any, Sequence

import ml_collections
import numpy as np
from absl import logging

from sedjax.metrics import detection, psds, sed_eval_scores, sed_scores_inputs

METHODS = ("median_filter", "csebbs")
METRICS = ("event_f1", "psds1", "collar_f1")


def enabled(config) -> bool:
    """Whether the config asks for tuned post-processing (cSEBBs, or a non-empty median-filter
    grid)."""
    tune = config.postprocess.tune
    return tune.method == "csebbs" or len(tune.median_filters) > 0


def tune(config, filenames: Sequence[str], reference_events: Sequence[dict], probs: np.ndarray,
         frame_seconds: float, num_valid_frames: np.ndarray) -> dict[str, Any]:
    """The post-processing config.postprocess.tune asks for, chosen on these (validation)
    clips: JSON-ready {'method', 'metric', 'classes_without_reference_events' (nothing to
    choose by: they keep the defaults the module docstring names), ...the method's values}."""
    t = config.postprocess.tune
    if t.method == "csebbs":
        from sedjax.metrics import csebbs
        out = csebbs.tune(t.csebbs, filenames, reference_events, probs, config.data.classes,
                          frame_seconds, num_valid_frames, t.metric,
                          config.evaluation.psds)
        logging.info("post-processing tuned on validation: cSEBBs %s", out["csebbs"])
    else:
        out = tune_median_filter(config, filenames, reference_events, probs, frame_seconds,
                                 num_valid_frames)
    return {"method": t.method, "metric": t.metric,
            "classes_without_reference_events": sed_scores_inputs.absent_classes(
                config.data.classes, reference_events),
            **out}


def _class_scores(config, filenames, reference_events, probs, frame_seconds, valid,
                  length: int) -> dict[str, float | None]:
    """{class: score of metric postprocess.tune.metric} with one median-filter length."""
    classes, metric = list(config.data.classes), config.postprocess.tune.metric
    if metric == "event_f1":
        settings = {"threshold": config.postprocess.threshold, "median_filter": length}
        events = detection.probabilities_to_events(filenames, probs, settings, classes,
                                                     frame_seconds, valid)
        scores = sed_eval_scores.evaluate_events(reference_events, events, filenames, classes,
                                            config.evaluation)["event_based"]["class_wise"]
        return {c: scores[c]["f_measure"] if scores[c]["num_reference"] else None
                for c in classes}
    figures, _ = psds.threshold_independent(
        probs, filenames, frame_seconds, classes, reference_events, num_valid_frames=valid,
        median_filter=length, settings=config.evaluation.psds)
    if metric == "psds1":
        found = figures.get("psds_detail", {}).get("psds1", {}).get("class_wise", {})
        return {c: found.get(c) for c in classes}
    found = figures.get("collar_best", {}).get("class_wise", {})
    return {c: found[c]["f_measure"] if c in found else None for c in classes}


def configured_lengths(config) -> list[int]:
    """The configured median filter as one length per class."""
    size, n = config.postprocess.median_filter, len(config.data.classes)
    return [int(k) for k in size] if np.ndim(size) == 1 else [int(size)] * n


def tune_median_filter(config, filenames: Sequence[str], reference_events: Sequence[dict],
                       probs: np.ndarray, frame_seconds: float,
                       num_valid_frames: np.ndarray) -> dict[str, Any]:
    """Per-class median-filter lengths chosen on a strongly labelled (validation) split.

    Returns {'median_filter': [length per class], 'grid': [...], 'class_f1': {class:
    {length: score of postprocess.tune.metric, or None}}} (JSON-ready; 'class_f1' keeps its
    name whatever the metric); config.postprocess.median_filter stays the fallback of a class
    without reference events.
    """
    classes = list(config.data.classes)
    configured = configured_lengths(config)
    grid = sorted({int(k) for k in config.postprocess.tune.median_filters})
    f1: dict[str, dict[int, float | None]] = {c: {} for c in classes}
    for length in sorted(set(grid) | set(configured)):
        scores = _class_scores(config, filenames, reference_events, probs, frame_seconds,
                               num_valid_frames, length)
        for c in classes:
            f1[c][length] = scores[c]
    chosen = []
    for c, default in zip(classes, configured):
        best, best_f1 = default, f1[c][default]
        for length in grid:  # ascending: a tie keeps the configured, then the shorter length
            value = f1[c][length]
            if value is not None and (best_f1 is None or value > best_f1):
                best, best_f1 = length, value
        chosen.append(best)
    logging.info("post-processing tuned on validation: median filter per class %s",
                 dict(zip(classes, chosen)))
    return {"median_filter": chosen, "grid": grid,
            "class_f1": {c: {str(k): v for k, v in f1[c].items()} for c in classes}}


def apply(config, tuned: dict | None):
    """config with the tuned post-processing in its postprocess section (a copy), or config."""
    if not tuned:
        return config
    c = config.copy_and_resolve_references()
    settings = c.postprocess.to_dict()
    if tuned.get("method") == "csebbs":
        settings["csebbs"] = tuned["csebbs"]
    else:
        settings["median_filter"] = tuple(int(k) for k in tuned["median_filter"])
    with c.unlocked():  # a new section: the configured field may be typed int
        c.postprocess = ml_collections.ConfigDict(settings)
    return c
