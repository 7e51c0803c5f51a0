"""sed_scores_eval's inputs from sedjax's arrays and event lists: score tables, ground truth,
clip durations (sedjax.metrics.psds and sedjax.metrics.csebbs score them).

sed_scores_eval keys clips by *audio id*: the file name without its extension (its readers of
ground-truth and duration files strip it). `audio_id` applies the same rule, and every dict
built here (score tables, ground truth, durations) uses those ids.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sedjax.metrics import postprocess


def audio_id(filename: str) -> str:
    """sed_scores_eval's clip key: the file name without its extension ('a.wav' -> 'a')."""
    return str(filename).rsplit(".", maxsplit=1)[0]


def _audio_ids(filenames: Sequence[str]) -> list[str]:
    ids = [audio_id(f) for f in filenames]
    if len(set(ids)) != len(ids):
        seen: dict[str, str] = {}
        for f, i in zip(filenames, ids):
            if i in seen:
                raise ValueError(f"files {seen[i]!r} and {f!r} share the audio id {i!r} "
                                 "(sed_scores_eval keys clips by name without extension)")
            seen[i] = f
    return ids


def valid_frames(num_valid_frames, n: int, t: int) -> np.ndarray:
    if num_valid_frames is None:
        return np.full(n, t, dtype=np.int64)
    v = np.asarray(num_valid_frames).astype(np.int64)
    if v.shape != (n,):
        raise ValueError(f"num_valid_frames must have shape ({n},), got {v.shape}")
    if (v < 1).any():
        bad = int(np.flatnonzero(v < 1)[0])
        raise ValueError(f"clip {bad} has {v[bad]} valid frames; sed_scores_eval needs >= 1")
    return np.minimum(v, t)


def score_dataframes(
    probs: np.ndarray,
    filenames: Sequence[str],
    frame_seconds: float,
    classes: Sequence[str],
    num_valid_frames: Sequence[int] | np.ndarray | None = None,
    median_filter: int | Sequence[int] | None = None,
) -> dict[str, Any]:
    """sed_scores_eval score tables {audio id: pandas.DataFrame} of (N, T, C) frame probabilities.

    Row i of probs belongs to filenames[i]; its frames are cut at num_valid_frames[i] (frames
    past a short clip's end are padding; default: all T). Frame j spans
    [j * frame_seconds, (j + 1) * frame_seconds). Keys are audio ids (`audio_id`: no extension).
    median_filter: window in frames (one, or one per class; None or 1: none) applied to each
    clip's valid frames along time (sedjax.metrics.postprocess.median_filter) before scoring.
    Built with sed_scores_eval.base_modules.scores.create_score_dataframe.
    """
    try:  # sed_scores_eval 0.0.4; later versions moved it to utils.scores
        from sed_scores_eval.base_modules.scores import create_score_dataframe
    except ImportError:  # pragma: no cover
        from sed_scores_eval.utils.scores import create_score_dataframe

    probs = np.asarray(probs)
    classes = [str(c) for c in classes]
    if probs.ndim != 3 or probs.shape[0] != len(filenames) or probs.shape[2] != len(classes):
        raise ValueError(f"probs must be ({len(filenames)}, T, {len(classes)}) for "
                         f"{len(filenames)} files and {len(classes)} classes, got {probs.shape}")
    frame_seconds = float(frame_seconds)
    if not frame_seconds > 0:
        raise ValueError(f"frame_seconds must be > 0, got {frame_seconds}")
    ids = _audio_ids(filenames)
    valid = valid_frames(num_valid_frames, len(filenames), probs.shape[1])
    # One float64 copy, writable: sed_scores_eval's Cython code wants writable float buffers.
    timestamps = np.arange(probs.shape[1] + 1, dtype=np.float64) * frame_seconds
    tables = {}
    for key, clip, n in zip(ids, probs, valid):
        scores = np.array(clip[:n], dtype=np.float64)
        if median_filter is not None:
            scores = postprocess.median_filter(scores, median_filter).astype(np.float64)
        tables[key] = create_score_dataframe(scores, timestamps[: n + 1], classes)
    return tables


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Unions overlapping or touching intervals (sed_scores_eval refuses connected events)."""
    merged: list[list[float]] = []
    for on, off in sorted(intervals):
        if merged and on <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], off)
        else:
            merged.append([on, off])
    return [(a, b) for a, b in merged]


def ground_truth(
    reference_events: Sequence[Mapping[str, Any]],
    filenames: Sequence[str],
    classes: Sequence[str],
) -> dict[str, list[tuple[float, float, str]]]:
    """sed_scores_eval ground truth {audio id: [(onset, offset, label), ...]} for every file.

    Files without reference events get []. Overlapping or touching events of one class in one
    clip are merged into their union (sed_scores_eval asserts there are none; the union is what
    a frame-level detector can find). ValueError for events of other files or unknown labels.
    """
    ids = dict(zip(filenames, _audio_ids(filenames)))
    known = set(str(c) for c in classes)
    per_clip: dict[str, dict[str, list[tuple[float, float]]]] = {i: {} for i in ids.values()}
    for e in reference_events:
        name, label = e["filename"], str(e["event_label"])
        if name not in ids:
            raise ValueError(f"reference event for file {name!r}, which is not in the scored files")
        if label not in known:
            raise ValueError(f"reference event label {label!r} (file {name!r}) is not a known "
                             "class")
        onset, offset = float(e["onset"]), float(e["offset"])
        if not (math.isfinite(onset) and math.isfinite(offset)) or offset < onset:
            raise ValueError(f"bad reference event times {onset}, {offset} (file {name!r})")
        per_clip[ids[name]].setdefault(label, []).append((onset, offset))
    return {
        key: sorted((on, off, label) for label, spans in by_label.items()
                    for on, off in _merge(spans))
        for key, by_label in per_clip.items()
    }


def audio_durations(
    filenames: Sequence[str],
    durations: Mapping[str, float] | None = None,
    frame_seconds: float | None = None,
    num_frames: Sequence[int] | np.ndarray | None = None,
) -> dict[str, float]:
    """sed_scores_eval durations {audio id: seconds}: from `durations` ({filename: seconds}, the
    file name with or without extension) or else num_frames[i] * frame_seconds."""
    ids = _audio_ids(filenames)
    if durations is not None:
        out = {}
        for name, key in zip(filenames, ids):
            if name in durations:
                out[key] = float(durations[name])
            elif key in durations:
                out[key] = float(durations[key])
            else:
                raise ValueError(f"no duration given for file {name!r}")
        return out
    if frame_seconds is None or num_frames is None:
        raise ValueError("give durations or frame_seconds and num_frames")
    return {key: float(n) * float(frame_seconds) for key, n in zip(ids, num_frames)}


def absent_classes(classes: Sequence[str], reference_events: Sequence[Mapping[str, Any]]
                   ) -> list[str]:
    """The classes (in classes' order) that no reference event is labelled with."""
    labels = {str(e["event_label"]) for e in reference_events}
    return [str(c) for c in classes if str(c) not in labels]
