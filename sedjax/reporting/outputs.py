"""Run reports: results.json (atomic) and a per-class score plot."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np
from absl import logging

from sedjax.system import files

RESULTS_FILENAME = "results.json"


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """Writes obj as pretty-printed strict JSON, atomically; returns the path."""
    path = os.fspath(path)
    text = json.dumps(files.to_jsonable(obj), indent=2, sort_keys=False, allow_nan=False)
    files.write_text(path, text + "\n")
    return path


def print_and_write(text: str, obj: Any, path: str | os.PathLike | None) -> int:
    """A command's ending: prints `text`, writes `obj` as JSON to `path` when given; 0."""
    print(text)
    if path:
        write_json(path, obj)
    return 0


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in `path`, or None when the file does not exist (a stage not done)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_results(
    workdir: str | os.PathLike, results: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> str:
    """Writes <workdir>/results.json (results plus extra top-level keys); returns its path."""
    payload = dict(results)
    for key, value in (extra or {}).items():
        if key in payload:
            raise ValueError(f"extra key {key!r} would overwrite a results key")
        payload[key] = value
    path = write_json(os.path.join(os.fspath(workdir), RESULTS_FILENAME), payload)
    logging.info("Wrote %s", path)
    return path


def _class_f(results: Mapping[str, Any], section: str) -> dict[str, float]:
    """Returns {label: F in %} of one section; undefined scores plot as 0."""
    class_wise = results.get(section, {}).get("class_wise", {})
    return {label: 100.0 * (v.get("f_measure") or 0.0) for label, v in class_wise.items()}


def plot_class_scores(results: Mapping[str, Any], path: str | os.PathLike) -> str | None:
    """Saves a PNG bar chart of per-class event- and segment-based F1; None without matplotlib."""
    try:
        # Figure + Agg canvas directly: no global backend switch (safe inside notebooks).
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        logging.warning("matplotlib is not installed; skipping the class score plot %s", path)
        return None
    path = os.fspath(path)
    event_f = _class_f(results, "event_based")
    segment_f = _class_f(results, "segment_based")
    labels = list(event_f) or list(segment_f)
    x = np.arange(len(labels))
    width = 0.4

    fig = Figure(figsize=(max(6.0, 0.9 * len(labels) + 2), 4.5), tight_layout=True)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(x - width / 2, [event_f.get(k, 0.0) for k in labels], width, label="event-based F1")
    ax.bar(x + width / 2, [segment_f.get(k, 0.0) for k in labels], width, label="segment-based F1")
    macro = results.get("event_based", {}).get("f_measure_macro")
    if macro is not None:
        ax.axhline(100.0 * macro, color="k", linestyle="--", linewidth=1,
                   label=f"event macro F1 {100.0 * macro:.2f} %")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper right", fontsize="small")

    with files.atomic_path(path) as tmp:
        canvas.print_figure(tmp, format="png", dpi=100)
    logging.info("Wrote %s", path)
    return path


def plot_psd_roc(curves: Mapping[str, Any], path: str | os.PathLike,
                 figures: Mapping[str, Any] | None = None) -> str | None:
    """Saves a PNG of the PSD-ROCs of psds.threshold_independent's curves (one panel per PSDS
    definition: the effective TPR over eFPR, thick, and each class's TPR, thin); None without
    matplotlib. figures (the same call's figures) adds the PSDS values to the titles."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        logging.warning("matplotlib is not installed; skipping the PSD-ROC plot %s", path)
        return None
    path = os.fspath(path)
    names = list(curves)
    fig = Figure(figsize=(5.0 * max(len(names), 1), 4.5), tight_layout=True)
    canvas = FigureCanvasAgg(fig)
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, max(len(names), 1), i + 1)
        c = curves[name]
        x_max = float(np.max(c["efpr"])) if len(c["efpr"]) else 1.0  # the max eFPR
        for label, roc in c.get("class_wise", {}).items():
            x, y = np.asarray(roc["efpr"], float), np.asarray(roc["tpr"], float)
            if len(x):  # a class's ROC ends at its last point: hold it to the max eFPR
                x, y = np.append(x, max(x_max, x[-1])), np.append(y, y[-1])
            ax.step(x, y, where="post", linewidth=0.8, alpha=0.6, label=label)
        ax.step(c["efpr"], c["etpr"], where="post", color="k", linewidth=2.0,
                label="effective TPR")
        value = (figures or {}).get(name)
        ax.set_title(name.upper() + (f" = {value:.4f}" if value is not None else ""))
        unit = (figures or {}).get("settings", {}).get("psds", {}).get(name, {}).get(
            "unit_of_time", "hour")
        ax.set_xlabel(f"eFPR (per {unit})")
        ax.set_ylabel("TPR")
        ax.set_ylim(0, 1.02)
        ax.set_xlim(0, x_max)
        ax.legend(loc="lower right", fontsize="x-small")
    with files.atomic_path(path) as tmp:
        canvas.print_figure(tmp, format="png", dpi=100)
    logging.info("Wrote %s", path)
    return path


def optional(what: str, compute: Callable):
    """compute(), or None with a warning when it fails: an optional figure or picture never
    costs the run its other results (a full disk still stops the run: nothing else fits)."""
    try:
        return compute()
    except files.DiskFullError:
        raise
    except Exception as e:  # pylint: disable=broad-except
        logging.warning("%s failed, left out (%s: %s)", what, type(e).__name__, e)
        print(f"warning: {what} failed, left out: {type(e).__name__}: {e}", flush=True)
        return None
