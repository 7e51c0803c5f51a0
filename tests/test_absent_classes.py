"""Scoring and tuning when some classes have no reference event (issue 20): a test or validation
split of one class, or of none, is scored over the classes it has and lists the others."""

import csv
import json
import pathlib

import numpy as np
import pytest

pytest.importorskip("sed_scores_eval")

from configs import tiny  # noqa: E402
from sedjax.data import dataset, event_files, synthetic  # noqa: E402
from sedjax.metrics import csebbs, postprocess, psds, tuning  # noqa: E402
from sedjax.models import time_grid  # noqa: E402

CLASSES = ["Blender", "Dog", "Cat"]
PRESENT = "Dog"  # the middle class: a column mix-up would score the wrong one
ABSENT = ["Blender", "Cat"]
FRAME = 0.1  # seconds per frame
T = 100  # 10 s clips


def one_class_case(seed=0, num_files=24):
    """Dog events (1-4 s, every other clip; the other clips make false positives) whose
    probabilities rise above smooth noise by a random amount, so that Dog's PSDS1 and PSDS2
    are neither 0 nor 1; Blender and Cat: noise and no reference event."""
    rng = np.random.default_rng(seed)
    files = [f"clip_{i:02d}.wav" for i in range(num_files)]
    truth = np.zeros((num_files, T, len(CLASSES)))
    events = []
    for name, clip in list(zip(files, truth))[::2]:
        on = int(rng.integers(0, 60))
        off = on + int(rng.integers(10, 40))
        clip[on:off, 1] = rng.uniform(0.0, 0.4)
        events.append({"filename": name, "onset": on * FRAME, "offset": off * FRAME,
                       "event_label": PRESENT})
    # temporally smooth noise (a moving average over 9 frames), so that detections are runs
    noise = rng.standard_normal((num_files, T + 8, len(CLASSES)))
    noise = np.stack([noise[:, k: k + T] for k in range(9)]).sum(0) / 3.0
    probs = np.clip(0.35 + truth + 0.1 * noise, 0.01, 1)
    return files, probs.astype(np.float32), events


def test_one_class_with_events_gets_psds_and_collar_f1_the_others_are_listed():
    files, probs, events = one_class_case()
    figures, curves = psds.threshold_independent(probs, files, FRAME, CLASSES, events)
    assert figures["classes_without_reference_events"] == ABSENT
    for key in ("psds1", "psds2", "collar_f1_best_macro"):
        assert figures[key] is not None and 0.0 < figures[key] < 1.0, key
    assert set(figures["collar_best"]["class_wise"]) == {PRESENT}
    assert set(figures["psds_detail"]["psds2"]["class_wise"]) == {PRESENT}
    assert figures["num_reference_events"] == len(events)
    assert set(curves["psds2"]["class_wise"]) == {PRESENT}
    # the scores of Dog alone: the absent classes' columns change nothing
    alone, _ = psds.threshold_independent(probs[..., 1:2], files, FRAME, [PRESENT], events)
    assert alone["classes_without_reference_events"] == []
    for key in ("psds1", "psds2", "collar_f1_best_macro"):
        assert figures[key] == pytest.approx(alone[key]), key


