"""Threshold-independent scores of frame probabilities with sed_scores_eval (the DCASE reference).

The event-based F1 of sedjax.metrics.sed_eval_scores scores one operating point (threshold 0.5 plus a median
filter). The figures here score the frame probabilities themselves, over every threshold:

* PSDS1 and PSDS2 (Bilen et al., ICASSP 2020; computed exactly as Ebbers et al., ICASSP 2022),
  the DCASE 2021-2023 Task 4 settings by default (`PSDS1`, `PSDS2`);
* the best collar-based F1 over thresholds (one threshold per class), with the DCASE2018
  collars (onset 0.2 s, offset max(0.2 s, 20 % of the reference event)), macro-averaged over
  classes, with each class's best F1 and its threshold.

sed_scores_eval's inputs (score tables, ground truth, durations, keyed by audio id) are built
by sedjax.metrics.sed_scores_inputs.

The scores are the frame probabilities, optionally median-filtered along time first
(`median_filter`, in frames: the filter of the system's post-processing, applied to the
probabilities instead of the binarized activity, as the DCASE 2022-2023 baselines score their
median-filtered scores). Thresholds replace the post-processing's binarization.

Only classes with reference events in the scored files are scored (sed_scores_eval needs
them); the others are listed in `classes_without_reference_events`. With one class left,
PSDS has no other class to count cross-triggers on and is scored without that penalty
(`for_classes`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sedjax.metrics.sed_scores_inputs import (valid_frames, absent_classes, audio_durations,
                                              ground_truth, score_dataframes)
from sedjax.system.files import to_jsonable


@dataclasses.dataclass(frozen=True)
class PSDSSettings:
    """One PSDS operating definition (sed_scores_eval.intersection_based.psds's arguments)."""

    dtc_threshold: float
    gtc_threshold: float
    cttc_threshold: float | None = None
    alpha_ct: float = 0.0
    alpha_st: float = 1.0
    max_efpr: float = 100.0  # false positives per unit_of_time
    unit_of_time: str = "hour"


# DCASE 2021-2023 Task 4: scenario 1 (localisation) and scenario 2 (classification).
PSDS1 = PSDSSettings(dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=None, alpha_ct=0.0,
                     alpha_st=1.0, max_efpr=100.0)
PSDS2 = PSDSSettings(dtc_threshold=0.1, gtc_threshold=0.1, cttc_threshold=0.3, alpha_ct=0.5,
                     alpha_st=1.0, max_efpr=100.0)


@dataclasses.dataclass(frozen=True)
class CollarSettings:
    """The collar-based F1 (sed_scores_eval.collar_based.best_fscore's arguments)."""

    onset_collar: float = 0.2  # seconds
    offset_collar: float = 0.2  # seconds (at least)
    offset_collar_rate: float = 0.2  # share of the reference event's length (at least)


def _default_psds() -> dict[str, PSDSSettings]:
    return {"psds1": PSDS1, "psds2": PSDS2}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything threshold_independent computes: named PSDS definitions and the collar F1.

    psds: {name: PSDSSettings}; each name becomes a key of the figures ("psds1", "psds2").
    time_decimals: sed_scores_eval's rounding of times (a detection exactly on a criterion's
    boundary is not lost to float error).
    num_jobs: processes sed_scores_eval may use (1: none).
    """

    psds: Mapping[str, PSDSSettings] = dataclasses.field(default_factory=_default_psds)
    collar: CollarSettings = dataclasses.field(default_factory=CollarSettings)
    time_decimals: int = 6
    num_jobs: int = 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the settings (as written beside the figures)."""
        return {
            "psds": {k: dataclasses.asdict(v) for k, v in self.psds.items()},
            "collar": dataclasses.asdict(self.collar),
            "time_decimals": self.time_decimals,
        }

    @classmethod
    def from_mapping(cls, values: Any) -> "Settings":
        """Settings from None (the defaults), a Settings, or a (nested) mapping / ConfigDict.

        A mapping overrides the defaults: {"psds": {"psds1": {"max_efpr": 50}},
        "collar": {"onset_collar": 0.25}, "num_jobs": 2}. A PSDS name that is not a default
        must give dtc_threshold and gtc_threshold. Unknown keys raise ValueError.
        """
        if values is None:
            return cls()
        if isinstance(values, Settings):
            return values
        values = _plain(values)
        unknown = set(values) - {"psds", "collar", "time_decimals", "num_jobs"}
        if unknown:
            raise ValueError(f"unknown threshold-independent settings: {sorted(unknown)}")
        psds = dict(_default_psds())
        for name, given in (values.get("psds") or {}).items():
            given = _plain(given)
            base = psds.get(name)
            try:
                psds[name] = (dataclasses.replace(base, **given) if base is not None
                              else PSDSSettings(**given))
            except TypeError as e:
                raise ValueError(f"PSDS settings {name!r}: {e}") from None
        try:
            collar = dataclasses.replace(CollarSettings(), **_plain(values.get("collar") or {}))
        except TypeError as e:
            raise ValueError(f"collar settings: {e}") from None
        return cls(psds=psds, collar=collar,
                   time_decimals=int(values.get("time_decimals", 6)),
                   num_jobs=int(values.get("num_jobs", 1)))


