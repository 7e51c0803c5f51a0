"""Frame operations of post-processing: threshold, median filter, frames -> events (the seed's
post-processing). sedjax.metrics.detection chooses between it and cSEBBs; event files are read
and written by sedjax.data.event_files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.ndimage

# Event times are multiples of the frame length; rounding to a microsecond removes float noise
# (3 * 0.02 = 0.06000000000000001) without moving any time by a meaningful amount.
_TIME_DECIMALS = 6


def binarize(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Returns uint8 activity, 1 where probs >= threshold, shape unchanged (..., T, C)."""
    # `>=` as dcase_util's ProbabilityEncoder 'global_threshold', which the seed used.
    return (np.asarray(probs) >= threshold).astype(np.uint8)


def median_filter(binary: np.ndarray, size) -> np.ndarray:
    """Median-filters binary activity (..., T, C) along time only, per clip and class.

    `size`: one window length in frames for every class, or one per class (C lengths).
    """
    binary = np.asarray(binary)
    if binary.ndim < 2:
        raise ValueError(f"median_filter expects (..., T, C), got shape {binary.shape}")
    if np.ndim(size) == 1:
        sizes = [int(s) for s in size]
        if len(sizes) != binary.shape[-1]:
            raise ValueError(f"median_filter: {len(sizes)} lengths for {binary.shape[-1]} classes")
        return np.stack([median_filter(binary[..., c:c + 1], s)[..., 0]
                         for c, s in enumerate(sizes)], axis=-1)
    size = int(size)
    if size <= 1:
        return binary.copy()
    if binary.ndim == 2:
        # The seed's call: a (size, 1) window, so classes never mix; scipy's 'reflect' ends.
        return scipy.ndimage.median_filter(binary, size=(size, 1))
    flat = binary.reshape((-1,) + binary.shape[-2:])
    out = np.stack([scipy.ndimage.median_filter(clip, size=(size, 1)) for clip in flat])
    return out.reshape(binary.shape)


def frames_to_events(
    binary_tc: np.ndarray, classes: Sequence[str], frame_seconds: float
) -> list[tuple[float, float, str]]:
    """Returns (onset, offset, label) of every contiguous active run in a (T, C) activity."""
    binary_tc = np.asarray(binary_tc).astype(bool)
    if binary_tc.ndim != 2 or binary_tc.shape[1] != len(classes):
        raise ValueError(f"expected activity (T, {len(classes)}), got shape {binary_tc.shape}")
    events = []
    for c, label in enumerate(classes):
        # Pad with inactive frames so every run has a rising and a falling edge.
        padded = np.concatenate([[False], binary_tc[:, c], [False]]).astype(np.int8)
        edges = np.diff(padded)
        starts = np.flatnonzero(edges == 1)
        stops = np.flatnonzero(edges == -1)  # index of the first inactive frame = last + 1
        for start, stop in zip(starts, stops):
            events.append(
                (
                    round(float(start) * frame_seconds, _TIME_DECIMALS),
                    round(float(stop) * frame_seconds, _TIME_DECIMALS),
                    label,
                )
            )
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    return events


def median_filter_events(
    filenames: Sequence[str],
    probs: np.ndarray,
    classes: Sequence[str],
    threshold: float,
    size,
    frame_seconds: float,
    num_valid_frames: np.ndarray,
) -> list[dict[str, Any]]:
    """The seed's post-processing: each clip's valid frames thresholded, median-filtered
    (`size`: one length or one per class) and decoded into event dicts."""
    num_frames = probs.shape[1]
    frame_seconds = float(frame_seconds)
    events = []
    for name, clip, n in zip(filenames, probs, num_valid_frames):
        # Drop the zero padding of short clips before filtering so it neither creates nor
        # shortens events near the real end of the clip.
        n = int(min(max(int(n), 0), num_frames))
        if n == 0:
            continue
        active = median_filter(binarize(clip[:n], threshold), size)
        for onset, offset, label in frames_to_events(active, classes, frame_seconds):
            events.append(
                {"filename": name, "onset": onset, "offset": offset, "event_label": label}
            )
    return events
