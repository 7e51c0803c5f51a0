"""Frame probabilities -> sound events with the post-processing a run uses: the seed's threshold
and median filter (sedjax.metrics.postprocess), or cSEBBs tuned on validation
(sedjax.metrics.csebbs, the optional sebbs package)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sedjax.metrics import postprocess


def _cfg(config: Any, name: str) -> Any:
    return config[name] if isinstance(config, Mapping) else getattr(config, name)


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
    """(N, T, C) frame probabilities -> event dicts: cSEBBs when the postprocess section holds
    tuned ones, else thresholded, median-filtered and decoded (sedjax.metrics.postprocess).

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
    if boxes:  # cSEBBs tuned on validation replace threshold + median filter
        from sedjax.metrics import csebbs  # sed_scores_eval and sebbs: imported when used
        return csebbs.events(boxes, filenames, probs, classes, frame_seconds,
                             np.minimum(num_valid_frames, num_frames), threshold)
    return postprocess.median_filter_events(filenames, probs, classes, threshold,
                                            _cfg(postprocess_config, "median_filter"),
                                            frame_seconds, num_valid_frames)