def _plain(values: Any) -> dict:
    """A dict of a mapping or an ml_collections ConfigDict."""
    if hasattr(values, "to_dict"):
        values = values.to_dict()
    if not isinstance(values, Mapping):
        raise ValueError(f"expected a mapping of settings, got {type(values).__name__}")
    return dict(values)


def threshold_independent(
    probs: np.ndarray,
    filenames: Sequence[str],
    frame_seconds: float,
    classes: Sequence[str],
    reference_events: Sequence[Mapping[str, Any]],
    durations: Mapping[str, float] | None = None,
    num_valid_frames: Sequence[int] | np.ndarray | None = None,
    settings: Settings | Mapping[str, Any] | None = None,
    median_filter: int | Sequence[int] | None = None,
    tables: Mapping[str, Any] | None = None,
    collar: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """PSDS1, PSDS2 and the best collar-based F1 of frame probabilities; (figures, curves).

    probs: (N, T, C) frame probabilities, row i for filenames[i], class c for classes[c];
    frame_seconds: seconds per frame of probs; num_valid_frames: frames of each clip that hold
    audio (default all T). reference_events: DCASE event dicts {'filename', 'onset', 'offset',
    'event_label'} (files of `filenames` only). durations: {filename: seconds} of every clip
    (None: num_valid_frames * frame_seconds). settings: `Settings` or a mapping of overrides
    (see Settings.from_mapping); None: PSDS1, PSDS2 and the DCASE2018 collars.
    median_filter: frames (one, or one per class) of a median filter applied to the
    probabilities first (e.g. config.postprocess.median_filter); None: the raw probabilities.
    tables: score tables {audio id: DataFrame} to score instead of the probabilities' (e.g.
    the boxes of sedjax.metrics.csebbs.score_tables); probs then only give the clips' valid frames.
    collar: whether to compute the best collar-based F1 too (False: PSDS only, e.g. to pick
    checkpoints; its keys are then absent).

    figures (JSON-ready, NaN/inf as None):
      psds1, psds2 (one key per settings.psds name), collar_f1_best_macro: the headline numbers;
      psds_detail: {name: {"psds", "class_wise": {label: single-class PSDS},
                    "alpha_ct_applied": the cross-trigger weight in effect (see for_classes)}};
      collar_best: {f_measure_macro, precision_macro, recall_macro, f_measure_micro,
                    precision_micro, recall_micro (all at each class's best threshold),
                    class_wise: {label: {f_measure, precision, recall, threshold,
                    num_reference, true_positives, false_positives}}};
      num_files, num_reference_events, dataset_seconds, median_filter, settings;
      classes_without_reference_events: the classes left out (no reference event in these
      files: PSDS and collar F1 are over the other classes; None for every figure if none has
      one).
    curves (numpy arrays, not for JSON): {name: {"etpr", "efpr", "class_wise":
      {label: {"tpr", "efpr", "thresholds"}}}} the PSD-ROCs (efpr per settings' unit_of_time).
    """
    settings = Settings.from_mapping(settings)
    classes = [str(c) for c in classes]
    if tables is None:
        scores = score_dataframes(probs, filenames, frame_seconds, classes, num_valid_frames,
                                  median_filter)
        valid = [len(table) for table in scores.values()]  # in the order of filenames
    else:
        scores = dict(tables)
        valid = valid_frames(num_valid_frames, len(filenames), np.asarray(probs).shape[1])
    durs = audio_durations(filenames, durations, frame_seconds, valid)
    # sed_scores_eval needs reference events of every class it scores (a class without any has
    # no true positive rate, and as "other class" a cross-trigger rate divided by zero time): a
    # small test set (or recordings of a few classes) is scored over the classes it has, the
    # others listed
    left_out = absent_classes(classes, reference_events)
    figures: dict[str, Any] = {"classes_without_reference_events": left_out}
    classes = [c for c in classes if c not in left_out]
    if left_out:
        scores = {k: table.drop(columns=left_out) for k, table in scores.items()}
    gt = ground_truth(reference_events, filenames, classes)
    if not classes:
        figures.update({name: None for name in settings.psds}, collar_f1_best_macro=None,
                       num_files=len(scores), num_reference_events=0,
                       settings=settings.to_dict())
        return to_jsonable(figures), {}

    detail, curves = _psds(scores, gt, durs, settings, classes)
    figures.update({name: d["psds"] for name, d in detail.items()})
    if collar:
        best = _collar_best(scores, gt, settings, classes)
        figures.update(collar_f1_best_macro=best["f_measure_macro"], psds_detail=detail,
                       collar_best=best)
    else:
        figures["psds_detail"] = detail
    figures["num_files"] = len(scores)
    figures["num_reference_events"] = sum(len(v) for v in gt.values())
    figures["dataset_seconds"] = float(sum(durs.values()))
    figures["median_filter"] = (None if median_filter is None else
                                int(median_filter) if np.ndim(median_filter) == 0 else
                                [int(k) for k in median_filter])
    figures["settings"] = settings.to_dict()
    return to_jsonable(figures), curves


def for_classes(s: PSDSSettings, num_classes: int) -> PSDSSettings:
    """The PSDS settings to give sed_scores_eval when `num_classes` classes are scored.

    With one class there is no other class for a detection to cross-trigger on: the
    cross-trigger term of the effective FP rate (alpha_ct times the mean cross-trigger rate
    over the *other* classes) is an empty mean, which counts nothing, so the class is scored
    without it (cttc_threshold None, alpha_ct 0). True positives and false positives do not
    depend on cttc_threshold, so nothing else changes. sed_scores_eval 0.0.4 itself cannot
    score it: its cross-trigger statistics of a class with no other class are an empty dict,
    which it then indexes by an array (TypeError: unhashable type: 'numpy.ndarray').
    """
    if num_classes > 1 or s.cttc_threshold is None:
        return s
    return dataclasses.replace(s, cttc_threshold=None, alpha_ct=0.0)


def _psds(scores: dict, gt: dict, durs: dict, settings: Settings, classes: list) -> tuple:
    """({name: {'psds', 'class_wise', 'alpha_ct_applied'}}, {name: PSD-ROC curves}) of every
    settings.psds; alpha_ct_applied is the cross-trigger weight in effect (0 with one class,
    see for_classes)."""
    from sed_scores_eval import intersection_based

    detail: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for name, configured in settings.psds.items():
        s = for_classes(configured, len(classes))
        value, class_psds, (etpr, efpr), class_rocs = intersection_based.psds(
            scores=scores, ground_truth=gt, audio_durations=durs,
            dtc_threshold=s.dtc_threshold, gtc_threshold=s.gtc_threshold,
            cttc_threshold=s.cttc_threshold, alpha_ct=s.alpha_ct, alpha_st=s.alpha_st,
            unit_of_time=s.unit_of_time, max_efpr=s.max_efpr,
            time_decimals=settings.time_decimals, num_jobs=settings.num_jobs)
        detail[name] = {"psds": float(value),
                        "class_wise": {c: float(class_psds[c]) for c in classes},
                        "alpha_ct_applied": s.alpha_ct}
        curves[name] = {
            "etpr": np.asarray(etpr), "efpr": np.asarray(efpr),
            "class_wise": {c: {"tpr": np.asarray(roc[0]), "efpr": np.asarray(roc[1]),
                               "thresholds": np.asarray(roc[2])}
                           for c, roc in class_rocs.items()},
        }
    return detail, curves


def _collar_best(scores: dict, gt: dict, settings: Settings, classes: list) -> dict:
    """The collar-based F1 at each class's best threshold (macro, micro, per class)."""
    from sed_scores_eval import collar_based

    c = settings.collar
    f, p, r, thresholds, stats = collar_based.best_fscore(
        scores=scores, ground_truth=gt, onset_collar=c.onset_collar,
        offset_collar=c.offset_collar, offset_collar_rate=c.offset_collar_rate,
        time_decimals=settings.time_decimals, num_jobs=settings.num_jobs)
    return {
        "f_measure_macro": float(f["macro_average"]),
        "precision_macro": float(p["macro_average"]),
        "recall_macro": float(r["macro_average"]),
        "f_measure_micro": float(f["micro_average"]),
        "precision_micro": float(p["micro_average"]),
        "recall_micro": float(r["micro_average"]),
        "class_wise": {
            label: {
                "f_measure": float(f[label]), "precision": float(p[label]),
                "recall": float(r[label]), "threshold": float(thresholds[label]),
                "num_reference": int(stats[label]["n_ref"]),
                "true_positives": int(stats[label]["tps"]),
                "false_positives": int(stats[label]["fps"]),
            }
            for label in classes
        },
    }


def _describe(s: PSDSSettings) -> str:
    parts = [f"dtc {s.dtc_threshold:g}", f"gtc {s.gtc_threshold:g}"]
    if s.cttc_threshold is not None:
        parts.append(f"cttc {s.cttc_threshold:g}")
    if s.alpha_ct:
        parts.append(f"alpha_ct {s.alpha_ct:g}")
    parts.append(f"alpha_st {s.alpha_st:g}")
    parts.append(f"max eFPR {s.max_efpr:g}/{s.unit_of_time}")
    return ", ".join(parts)


def format_lines(figures: Mapping[str, Any], class_wise: bool = False) -> str:
    """A short printable block of threshold_independent's figures (optionally per class)."""

    def num(x, pct=False):
        if x is None:
            return "-"
        return f"{100 * x:.2f} %" if pct else f"{x:.4f}"

    settings = Settings.from_mapping(figures.get("settings"))
    c = settings.collar
    rows = [(f"{name.upper()} ({_describe(s)})", num(figures.get(name)))
            for name, s in settings.psds.items() if name in figures]
    rows.append((f"best collar F1, macro (onset {c.onset_collar:g} s, offset "
                 f"max({c.offset_collar:g} s, {100 * c.offset_collar_rate:g} %), "
                 "per-class thresholds)",
                 num(figures.get("collar_f1_best_macro"), pct=True)))
    width = max(len(r[0]) for r in rows)
    mf = figures.get("median_filter")
    what = ("frame probabilities" if mf in (None, 1) else
            f"frame probabilities median-filtered over {mf} frames")
    lines = [f"threshold-independent (sed_scores_eval, {what} of "
             f"{figures.get('num_files', '?')} files):"]
    lines += [f"  {label:<{width}}  {value:>8}" for label, value in rows]
    if figures.get("classes_without_reference_events"):
        lines.append("  classes without reference events, left out: "
                     + ", ".join(figures["classes_without_reference_events"]))
    if class_wise:
        cw = figures.get("collar_best", {}).get("class_wise", {})
        names = [n for n in settings.psds if n in figures.get("psds_detail", {})]
        w = max([len("class")] + [len(k) for k in cw])
        lines.append(f"  {'class':<{w}}  {'best F1%':>8}  {'thresh':>6}  "
                     + "  ".join(f"{n.upper():>6}" for n in names))
        for label, v in cw.items():
            th = v.get("threshold")
            psds_cells = "  ".join(
                f"{num(figures['psds_detail'][n]['class_wise'].get(label)):>6}" for n in names)
            lines.append(f"  {label:<{w}}  {num(v.get('f_measure'), pct=True)[:-2]:>8}  "
                         f"{'-' if th is None else f'{th:.3f}':>6}  {psds_cells}")
    return "\n".join(lines)


def save_curves(path: str | os.PathLike, curves: Mapping[str, Any]) -> str:
    """Writes threshold_independent's curves to one .npz (keys 'psds1/etpr',
    'psds1/class_wise/Cat/tpr', ...), atomically; returns the path."""
    from sedjax.system import files

    flat: dict[str, np.ndarray] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(f"{prefix}/{k}" if prefix else str(k), v)
        else:
            flat[prefix] = np.asarray(node)

    walk("", curves)
    path = os.fspath(path)
    with files.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **flat)
    return path
