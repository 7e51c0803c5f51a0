"""The DCASE2018 Task 4 metric through sed_eval (event- and segment-based), and its table."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import sed_eval

from sedjax.system.files import to_jsonable

# The settings evaluate_events reads from its evaluation config (a config's `evaluation`
# section, e.g. configs/baseline.py's); every one must be given.
SETTING_KEYS = ("t_collar", "percentage_of_length", "evaluate_onset", "evaluate_offset",
                "event_matching_type", "segment_seconds")


def evaluation_settings(evaluation_config: Any) -> dict[str, Any]:
    """Returns the SETTING_KEYS values of a ConfigDict / mapping; ValueError when one is missing.

    Other keys are ignored.
    """
    if evaluation_config is None:
        raise ValueError(f"no evaluation settings given (need {', '.join(SETTING_KEYS)})")
    values, missing = {}, []
    for key in SETTING_KEYS:
        if isinstance(evaluation_config, Mapping):
            found = key in evaluation_config
            value = evaluation_config[key] if found else None
        else:
            found = hasattr(evaluation_config, key)
            value = getattr(evaluation_config, key, None)
        if found:
            values[key] = value
        else:
            missing.append(key)
    if missing:
        raise ValueError(f"evaluation settings lack {', '.join(missing)}")
    return values


def _group_by_file(
    events: Sequence[Mapping[str, Any]], files: set[str], classes: set[str], what: str
) -> dict[str, list[dict[str, Any]]]:
    """Returns {filename: [event dicts]}, checking files and labels."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        name, label = event["filename"], event["event_label"]
        if name not in files:
            raise ValueError(f"{what} event for file {name!r}, which is not in the evaluated files")
        if label not in classes:
            raise ValueError(f"{what} event label {label!r} (file {name!r}) is not a known class")
        grouped.setdefault(name, []).append(
            {
                "filename": name,
                "onset": float(event["onset"]),
                "offset": float(event["offset"]),
                "event_label": label,
            }
        )
    return grouped


def _summarize(metrics: Any) -> dict[str, Any]:
    """Returns macro, micro and class-wise F/P/R/ER of one sed_eval metrics object."""
    f = float  # sed_eval mixes ints (a zero-score precision is int 0) and floats
    macro = metrics.results_class_wise_average_metrics()
    micro = metrics.results_overall_metrics()
    class_wise = {}
    for label, r in metrics.results_class_wise_metrics().items():
        class_wise[label] = {
            "f_measure": f(r["f_measure"]["f_measure"]),
            "precision": f(r["f_measure"]["precision"]),
            "recall": f(r["f_measure"]["recall"]),
            "error_rate": f(r["error_rate"]["error_rate"]),
            "deletion_rate": f(r["error_rate"]["deletion_rate"]),
            "insertion_rate": f(r["error_rate"]["insertion_rate"]),
            "num_reference": int(r["count"]["Nref"]),
            "num_estimated": int(r["count"]["Nsys"]),
        }
    return {
        "f_measure_macro": f(macro["f_measure"]["f_measure"]),
        "precision_macro": f(macro["f_measure"]["precision"]),
        "recall_macro": f(macro["f_measure"]["recall"]),
        "error_rate_macro": f(macro["error_rate"]["error_rate"]),
        "f_measure_micro": f(micro["f_measure"]["f_measure"]),
        "precision_micro": f(micro["f_measure"]["precision"]),
        "recall_micro": f(micro["f_measure"]["recall"]),
        "error_rate_micro": f(micro["error_rate"]["error_rate"]),
        "class_wise": class_wise,
    }


