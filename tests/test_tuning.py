"""Post-processing tuned on validation (sedjax.metrics.tuning): each class keeps its best filter length."""

import numpy as np

from configs import baseline
from sedjax.metrics import tuning

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
    from sedjax.recipes import scoring

    for folder in (tmp_path, tmp_path / "model"):
        folder.mkdir(exist_ok=True)
        (folder / "postprocess.json").write_text('{"median_filter": [3, 1, 1]}')
    config, tuned = scoring.choose_postprocess(_config(grid=()), tmp_path, {}, {})
    assert tuned is None and config.postprocess.median_filter == 1
    assert not list(tmp_path.rglob("postprocess.json"))  # sedjax.detect would use them


def _noisy_clips(n=12, seed=0):
    """Blender events with probabilities that flicker around 0.5 (a longer filter helps the
    segment-overlap criteria) and Dog events that are short; Cat absent."""
    rng = np.random.default_rng(seed)
    names = [f"n{i}.wav" for i in range(n)]
    probs = np.clip(rng.normal(0.15, 0.12, (n, 100, 3)), 0, 1).astype(np.float32)
    reference = []
    for name, clip in zip(names, probs):
        on = int(rng.integers(5, 40))
        clip[on:on + 40, 0] = np.clip(rng.normal(0.6, 0.25, 40), 0, 1)
        d = int(rng.integers(70, 90))
        clip[d:d + 4, 1] = 0.9
        reference += [{"filename": name, "onset": on * FRAME, "offset": (on + 40) * FRAME,
                       "event_label": "Blender"},
                      {"filename": name, "onset": d * FRAME, "offset": (d + 4) * FRAME,
                       "event_label": "Dog"}]
    return names, probs, reference


def test_median_filter_tuned_on_psds1_keeps_each_classes_best_single_class_psds1():
    from sedjax.metrics import psds
    names, probs, reference = _noisy_clips()
    c = _config(configured=1, grid=(1, 5, 15))
    c.postprocess.tune.metric = "psds1"
    tuned = tuning.tune(c, names, reference, probs, FRAME, np.full(len(names), 100))
    assert tuned["method"] == "median_filter" and tuned["metric"] == "psds1"
    for k, cls in enumerate(CLASSES):
        per_length = {}
        for length in (1, 5, 15):
            figures, _ = psds.threshold_independent(probs, names, FRAME, CLASSES, reference,
                                                    median_filter=length)
            per_length[length] = figures["psds_detail"]["psds1"]["class_wise"].get(cls)
        if cls == "Cat":
            assert tuned["median_filter"][k] == 1  # no reference event: the configured length
            continue
        best = max(per_length.values())
        assert per_length[tuned["median_filter"][k]] == best
        assert tuned["class_f1"][cls][str(tuned["median_filter"][k])] == best
    assert tuned["median_filter"][0] != 1  # flickering Blender gains from a filter


def test_csebbs_tuned_on_validation_score_as_sebbs_scored_them():
    """sedjax scores the tuned boxes (csebbs.score_tables -> psds.threshold_independent) to the
    single-class PSDS1 that sebbs selected them by; a class without events keeps defaults."""
    pytest = __import__("pytest")
    pytest.importorskip("sebbs")
    from sedjax.metrics import csebbs, detection, psds
    names, probs, reference = _noisy_clips()
    c = _config()
    c.postprocess.tune.method, c.postprocess.tune.metric = "csebbs", "psds1"
    tuned = tuning.tune(c, names, reference, probs, FRAME, np.full(len(names), 100))
    settings = tuned["csebbs"]
    grid = c.postprocess.tune.csebbs
    assert settings["step_filter_length"]["Cat"] == 0.48  # the grid's middle values
    assert settings["merge_threshold_abs"]["Cat"] == 0.2
    for cls in CLASSES:
        assert settings["step_filter_length"][cls] in grid.step_filter_lengths
    assert tuned["class_scores"]["Cat"] is None
    tables = csebbs.score_tables(settings, names, probs, CLASSES, FRAME, None)
    figures, _ = psds.threshold_independent(probs, names, FRAME, CLASSES, reference,
                                            tables=tables)
    for cls in ("Blender", "Dog"):
        assert figures["psds_detail"]["psds1"]["class_wise"][cls] == pytest.approx(
            tuned["class_scores"][cls], abs=1e-9)
    # the tuned config's events are the boxes above the threshold (postprocess dispatches)
    applied = tuning.apply(c, tuned)
    events = detection.probabilities_to_events(names, probs, applied.postprocess, CLASSES,
                                                 FRAME)
    boxes = csebbs.boxes(settings, names, probs, CLASSES, FRAME, None)
    want = sum(1 for b in boxes.values() for box in b if box[3] > 0.5)
    assert len(events) == want > 0