def test_one_class_is_scored_as_it_is_beside_a_class_it_never_cross_triggers_on():
    """PSDS2 penalizes cross-triggers on *other* classes; with one class there are none. Its
    single-class PSDS2 is then what it is beside a second class whose events no Dog detection
    can cross-trigger on: short Blender events where Dog's probability is its minimum (only
    the lowest threshold detects there, as one whole-clip detection, under the cttc)."""
    files, probs, events = one_class_case(seed=1)
    lowest = float(probs[..., 1].min())
    blender = []
    for name, clip in zip(files, probs):
        quiet = np.flatnonzero(clip[:, 1] < 0.3)
        start = int(quiet[len(quiet) // 2])
        clip[start:start + 3, 1] = lowest  # Dog never detects here above the lowest threshold
        blender.append({"filename": name, "onset": start * FRAME,
                        "offset": (start + 3) * FRAME, "event_label": "Blender"})
    alone, _ = psds.threshold_independent(probs, files, FRAME, CLASSES, events)
    beside, _ = psds.threshold_independent(probs, files, FRAME, CLASSES, events + blender)
    assert beside["classes_without_reference_events"] == ["Cat"]
    assert beside["psds_detail"]["psds2"]["alpha_ct_applied"] == psds.PSDS2.alpha_ct > 0
    assert alone["psds_detail"]["psds2"]["alpha_ct_applied"] == 0.0
    dog = alone["psds_detail"]["psds2"]["class_wise"][PRESENT]
    assert 0.0 < dog < 1.0
    assert beside["psds_detail"]["psds2"]["class_wise"][PRESENT] == pytest.approx(dog)
    # whereas Blender all over the clips without Dog, where Dog's false positives are, counts
    # them as cross-triggers too
    everywhere = [{"filename": f, "onset": 0.0, "offset": T * FRAME, "event_label": "Blender"}
                  for f in files[1::2]]
    crossed, _ = psds.threshold_independent(probs, files, FRAME, CLASSES, events + everywhere)
    assert crossed["psds_detail"]["psds2"]["class_wise"][PRESENT] < dog


def test_per_class_median_filters_apply_to_their_own_columns_when_classes_are_left_out():
    files, probs, events = one_class_case(seed=2)
    lengths = [1, 9, 1]  # Dog's column only
    filtered = np.stack([postprocess.median_filter(clip, lengths) for clip in probs])
    given, _ = psds.threshold_independent(probs, files, FRAME, CLASSES, events,
                                          median_filter=lengths)
    expected, _ = psds.threshold_independent(filtered, files, FRAME, CLASSES, events)
    raw, _ = psds.threshold_independent(probs, files, FRAME, CLASSES, events)
    assert given["median_filter"] == lengths
    assert given["classes_without_reference_events"] == ABSENT
    for key in ("psds1", "psds2", "collar_f1_best_macro"):
        assert given[key] == pytest.approx(expected[key]), key
    assert given["collar_best"] != raw["collar_best"]  # the filter did something


def test_csebbs_boxes_of_one_class_with_events_are_scored():
    pytest.importorskip("sebbs")
    files, probs, events = one_class_case(seed=3)
    settings = {"step_filter_length": dict.fromkeys(CLASSES, 0.48),
                "merge_threshold_abs": dict.fromkeys(CLASSES, 0.2),
                "merge_threshold_rel": dict.fromkeys(CLASSES, None),
                "detection_threshold": None}
    tables = csebbs.score_tables(settings, files, probs, CLASSES, FRAME, None)
    figures, _ = psds.threshold_independent(probs, files, FRAME, CLASSES, events, tables=tables)
    assert figures["classes_without_reference_events"] == ABSENT
    for key in ("psds1", "psds2", "collar_f1_best_macro"):
        assert figures[key] is not None and 0.0 < figures[key] <= 1.0, key
    assert set(figures["collar_best"]["class_wise"]) == {PRESENT}


def tuning_config(metric="psds1", method="median_filter", configured=7):
    c = tiny.get_config()
    c.data.classes = tuple(CLASSES)
    c.postprocess.median_filter = configured
    c.postprocess.tune.median_filters = (1, 3, 15)
    c.postprocess.tune.method, c.postprocess.tune.metric = method, metric
    return c


@pytest.mark.parametrize("metric", ["psds1", "collar_f1", "event_f1"])
def test_median_filter_tuning_on_one_class_keeps_the_configured_length_for_the_others(metric):
    files, probs, events = one_class_case(seed=4)
    tuned = tuning.tune(tuning_config(metric), files, events, probs, FRAME, np.full(len(files), T))
    assert tuned["classes_without_reference_events"] == ABSENT
    lengths = dict(zip(CLASSES, tuned["median_filter"]))
    assert lengths["Blender"] == lengths["Cat"] == 7
    scores = tuned["class_f1"][PRESENT]
    assert all(v is not None for v in scores.values())
    assert scores[str(lengths[PRESENT])] == max(scores[str(k)] for k in (1, 3, 15))
    assert all(v is None for c in ABSENT for v in tuned["class_f1"][c].values())


def test_median_filter_tuning_without_any_event_keeps_every_configured_length():
    files, probs, _ = one_class_case(seed=5)
    tuned = tuning.tune(tuning_config(), files, [], probs, FRAME, np.full(len(files), T))
    assert tuned["median_filter"] == [7, 7, 7]
    assert tuned["classes_without_reference_events"] == CLASSES


def middle(values):
    """The middle value of a 3-point grid."""
    assert len(values) == 3
    return sorted(values)[1]


def cross_trigger_psds1():
    """PSDS1 as a user may redefine it: with a cross-trigger penalty."""
    return {"psds": {"psds1": {"cttc_threshold": 0.3, "alpha_ct": 0.5}}}


@pytest.mark.parametrize("metric", ["psds1", "collar_f1"])
def test_csebbs_tuning_on_one_class_gives_the_others_the_grids_middle(metric):
    pytest.importorskip("sebbs")
    files, probs, events = one_class_case(seed=6)
    c = tuning_config(metric, method="csebbs")
    c.evaluation.psds = cross_trigger_psds1()
    tuned = tuning.tune(c, files, events, probs, FRAME, np.full(len(files), T))
    assert tuned["classes_without_reference_events"] == ABSENT
    settings, grid = tuned["csebbs"], c.postprocess.tune.csebbs
    for cls in ABSENT:
        assert settings["step_filter_length"][cls] == middle(grid.step_filter_lengths)
        assert settings["merge_threshold_abs"][cls] == middle(grid.merge_thresholds_abs)
        assert settings["merge_threshold_rel"][cls] == middle(grid.merge_thresholds_rel)
        assert tuned["class_scores"][cls] is None
    assert settings["step_filter_length"][PRESENT] in grid.step_filter_lengths
    assert tuned["class_scores"][PRESENT] is not None
    thresholds = settings["detection_threshold"]
    assert (thresholds is None) if metric == "psds1" else (set(thresholds) == {PRESENT})


def test_csebbs_tuning_without_any_event_searches_nothing_and_gives_the_grids_middle():
    pytest.importorskip("sebbs")
    files, probs, _ = one_class_case(seed=7)
    c = tuning_config(method="csebbs")
    tuned = tuning.tune(c, files, [], probs, FRAME, np.full(len(files), T))
    middle_step = middle(c.postprocess.tune.csebbs.step_filter_lengths)
    assert tuned["csebbs"]["step_filter_length"] == dict.fromkeys(CLASSES, middle_step)
    assert tuned["csebbs"]["detection_threshold"] is None
    assert tuned["class_scores"] == dict.fromkeys(CLASSES)


def test_csebbs_events_read_a_json_null_threshold_as_detect_nothing():
    """A tuned infinite detection threshold is written to postprocess.json as null; read back,
    that class still detects nothing, and a class tuning gave no threshold uses `threshold`."""
    pytest.importorskip("sebbs")
    files, probs, _ = one_class_case(seed=8)
    settings = {"step_filter_length": dict.fromkeys(CLASSES, 0.48),
                "merge_threshold_abs": dict.fromkeys(CLASSES, 0.2),
                "merge_threshold_rel": dict.fromkeys(CLASSES, None),
                "detection_threshold": {"Dog": None, "Blender": 0.99}}
    found = csebbs.events(settings, files, probs, CLASSES, FRAME, None, threshold=0.0)
    labels = {e["event_label"] for e in found}
    assert "Dog" not in labels and "Blender" not in labels  # no box is that confident
    assert "Cat" in labels  # any box passes the fallback threshold 0


# ---- end to end: a DCASE2018-layout folder whose test split has events of one class --------

def _read_rows(path: pathlib.Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


def _keep_one_class(path: pathlib.Path) -> str:
    """Rewrites a strong-label file to the events of its most frequent class (clips that lose
    every event keep a quiet row); returns that class."""
    header, *rows = _read_rows(path)
    labelled = [r for r in rows if len(r) == 4 and r[3]]
    labels = [r[3] for r in labelled]
    kept = max(sorted(set(labels)), key=labels.count)
    files = list(dict.fromkeys(r[0] for r in rows))
    with open(path, "w") as f:
        f.write("\t".join(header) + "\n")
        for name in files:
            mine = [r for r in labelled if r[0] == name and r[3] == kept]
            if mine:
                f.writelines("\t".join(r) + "\n" for r in mine)
            else:  # a clip without events: one row with empty fields (the DCASE2018 files')
                f.write(f"{name}\t\t\t\n")
    return kept


def _clips_of(path: pathlib.Path, label: str) -> list[str]:
    return sorted({r[0] for r in _read_rows(path)[1:] if len(r) == 4 and r[3] == label})


@pytest.fixture(scope="module")
def one_class_run(tmp_path_factory):
    """A tiny run on a DCASE2018 folder: test and validation events of one class each, two test
    clips unreadable (one of them with events), post-processing tuned on validation by PSDS1."""
    from sedjax import run

    c = tiny.get_config()
    s = c.data.synthetic
    # smaller than tiny (one step an epoch, a narrow model): scoring is under test, not training
    s.num_weak, s.num_unlabeled, s.num_validation = 8, 8, 6
    c.model.conv_features, c.model.gru_units = (16, 16, 16), 16
    c.pass1.num_epochs = 1
    root = synthetic.generate(tmp_path_factory.mktemp("data"), num_weak=s.num_weak,
                              num_unlabeled=s.num_unlabeled, num_test=s.num_test,
                              num_validation=s.num_validation, seed=s.seed,
                              sample_rate=s.sample_rate, classes=tuple(c.data.classes),
                              num_workers=1)
    test_csv = root / synthetic.METADATA["test"]
    kept = _keep_one_class(test_csv)
    val_kept = _keep_one_class(root / synthetic.METADATA["validation"])
    with_events = _clips_of(test_csv, kept)
    assert len(with_events) >= 2, "the test split needs the class in 2+ clips"
    all_test = [r[0] for r in _read_rows(test_csv)[1:]]
    bad = [with_events[0], next(f for f in all_test if f not in with_events)]
    audio = root / synthetic.AUDIO_DIRS["test"]
    (audio / bad[0]).write_bytes((audio / bad[0]).read_bytes()[:1000])  # cut short
    (audio / bad[1]).write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(100)))
    c.data.dataset, c.data.root = "dcase2018", str(root)
    c.postprocess.tune.median_filters = (11, 51)
    c.postprocess.tune.metric = "psds1"
    workdir = tmp_path_factory.mktemp("run")
    run.train_and_evaluate(c, workdir)
    return workdir, c, kept, val_kept, bad


def test_a_one_class_test_split_with_unreadable_clips_is_scored(one_class_run):
    import sed_eval

    workdir, c, kept, _, bad = one_class_run
    test_csv = pathlib.Path(c.data.root) / synthetic.METADATA["test"]
    results = json.loads((workdir / "results.json").read_text())
    test = results["test"]
    others = [x for x in c.data.classes if x != kept]
    # sed_eval as before: every class listed, the others with no reference event
    event_based = test["event_based"]["class_wise"]
    assert set(event_based) == set(c.data.classes)
    assert event_based[kept]["num_reference"] > 0
    assert all(event_based[x]["num_reference"] == 0 for x in others)
    # the macro F1 is the one class's (sed_eval's F1 of a class without reference events is
    # undefined and left out of the mean), as sed_eval scores the written events of that class
    events_path = workdir / "predictions" / "test_events.csv"
    estimated, scored_files = event_files.read_events(events_path)
    reference = [e for e in event_files.read_events(test_csv)[0] if e["filename"] in scored_files]
    metrics = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=[kept], t_collar=c.evaluation.t_collar,
        percentage_of_length=c.evaluation.percentage_of_length,
        empty_system_output_handling="zero_score")
    for name in scored_files:
        metrics.evaluate([e for e in reference if e["filename"] == name],
                         [e for e in estimated if e["filename"] == name
                          and e["event_label"] == kept])
    one_class = metrics.results_class_wise_average_metrics()["f_measure"]["f_measure"]
    assert test["event_based"]["f_measure_macro"] == pytest.approx(one_class, rel=1e-12)
    assert event_based[kept]["f_measure"] == pytest.approx(one_class, rel=1e-12)
    # sed_scores_eval over the one class, the others listed as absent: the scores of the one
    # class's column alone, median-filtered as tuned for it
    ti = test["threshold_independent"]
    assert ti["classes_without_reference_events"] == others
    assert set(ti["collar_best"]["class_wise"]) == {kept}
    assert ti["num_files"] == c.data.synthetic.num_test - len(bad) == len(scored_files)
    k = list(c.data.classes).index(kept)
    probs = np.load(workdir / "predictions" / "test_probs.npy")
    alone, _ = psds.threshold_independent(
        probs[..., k:k + 1], scored_files, time_grid.frame_seconds(c), [kept], reference,
        median_filter=[ti["median_filter"][k]], settings=c.evaluation.psds)
    for key in ("psds1", "psds2", "collar_f1_best_macro"):
        assert ti[key] == pytest.approx(alone[key], rel=1e-12), key
    skipped = [r for r in _read_rows(workdir / dataset.ERROR_LOG)[1:] if r[1] == "test"]
    assert sorted(r[0] for r in skipped) == sorted(bad)


def test_a_one_class_validation_split_tunes_that_class_only(one_class_run):
    workdir, c, _, val_kept, _ = one_class_run
    [chosen] = [json.loads(p.read_text()) for p in workdir.glob("postprocess.json")]
    classes = list(c.data.classes)
    assert chosen["classes_without_reference_events"] == [x for x in classes if x != val_kept]
    lengths = dict(zip(classes, chosen["median_filter"]))
    assert all(lengths[x] == 51 for x in classes if x != val_kept)  # the configured length
    assert lengths[val_kept] in (11, 51)
    assert all(v is not None for v in chosen["class_f1"][val_kept].values())
    assert all(v is None for x in classes if x != val_kept
               for v in chosen["class_f1"][x].values())
    # the validation split is scored the same way: over its one class
    results = json.loads((workdir / "results.json").read_text())
    ti = results["validation"]["threshold_independent"]
    assert ti["classes_without_reference_events"] == [x for x in classes if x != val_kept]
    assert ti["psds2"] is not None
