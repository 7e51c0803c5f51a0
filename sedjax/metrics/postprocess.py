"""Frame probabilities -> sound events: the seed's post-processing (threshold, median filter)
or tuned cSEBBs. Event files are read and written by sedjax.data.event_files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.ndimage

# Event times are multiples of the frame length; rounding to a microsecond removes float noise
# (3 * 0.02 = 0.06000000000000001) without moving any time by a meaningful amount.
_TIME_DECIMALS = 6


def _cfg(config: Any, name: str) -> Any:
    """Reads `name` from a ConfigDict / attribute object or a plain mapping."""
    if isinstance(config, Mapping):
        return config[name]
    return getattr(config, name)


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


def csebbs_settings(postprocess_config: Any) -> dict | None:
    """The tuned cSEBB settings of a postprocess section (sedjax.metrics.tuning), or None."""
    found = (postprocess_config.get("csebbs") if isinstance(postprocess_config, Mapping)
             else getattr(postprocess_config, "csebbs", None))
    if not found:
        return None
    return found.to_dict() if hasattr(found, "to_dict") else dict(found)


def probabilities_to_events(
    filenames: Sequence[str],
    probs: np.ndarray,
    postprocess_config: Any,
    classes: Sequence[str],
    frame_seconds: float,
    num_valid_frames: Sequence[int] | np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Thresholds, median-filters and decodes (N, T, C) frame probabilities into event dicts.

    frame_seconds: the length of one frame of `probs` (the model's output rate);
    num_valid_frames: frames of each clip that hold audio (the rest is padding).
    """
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] != len(filenames) or probs.shape[2] != len(classes):
        raise ValueError(
            f"probs must be ({len(filenames)}, T, {len(classes)}) for {len(filenames)} files, "
            f"got {probs.shape}"
        )
    num_frames = probs.shape[1]
    if num_valid_frames is None:
        num_valid_frames = np.full(len(filenames), num_frames)
    num_valid_frames = np.asarray(num_valid_frames)
    if num_valid_frames.shape != (len(filenames),):
        raise ValueError(f"num_valid_frames must have shape ({len(filenames)},)")

    threshold = float(_cfg(postprocess_config, "threshold"))
    boxes = csebbs_settings(postprocess_config)
    if boxes:  # cSEBBs tuned on validation (sedjax.metrics.tuning) replace threshold + median filter
        from sedjax.metrics import csebbs
        return csebbs.events(boxes, filenames, probs, classes, frame_seconds,
                             np.minimum(num_valid_frames, num_frames), threshold)
    size = _cfg(postprocess_config, "median_filter")
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
