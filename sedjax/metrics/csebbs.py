"""Change-point post-processing (cSEBBs, Ebbers et al., Interspeech 2024) via the `sebbs` package.

cSEBBs turn each class's frame probabilities into sound event bounding boxes: change points
of the scores (a step filter of `step_filter_length` seconds) cut segments, neighbouring
candidate segments are merged when the gap's scores stay close (`merge_threshold_abs`,
`merge_threshold_rel`), and each box keeps its mean score as confidence. Events are the boxes
whose confidence passes a detection threshold; PSDS and the best collar F1 score the boxes over
every threshold. The parameters are chosen per class on the validation split
(sedjax.metrics.tuning), DESED_task's 2024 baseline's choice.

`sebbs` (MERL, AGPL-3.0-or-later) is an optional extra; install it with
`pip install --no-deps sebbs==1.0.2` (its declared dependency `sed_scores_eval_np2` would
replace the sed_scores_eval that sedjax pins; sebbs 1.0.2 runs on sed_scores_eval 0.0.4).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from sedjax.metrics import psds, sed_scores_inputs

INSTALL = "pip install --no-deps sebbs==1.0.2"


class MissingSebbs(ImportError):
    """The optional `sebbs` package is not installed."""


def _sebbs():
    try:
        from sebbs import csebbs
    except ImportError as e:
        raise MissingSebbs(f"postprocess.tune.method 'csebbs' needs the optional package "
                           f"sebbs (AGPL-3.0): {INSTALL}  ({e})") from None
    return csebbs


def available() -> bool:
    """Whether the `sebbs` package can be imported."""
    try:
        _sebbs()
    except MissingSebbs:
        return False
    return True


def _tables(probs, filenames, classes, frame_seconds, valid) -> dict:
    return sed_scores_inputs.score_dataframes(probs, filenames, frame_seconds, classes, valid)


def tune(tune_config, filenames: Sequence[str], reference_events: Sequence[dict],
         probs: np.ndarray, classes: Sequence[str], frame_seconds: float,
         valid: np.ndarray, metric: str, psds_settings=None) -> dict[str, Any]:
    """cSEBB parameters per class chosen on a strongly labelled split by `metric` ('psds1':
    single-class PSDS1; 'collar_f1' or 'event_f1': the best collar-based F1, which also fixes a
    detection threshold per class). Returns JSON-ready {'csebbs': predictor settings,
    'class_scores': {class: value, None for a class without reference events}}.

    A class without reference events on this split has nothing to choose by: it keeps the
    grid's middle values and no tuned detection threshold (events() then uses
    postprocess.threshold); with no class having any, nothing is searched."""
    csebbs = _sebbs()
    classes = [str(c) for c in classes]
    grid = _grid(tune_config)
    present = sorted({str(e["event_label"]) for e in reference_events}, key=classes.index)
    if not present:
        return {"csebbs": _settings({}, grid, classes), "class_scores": dict.fromkeys(classes)}
    tables = _tables(probs, filenames, classes, frame_seconds, valid)
    durations = {k: len(t) * float(frame_seconds) for k, t in tables.items()}
    if present != classes:  # sed_scores_eval needs reference events of every class it scores
        tables = {k: t.drop(columns=[c for c in classes if c not in present])
                  for k, t in tables.items()}
    gt = sed_scores_inputs.ground_truth(reference_events, filenames, present)
    candidates = _candidates(csebbs, tables, present, grid)
    predictor, values = _select(csebbs, candidates, gt, durations, metric, psds_settings,
                                len(present))
    return {"csebbs": _settings(predictor.to_dict(), grid, classes),
            "class_scores": {c: (float(values[c]) if c in values else None) for c in classes}}


def _grid(tune_config) -> dict[str, tuple]:
    """The candidate values of postprocess.tune.csebbs."""
    return dict(step_filter_lengths=tuple(tune_config.step_filter_lengths),
                merge_thresholds_abs=tuple(tune_config.merge_thresholds_abs),
                merge_thresholds_rel=tuple(tune_config.merge_thresholds_rel))


def _candidates(csebbs, tables: dict, present: list, grid: dict) -> list:
    """[(predictor, its boxes of `tables`)] for every point of the grid."""
    # sebbs.csebbs.tune's grid search (each merge criterion alone: the other one infinite),
    # written out because sebbs 1.0.2's own leaves the candidates' class list empty, which
    # yields no box at all
    candidates = []
    for step in grid["step_filter_lengths"]:
        base = csebbs.CSEBBsPredictor(step_filter_length=step, sound_classes=present)
        changes = base._run_change_detection(tables)
        merges = ([(a, np.inf) for a in grid["merge_thresholds_abs"]]
                  + [(np.inf, r) for r in grid["merge_thresholds_rel"]])
        for merge_abs, merge_rel in merges:
            candidate = base.copy()
            candidate.merge_threshold_abs, candidate.merge_threshold_rel = merge_abs, merge_rel
            candidates.append((candidate, candidate._get_sebbs_from_change_detection(changes)))
    return candidates


def _select(csebbs, candidates: list, gt: dict, durations: dict, metric: str, psds_settings,
            num_classes: int) -> tuple:
    """sebbs' choice per class among the candidates by `metric`: (predictor, {class: value})."""
    settings = psds.Settings.from_mapping(psds_settings)
    if metric == "psds1":
        # one class scored: no cross-triggers (psds.for_classes)
        s = psds.for_classes(settings.psds["psds1"], num_classes)
        return csebbs.select_best_psds(
            candidates, gt, durations, dtc_threshold=s.dtc_threshold,
            gtc_threshold=s.gtc_threshold, cttc_threshold=s.cttc_threshold,
            alpha_ct=s.alpha_ct, unit_of_time=s.unit_of_time, max_efpr=s.max_efpr)
    c = settings.collar
    return csebbs.select_best_cbf(
        candidates, gt, durations, onset_collar=c.onset_collar,
        offset_collar=c.offset_collar, offset_collar_rate=c.offset_collar_rate)


