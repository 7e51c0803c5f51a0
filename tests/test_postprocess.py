"""Tests of sedjax.metrics.postprocess: binarize, median filter, frames -> events (event files:
test_event_files.py)."""

import numpy as np
import pytest

from sedjax.metrics import detection, postprocess

CLASSES = ("Cat", "Dog")
PP = {"threshold": 0.5, "median_filter": 5}


def test_binarize_uses_greater_or_equal():
    probs = np.array([[0.49, 0.5], [0.51, 0.0]])
    np.testing.assert_array_equal(postprocess.binarize(probs, 0.5), [[0, 1], [1, 0]])


def test_median_filter_removes_blip_and_fills_gap_per_class():
    # Column 0: a 1-frame blip at 4 and a 2-frame blip at 8-9 (both shorter than half the
    # window), then a long run 14..35 with a 1-frame gap at 19 and a 2-frame gap at 25-26.
    col0 = np.zeros(40, np.uint8)
    col0[4] = 1
    col0[8:10] = 1
    col0[14:36] = 1
    col0[19] = 0
    col0[25:27] = 0
    col1 = np.zeros(40, np.uint8)
    col1[2:12] = 1  # a clean run stays as it is; classes must not mix
    x = np.stack([col0, col1], axis=1)

    y = postprocess.median_filter(x, 5)

    expected0 = np.zeros(40, np.uint8)
    expected0[14:36] = 1
    np.testing.assert_array_equal(y[:, 0], expected0)
    np.testing.assert_array_equal(y[:, 1], col1)
    # Batched input gives the same as clip by clip.
    np.testing.assert_array_equal(postprocess.median_filter(np.stack([x, x[::-1]]), 5)[1],
                                  postprocess.median_filter(x[::-1], 5))


def test_frames_to_events_exact_times():
    b = np.zeros((10, 2), np.uint8)
    b[2:5, 0] = 1  # frames 2,3,4 -> 0.04 .. 0.10
    b[0:2, 1] = 1  # run at the very start
    b[8:10, 1] = 1  # run up to the very end
    events = postprocess.frames_to_events(b, CLASSES, 0.02)
    assert events == [(0.0, 0.04, "Dog"), (0.04, 0.1, "Cat"), (0.16, 0.2, "Dog")]
    assert postprocess.frames_to_events(np.zeros((10, 2)), CLASSES, 0.02) == []


def test_probabilities_to_events_cuts_padding():
    probs = np.zeros((2, 40, 2), np.float32)
    # Clip a: 20 real frames, Cat active from frame 10 to its real end; the padding holds
    # garbage (as if the model fired on zeros) that must not leak into events.
    probs[0, 10:20, 0] = 0.9
    probs[0, 20:40, :] = 0.9
    # Clip b: full length, Dog active 5..14 with an isolated blip at 30.
    probs[1, 5:15, 1] = 0.8
    probs[1, 30, 1] = 0.8

    events = detection.probabilities_to_events(["a.wav", "b.wav"], probs, PP, CLASSES, 0.02,
                                                 num_valid_frames=[20, 40])
    assert events == [
        {"filename": "a.wav", "onset": 0.2, "offset": 0.4, "event_label": "Cat"},
        {"filename": "b.wav", "onset": 0.1, "offset": 0.3, "event_label": "Dog"},
    ]
    # Without the valid lengths the padding becomes events of clip a.
    uncut = detection.probabilities_to_events(["a.wav", "b.wav"], probs, PP, CLASSES, 0.02)
    assert any(e["filename"] == "a.wav" and e["event_label"] == "Dog" for e in uncut)


def test_per_class_median_filter_lengths():
    x = np.zeros((30, 2), np.uint8)
    x[10:13, 0] = 1  # a 3-frame run: kept by a 3-frame window, removed by a 9-frame one
    x[10:13, 1] = 1
    y = postprocess.median_filter(x, (3, 9))
    np.testing.assert_array_equal(y[:, 0], postprocess.median_filter(x, 3)[:, 0])
    np.testing.assert_array_equal(y[:, 1], postprocess.median_filter(x, 9)[:, 1])
    assert y[:, 0].sum() == 3 and y[:, 1].sum() == 0
    batched = postprocess.median_filter(np.stack([x, x]), (3, 9))
    np.testing.assert_array_equal(batched[1], y)
    with pytest.raises(ValueError, match="3 lengths for 2 classes"):
        postprocess.median_filter(x, (3, 9, 5))
    events = detection.probabilities_to_events(
        ["a.wav"], x[None].astype(np.float32), {"threshold": 0.5, "median_filter": (3, 9)},
        CLASSES, 0.02)
    assert events == [{"filename": "a.wav", "onset": 0.2, "offset": 0.26, "event_label": "Cat"}]


def test_time_pooled_outputs_map_to_the_right_seconds():
    """A model pooling time x4 outputs 125 frames of 0.08 s; events land at the right times."""
    from configs import baseline
    from sedjax.models import time_grid

    config = baseline.get_config()
    config.model.pool_sizes = ((2, 4), (2, 4), (1, 4))
    seconds = time_grid.frame_seconds(config)
    assert seconds == pytest.approx(0.08)
    probs = np.zeros((2, time_grid.output_frames(500, config.model), 2), np.float32)
    probs[0, 25:50, 0] = 0.9  # 2.0 s .. 4.0 s
    probs[1, 100:125, 1] = 0.9  # 8.0 s .. 10.0 s, but clip b holds 6.02 s of audio
    valid = time_grid.valid_output_frames([500, 301], 500, config.model)
    assert list(valid) == [125, 76]  # 301 input frames -> 75.25 output frames, rounded up
    events = detection.probabilities_to_events(
        ["a.wav", "b.wav"], probs, {"threshold": 0.5, "median_filter": 5}, CLASSES, seconds,
        valid)
    assert events == [{"filename": "a.wav", "onset": 2.0, "offset": 4.0, "event_label": "Cat"}]
    probs[1, 60:80, 1] = 0.9  # 4.8 s .. cut at the clip's end (76 frames = 6.08 s)
    events = detection.probabilities_to_events(
        ["a.wav", "b.wav"], probs, {"threshold": 0.5, "median_filter": 5}, CLASSES, seconds,
        valid)
    assert events[1] == {"filename": "b.wav", "onset": 4.8, "offset": 6.08, "event_label": "Dog"}
