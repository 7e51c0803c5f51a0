"""Clip- and frame-level F1 on the host: validation scores and per-class thresholds."""

from __future__ import annotations

import numpy as np


def f1_per_class(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """F1 of each class (last axis) over all other axes; 0 where a class has no TP+FP+FN."""
    pred, target = pred.astype(bool), target.astype(bool)
    axes = tuple(range(pred.ndim - 1))
    tp = (pred & target).sum(axes)
    fp = (pred & ~target).sum(axes)
    fn = (~pred & target).sum(axes)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def macro_f1(probs: np.ndarray, target: np.ndarray, threshold) -> float:
    """Macro (class-average) F1 of probs >= threshold (scalar or per class)."""
    return float(f1_per_class(probs >= np.asarray(threshold), target).mean())


def best_thresholds(probs: np.ndarray, target: np.ndarray, grid) -> np.ndarray:
    """Per-class threshold from `grid` maximizing that class's F1 (first best on ties)."""
    scores = np.stack([f1_per_class(probs >= t, target) for t in grid])  # (grid, C)
    return np.asarray(grid, np.float32)[scores.argmax(0)]
