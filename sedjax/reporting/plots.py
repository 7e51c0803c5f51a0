"""Pictures of a run: training curves of every pass or recipe, and piano rolls of test clips.

Figure + Agg canvas directly (no pyplot, no global backend switch): safe in notebooks and on
machines without a display. Each function returns the path written, or None without matplotlib.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from sedjax.system import files


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        logging.warning("matplotlib is not installed; skipping the plot")
        return None, None
    fig = Figure(figsize=(width, height), tight_layout=True)
    return fig, FigureCanvasAgg(fig)


def _save(canvas, path) -> str:
    path = os.fspath(path)
    with files.atomic_path(path) as tmp:
        canvas.print_figure(tmp, format="png", dpi=100)
    logging.info("Wrote %s", path)
    return path


def plot_training_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]],
                         path: str | os.PathLike,
                         best_epochs: Mapping[str, int] | None = None) -> str | None:
    """One column per stage (e.g. pass1, pass2, mean_teacher): its losses (top) and its
    validation score (bottom) per epoch, the kept epoch (1-based best_epochs[stage]; default:
    the highest score) marked."""
    histories = {k: v for k, v in histories.items() if v}
    if not histories:
        return None
    fig, canvas = _figure(4.5 * len(histories), 6.0)
    if fig is None:
        return None
    for i, (name, history) in enumerate(histories.items()):
        epochs = [h["epoch"] for h in history]
        top = fig.add_subplot(2, len(histories), i + 1)
        losses = [k for k in history[0] if k not in ("epoch", "val_score", "seconds",
                                                     "learning_rate", "consistency_weight")]
        for key in losses:
            top.plot(epochs, [h.get(key) for h in history], marker=".", label=key)
        top.set_title(name)
        top.set_ylabel("training loss (per clip)")
        top.legend(fontsize="small")
        bottom = fig.add_subplot(2, len(histories), len(histories) + i + 1)
        scores = [h["val_score"] for h in history]
        bottom.plot(epochs, scores, marker=".", color="C3")
        kept = (best_epochs or {}).get(name)
        best = epochs.index(kept) if kept in epochs else int(np.argmax(scores))
        bottom.axvline(epochs[best], color="k", linestyle=":", linewidth=1,
                       label=f"kept {scores[best]:.3f} @ epoch {epochs[best]}")
        bottom.set_xlabel("epoch")
        bottom.set_ylabel("validation score")
        bottom.set_ylim(0, 1)
        bottom.legend(fontsize="small")
    return _save(canvas, path)


def plot_piano_rolls(clips: Sequence[Mapping[str, Any]], classes: Sequence[str],
                     frame_seconds: float, feature_seconds: float, threshold: float,
                     path: str | os.PathLike) -> str | None:
    """For each clip, on one time axis: its log-mel, then one row per class with the reference
    events (grey bars), the frame probabilities (line) and the decoded events (coloured bars).

    clips: dicts with 'filename', 'logmel' (T, F), 'valid_frames' (input frames of audio),
    'probs' (T', C), 'reference' and 'estimated' ([(onset, offset, label)]).
    """
    if not clips:
        return None
    c = len(classes)
    fig, canvas = _figure(12.0, len(clips) * (1.6 + 0.35 * c))
    if fig is None:
        return None
    grid = fig.add_gridspec(2 * len(clips), 1, height_ratios=[1.6, 0.35 * c] * len(clips))
    row = {label: i for i, label in enumerate(classes)}
    for k, clip in enumerate(clips):
        mel = np.asarray(clip["logmel"])[: clip["valid_frames"]]
        seconds = mel.shape[0] * feature_seconds
        ax = fig.add_subplot(grid[2 * k])
        ax.imshow(mel.T, origin="lower", aspect="auto", cmap="magma",
                  extent=(0, seconds, 0, mel.shape[1]))
        ax.set_title(clip["filename"], fontsize="small", loc="left")
        ax.set_ylabel("mel band")
        ax.set_xlim(0, seconds)
        roll = fig.add_subplot(grid[2 * k + 1], sharex=ax)
        probs = np.asarray(clip["probs"])
        t = (np.arange(len(probs)) + 0.5) * frame_seconds
        keep = t <= seconds
        for label, i in row.items():
            base = c - 1 - i  # first class on top
            roll.plot(t[keep], base + 0.9 * probs[keep, i], color=f"C{i % 10}", linewidth=0.8)
            roll.axhline(base + 0.9 * threshold, color="0.7", linewidth=0.4, linestyle=":")
        for onset, offset, label in clip["reference"]:
            roll.broken_barh([(onset, offset - onset)], (c - 1 - row[label], 0.45),
                             facecolors="0.75")
        for onset, offset, label in clip["estimated"]:
            roll.broken_barh([(onset, offset - onset)], (c - 1 - row[label] + 0.45, 0.45),
                             facecolors=f"C{row[label] % 10}", alpha=0.7)
        roll.set_yticks(np.arange(c) + 0.45)
        roll.set_yticklabels(list(classes)[::-1], fontsize="x-small")
        roll.set_ylim(0, c)
        roll.set_xlabel("seconds (grey: reference; coloured: detected; line: probability)")
    return _save(canvas, path)