def _middle(values) -> float:
    return float(sorted(values)[len(values) // 2])


def _settings(chosen: Mapping[str, Any], grid: dict, classes: list) -> dict[str, Any]:
    """JSON-ready per-class predictor settings of sebbs' choice (`chosen`, its to_dict());
    a class it has no value for gets the grid's middle values and no detection threshold."""
    defaults = {"step_filter_length": _middle(grid["step_filter_lengths"]),
                "merge_threshold_abs": _middle(grid["merge_thresholds_abs"]),
                "merge_threshold_rel": _middle(grid["merge_thresholds_rel"])}
    settings: dict[str, Any] = {}
    for key, default in defaults.items():
        given = chosen.get(key) or {}
        # an infinite merge threshold (that criterion unused) is written as None (JSON)
        settings[key] = {c: (_finite(given[c]) if c in given else default) for c in classes}
    thresholds = chosen.get("detection_threshold")
    settings["detection_threshold"] = (None if not thresholds else
                                       {c: float(thresholds[c]) for c in thresholds})
    return settings


def _finite(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _infinite(values: Mapping[str, Any]) -> dict[str, float]:
    return {c: np.inf if v is None else float(v) for c, v in values.items()}


def predictor(settings: Mapping[str, Any], classes: Sequence[str]):
    """sebbs' CSEBBsPredictor of tuned settings (tune()['csebbs']; None: criterion unused)."""
    csebbs = _sebbs()
    return csebbs.CSEBBsPredictor(
        step_filter_length=dict(settings["step_filter_length"]),
        merge_threshold_abs=_infinite(settings["merge_threshold_abs"]),
        merge_threshold_rel=_infinite(settings["merge_threshold_rel"]),
        detection_threshold=(None if not settings.get("detection_threshold") else
                             dict(settings["detection_threshold"])),
        sound_classes=[str(c) for c in classes])


def boxes(settings, filenames, probs, classes, frame_seconds, valid) -> dict[str, list]:
    """{audio id: [(onset, offset, class, confidence), ...]} of every clip."""
    tables = _tables(probs, filenames, classes, frame_seconds, valid)
    return predictor(settings, classes).predict(tables)


def events(settings, filenames: Sequence[str], probs: np.ndarray, classes: Sequence[str],
           frame_seconds: float, valid, threshold: float) -> list[dict[str, Any]]:
    """Event dicts (filename, onset, offset, event_label) of the boxes whose confidence passes
    the tuned per-class detection threshold (else `threshold`)."""
    per_class = _detection_thresholds(settings, classes, threshold)
    found = boxes(settings, filenames, probs, classes, frame_seconds, valid)
    out = []
    for name in filenames:
        for onset, offset, label, confidence in found[sed_scores_inputs.audio_id(name)]:
            if confidence > per_class[label]:
                out.append({"filename": name, "onset": float(onset), "offset": float(offset),
                            "event_label": label})
    return out


def _detection_thresholds(settings, classes: Sequence[str], threshold: float
                          ) -> dict[str, float]:
    """{class: detection threshold}: the tuned one, or `threshold` for a class tuning chose none
    for (no reference event on validation). A tuned infinite threshold (on validation no
    finite one scored better) is written to JSON as None and read back as infinite: the class
    still detects nothing, as in the run that tuned it."""
    tuned = settings.get("detection_threshold") or {}

    def one(c: str) -> float:
        if c not in tuned:
            return float(threshold)
        return np.inf if tuned[c] is None else float(tuned[c])
    return {str(c): one(str(c)) for c in classes}


def score_tables(settings, filenames, probs, classes, frame_seconds, valid) -> dict:
    """sed_scores_eval tables of the boxes (a box's confidence over its extent, -inf
    elsewhere), for PSDS and the best collar F1 over thresholds."""
    from sebbs.utils import sed_scores_from_sebbs

    found = boxes(settings, filenames, probs, classes, frame_seconds, valid)
    v = sed_scores_inputs.valid_frames(valid, len(filenames), np.asarray(probs).shape[1])
    durations = {sed_scores_inputs.audio_id(n): float(k) * float(frame_seconds)
                 for n, k in zip(filenames, v)}
    return sed_scores_from_sebbs(found, [str(c) for c in classes], audio_duration=durations)
