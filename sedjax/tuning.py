"""Post-processing chosen on the validation split (config.postprocess.tune), never on test.

The median-filter length is picked per class from a small grid: each candidate length is
applied to every class of the validation clips' frame probabilities (thresholded at
postprocess.threshold, as the test is), the events are scored with the challenge's metric
(sed_eval, config.evaluation), and each class keeps the length of its best class-wise event F1.
The event-based F1 of one class depends on that class's events only, so choosing per class is
choosing the best combination. Ties keep the configured length (then the shorter one); a class
without reference events in validation keeps the configured length.
"""

from __future__ import annotations

from typing import Any, Sequence

import ml_collections
import numpy as np
from absl import logging

from sedjax import evaluation, postprocess


def enabled(config) -> bool:
    """Whether the config asks for tuned post-processing (a non-empty median-filter grid)."""
    tune = config.postprocess.get("tune")
    return tune is not None and len(tune.get("median_filters", ())) > 0


def configured_lengths(config) -> list[int]:
    """The configured median filter as one length per class."""
    size, n = config.postprocess.median_filter, len(config.data.classes)
    return [int(k) for k in size] if np.ndim(size) == 1 else [int(size)] * n


def tune_median_filter(config, filenames: Sequence[str], reference_events: Sequence[dict],
                       probs: np.ndarray, frame_seconds: float,
                       num_valid_frames: np.ndarray) -> dict[str, Any]:
    """Per-class median-filter lengths chosen on a strongly labelled (validation) split.

    Returns {'median_filter': [length per class], 'grid': [...], 'class_f1': {class:
    {length: event F1 or None}}} (JSON-ready); config.postprocess.median_filter stays the
    fallback of a class without reference events.
    """
    classes = list(config.data.classes)
    configured = configured_lengths(config)
    grid = sorted({int(k) for k in config.postprocess.tune.median_filters})
    f1: dict[str, dict[int, float | None]] = {c: {} for c in classes}
    for length in sorted(set(grid) | set(configured)):
        settings = {"threshold": config.postprocess.threshold, "median_filter": length}
        events = postprocess.probabilities_to_events(filenames, probs, settings, classes,
                                                     frame_seconds, num_valid_frames)
        scores = evaluation.evaluate_events(reference_events, events, filenames, classes,
                                            config.evaluation)["event_based"]["class_wise"]
        for c in classes:
            f1[c][length] = scores[c]["f_measure"] if scores[c]["num_reference"] else None
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
    settings["median_filter"] = tuple(int(k) for k in tuned["median_filter"])
    with c.unlocked():  # a new section: the configured field may be typed int
        c.postprocess = ml_collections.ConfigDict(settings)
    return c
