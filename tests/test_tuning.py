"""Post-processing tuned on validation (sedjax.tuning): each class keeps its best filter length."""

import numpy as np

from configs import baseline
from sedjax import tuning

CLASSES = ("Blender", "Dog", "Cat")
FRAME = 0.1  # seconds per output frame


def _config(configured=1, grid=(1, 3, 9)):
    c = baseline.get_config()
    c.data.classes = CLASSES
    c.postprocess.median_filter = configured
    c.postprocess.tune.median_filters = grid
    return c


def _clips():
    """Blender: one 7-s event whose probabilities drop for one frame in every five (a filter of
    3+ frames mends it); Dog: two 0.3-s events 0.3 s apart (a 9-frame filter erases them);
    Cat: never present and never detected."""
    names = [f"c{i}.wav" for i in range(4)]
    probs = np.zeros((4, 100, 3), np.float32)
    reference = []
    for name, clip in zip(names, probs):
        clip[10:80, 0] = 0.9
        clip[12:80:5, 0] = 0.1  # holes
        clip[20:23, 1] = clip[26:29, 1] = 0.9
        reference += [{"filename": name, "onset": 1.0, "offset": 8.0, "event_label": "Blender"},
                      {"filename": name, "onset": 2.0, "offset": 2.3, "event_label": "Dog"},
                      {"filename": name, "onset": 2.6, "offset": 2.9, "event_label": "Dog"}]
    return names, probs, reference


def test_each_class_keeps_the_length_of_its_best_validation_f1():
    names, probs, reference = _clips()
    tuned = tuning.tune_median_filter(_config(), names, reference, probs, FRAME,
                                      np.full(4, 100))
    # Blender: 3 and 9 both mend the holes (F1 1); the tie keeps the shorter. Dog: unfiltered.
    # Cat has no reference event: it keeps the configured length.
    assert tuned["median_filter"] == [3, 1, 1]
    f1 = tuned["class_f1"]
    assert f1["Blender"]["1"] < 0.5 and f1["Blender"]["3"] == f1["Blender"]["9"] == 1.0
    assert f1["Dog"]["1"] == 1.0 and f1["Dog"]["9"] == 0.0
    assert f1["Cat"]["1"] is None and tuned["grid"] == [1, 3, 9]


def test_a_tie_keeps_the_configured_length_and_a_class_without_events_too():
    names, probs, reference = _clips()
    tuned = tuning.tune_median_filter(_config(configured=9, grid=(1, 3)), names, reference,
                                      probs, FRAME, np.full(4, 100))
    assert tuned["median_filter"] == [9, 1, 9]  # Blender: 9 ties 3; Cat: no event


def test_apply_puts_per_class_lengths_into_a_copy_even_of_an_int_typed_field():
    c = _config(configured=7)
    c.lock()
    assert tuning.enabled(c) and not tuning.enabled(_config(grid=()))
    tuned = tuning.apply(c, {"median_filter": [3, 1, 1]})
    assert tuple(tuned.postprocess.median_filter) == (3, 1, 1)
    assert tuned.postprocess.tune.median_filters == (1, 3, 9)
    assert c.postprocess.median_filter == 7 and tuning.apply(c, None) is c
    assert tuning.configured_lengths(c) == [7, 7, 7]


def test_a_rerun_without_tuning_removes_the_stale_tuned_lengths(tmp_path):
    from sedjax import run

    for folder in (tmp_path, tmp_path / "model"):
        folder.mkdir(exist_ok=True)
        (folder / "postprocess.json").write_text('{"median_filter": [3, 1, 1]}')
    config, tuned = run.choose_postprocess(_config(grid=()), tmp_path, {}, {})
    assert tuned is None and config.postprocess.median_filter == 1
    assert not list(tmp_path.rglob("postprocess.json"))  # sedjax.detect would use them
