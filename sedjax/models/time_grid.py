"""The output time grid of the models: how many input frames one output frame spans, how many
output frames a clip has and how many of them hold audio, and their length in seconds."""

from __future__ import annotations

import math

import numpy as np


def time_pooling(model_config) -> int:
    """How many input frames one output frame spans (product of the time pool sizes)."""
    return math.prod(int(p[0]) for p in model_config.pool_sizes)


def output_frames(num_frames: int, model_config) -> int:
    """Output frames of a num_frames input (each max-pool drops an incomplete last window)."""
    for p in model_config.pool_sizes:
        num_frames //= int(p[0])
    return num_frames


def frame_seconds(config) -> float:
    """Seconds per output frame: the feature hop times the model's time pooling."""
    f = config.features
    return f.hop_length * time_pooling(config.model) / f.sample_rate


def valid_output_frames(frames, num_frames: int, model_config) -> np.ndarray:
    """Output frames that see real audio, for clips with `frames` valid input frames each."""
    pool = time_pooling(model_config)
    return np.minimum(-(-np.asarray(frames) // pool), output_frames(num_frames, model_config))