def evaluate_events(
    reference_events: Sequence[Mapping[str, Any]],
    estimated_events: Sequence[Mapping[str, Any]],
    filenames: Sequence[str],
    classes: Sequence[str],
    evaluation_config: Any,
) -> dict[str, Any]:
    """Scores estimated against reference events file by file with sed_eval; JSON-ready dict.

    classes: the class labels scored (every event label must be one of them).
    evaluation_config: the evaluation settings, a ConfigDict or mapping with SETTING_KEYS
    (e.g. a config's `evaluation` section); ValueError when one is missing.
    """
    s = evaluation_settings(evaluation_config)
    classes = list(classes)
    files = list(dict.fromkeys(filenames))
    reference = _group_by_file(reference_events, set(files), set(classes), "reference")
    estimated = _group_by_file(estimated_events, set(files), set(classes), "estimated")

    event_metrics = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=classes,
        t_collar=float(s["t_collar"]),
        percentage_of_length=float(s["percentage_of_length"]),
        evaluate_onset=bool(s["evaluate_onset"]),
        evaluate_offset=bool(s["evaluate_offset"]),
        event_matching_type=str(s["event_matching_type"]),
        # The challenge's rule: a class the system never outputs scores precision 0, not NaN.
        empty_system_output_handling="zero_score",
    )
    segment_metrics = sed_eval.sound_event.SegmentBasedMetrics(
        event_label_list=classes, time_resolution=float(s["segment_seconds"])
    )
    # File by file, as the challenge's evaluation_measures.py: sed_eval matches events within
    # one file only, and a file without events contributes its false alarms (or nothing).
    for name in files:
        ref, est = reference.get(name, []), estimated.get(name, [])
        event_metrics.evaluate(reference_event_list=ref, estimated_event_list=est)
        segment_metrics.evaluate(reference_event_list=ref, estimated_event_list=est)

    with warnings.catch_warnings():
        # numpy warns when every class's score is NaN ("mean of empty slice"); that NaN is
        # expected (e.g. no estimated segment at all) and is reported as null below.
        warnings.simplefilter("ignore", RuntimeWarning)
        event_summary, segment_summary = _summarize(event_metrics), _summarize(segment_metrics)
    results = {
        "event_based": event_summary,
        "segment_based": segment_summary,
        "num_files": len(files),
        "num_reference_events": sum(len(v) for v in reference.values()),
        "num_estimated_events": sum(len(v) for v in estimated.values()),
        "settings": s,
    }
    # NaN (undefined: e.g. recall of a class without reference events) -> None / JSON null.
    return to_jsonable(results)


def _pct(x: float | None) -> str:
    """Formats a fraction as a percentage, '-' when undefined."""
    return "     -" if x is None else f"{100.0 * x:6.2f}"


def _num(x: float | None) -> str:
    """Formats an error rate, '-' when undefined."""
    if x is None:
        return "    -"
    # sed_eval divides by (Nref + eps): false alarms of a class without reference events give
    # an ER near 1e15, which would wreck the table's columns.
    return f"{x:5.2f}" if error_rate_is_defined(x) else f"{x:5.0e}"


def error_rate_is_defined(x: float) -> bool:
    """False for sed_eval's ~1e15 ER of a class with false alarms but no reference events."""
    return abs(x) < 100


def format_table(results: Mapping[str, Any]) -> str:
    """Returns the per-class table (event F1/P/R/ER, segment F1/ER) with macro and micro rows."""
    ev, seg = results["event_based"], results["segment_based"]
    labels = list(ev["class_wise"])
    width = max([len("class")] + [len(k) for k in labels] + [len("macro (class average)")])
    header = (
        f"{'class':<{width}}  {'ev F1%':>6}  {'ev P%':>6}  {'ev R%':>6}  {'ev ER':>5}  "
        f"{'Nref':>5}  {'Nsys':>5}  {'seg F1%':>7}  {'seg ER':>6}"
    )
    rule = "-" * len(header)
    lines = [header, rule]
    for label in labels:
        e, g = ev["class_wise"][label], seg["class_wise"].get(label, {})
        lines.append(
            f"{label:<{width}}  {_pct(e['f_measure'])}  {_pct(e['precision'])}  "
            f"{_pct(e['recall'])}  "
            f"{_num(e['error_rate'])}  {int(e['num_reference']):>5}  {int(e['num_estimated']):>5}  "
            f"{_pct(g.get('f_measure')):>7}  {_num(g.get('error_rate')):>6}"
        )
    lines.append(rule)
    for name, suffix in (("macro (class average)", "macro"), ("micro (overall)", "micro")):
        lines.append(
            f"{name:<{width}}  {_pct(ev['f_measure_' + suffix])}  "
            f"{_pct(ev['precision_' + suffix])}  "
            f"{_pct(ev['recall_' + suffix])}  {_num(ev['error_rate_' + suffix])}  "
            f"{'':>5}  {'':>5}  {_pct(seg['f_measure_' + suffix]):>7}  "
            f"{_num(seg['error_rate_' + suffix]):>6}"
        )
    lines.append(
        f"{results.get('num_files', '?')} files, "
        f"{results.get('num_reference_events', '?')} reference / "
        f"{results.get('num_estimated_events', '?')} estimated events; "
        f"challenge metric = event-based macro F1 {_pct(ev['f_measure_macro']).strip()} %"
    )
    return "\n".join(lines)
