"""Both passes on a tiny synthetic set through `python -m sedjax.main`: artefacts, score, resume."""

import itertools
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage

from sedjax.data import event_files

ROOT = pathlib.Path(__file__).parents[1]


def run_main(workdir: pathlib.Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sedjax.main", "--config=configs/tiny.py",
           f"--workdir={workdir}", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("e2e")
    proc = run_main(path)
    return path, proc


def test_every_artefact_exists(workdir):
    path, _ = workdir
    for rel in ("config.json", "synthetic/.complete", "synthetic/metadata/train/weak.csv",
                "pass1/result.json", "pass2/result.json", "pseudo_labels.npy", "training.json",
                "model/variables.msgpack", "model/normalization.npy",
                "predictions/test_probs.npy", "predictions/test_events.csv",
                "training_curves.png", "piano_roll.png",
                "results.json", "results.txt", "class_scores.png"):
        assert (path / rel).exists(), rel
    assert list((path / "features").glob("weak-*.npy"))
    assert list((path / "features").glob("stats-*.npy"))
    for p in ("pass1", "pass2"):
        for kind in ("latest", "best"):
            assert any((path / p / "checkpoints" / kind).iterdir()), (p, kind)
    assert not list(path.rglob("*.partial"))


def sed_eval_macro_f1(reference_path, events_path, classes, evaluation) -> tuple:
    """(event-based, segment-based) macro F1 of an events table against a reference table,
    computed with sed_eval itself, file by file as the challenge's evaluation_measures.py."""
    import sed_eval

    reference, _ = event_files.read_events(reference_path)
    estimated, names = event_files.read_events(events_path)
    e = evaluation
    em = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=list(classes), t_collar=e["t_collar"],
        percentage_of_length=e["percentage_of_length"], evaluate_onset=e["evaluate_onset"],
        evaluate_offset=e["evaluate_offset"], event_matching_type=e["event_matching_type"],
        empty_system_output_handling="zero_score")
    sm = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=list(classes),
                                                  time_resolution=e["segment_seconds"])
    for name in names:
        ref = [x for x in reference if x["filename"] == name]
        est = [x for x in estimated if x["filename"] == name]
        em.evaluate(reference_event_list=ref, estimated_event_list=est)
        sm.evaluate(reference_event_list=ref, estimated_event_list=est)
    return tuple(m.results_class_wise_average_metrics()["f_measure"]["f_measure"]
                 for m in (em, sm))


def expected_event_table(names, probs, classes, threshold, length, frame_seconds) -> str:
    """The events table of frame probabilities, decoded here without sedjax: each class's
    frames thresholded and median-filtered (the seed's scipy call), each run of active frames
    one event; per clip (in `names` order) by onset, offset, label; a clip without events one
    row of empty fields."""
    lines = ["filename\tonset\toffset\tevent_label"]
    for name, clip in zip(names, probs):
        active = scipy.ndimage.median_filter((clip >= threshold).astype(np.uint8),
                                             size=(length, 1))
        events = []
        for c, label in enumerate(classes):
            start = 0
            for value, run in itertools.groupby(active[:, c]):
                n = len(list(run))
                if value:
                    events.append((start * frame_seconds, (start + n) * frame_seconds, label))
                start += n
        lines += [f"{name}\t{on:.3f}\t{off:.3f}\t{label}" for on, off, label in sorted(events)]
        if not events:
            lines.append(f"{name}\t\t\t")
    return "\n".join(lines) + "\n"


def test_score_is_computed_and_consistent(workdir):
    path, proc = workdir
    config = json.loads((path / "config.json").read_text())
    classes = config["data"]["classes"]
    results = json.loads((path / "results.json").read_text())
    f1 = results["test"]["event_based"]["f_measure_macro"]
    assert set(results["test"]["event_based"]["class_wise"]) == set(classes)
    assert f"event-based macro F1 {100 * f1:.2f} %" in proc.stdout
    probs = np.load(path / "predictions" / "test_probs.npy")
    assert probs.shape == (8, 500, 10) and 0 <= probs.min() and probs.max() <= 1
    # the written events are the test probabilities post-processed as configured (threshold,
    # median filter; 20 ms output frames), every listed test clip in the metadata's order
    ref = path / "synthetic" / results["split_sources"]["test"]
    events_path = path / "predictions" / "test_events.csv"
    _, names = event_files.read_events(ref)
    pp = config["postprocess"]
    frame_seconds = (config["features"]["hop_length"] / config["features"]["sample_rate"]
                     * np.prod([p[0] for p in config["model"]["pool_sizes"]]))
    assert events_path.read_text() == expected_event_table(
        names, probs, classes, pp["threshold"], pp["median_filter"], frame_seconds)
    # sed_eval on the written tables gives the reported scores
    event_f1, segment_f1 = sed_eval_macro_f1(ref, events_path, classes, config["evaluation"])
    assert f1 == pytest.approx(event_f1, rel=1e-12)
    assert results["test"]["segment_based"]["f_measure_macro"] == pytest.approx(segment_f1,
                                                                                rel=1e-12)
    pseudo = np.load(path / "pseudo_labels.npy")
    assert pseudo.shape == (16, 10) and set(np.unique(pseudo)) <= {0.0, 1.0}
    thresholds = results["pass1"]["thresholds"]
    assert list(thresholds) == classes
    # values of the grid (chosen among float32 probabilities' thresholds)
    assert set(np.float32(list(thresholds.values()))) <= set(
        np.float32(config["pass1"]["threshold_grid"]))
    assert json.loads((path / "pass1" / "result.json").read_text())["thresholds"] == thresholds
    # the scorer command gives the same numbers from the written files
    out = path / "rescored.json"
    subprocess.run([sys.executable, "-m", "sedjax.evaluate", str(ref), str(events_path),
                    "--json", str(out)], cwd=ROOT, check=True, capture_output=True)
    assert json.loads(out.read_text())["event_based"]["f_measure_macro"] == pytest.approx(f1)


def test_pseudo_labels_are_the_kept_pass1_models_decisions(workdir):
    """pseudo_labels.npy: the best pass-1 checkpoint's clip probabilities on the unlabelled
    clips, recomputed here from that checkpoint, at the thresholds results.json reports."""
    from sedjax.data import prepare
    from sedjax.config import config_files
    from sedjax.data import dataset, pipeline
    from sedjax.recipes import common
    from sedjax.system import sharding
    from sedjax.train import checkpoint, stacked_runs

    path, _ = workdir
    config = config_files.load(ROOT / "configs" / "tiny.py")  # the run's config
    mesh = sharding.make_mesh()
    splits = dataset.load_dataset(path / "synthetic", config.data.classes, path,
                                  write_log=False)
    splits, arrays = prepare.load_features(config, path, splits)  # the run's cached features
    stats = prepare.normalization_stats(config, splits, arrays, path)
    unlabelled = pipeline.Batches(arrays["unlabel_in_domain"], mesh, stats, config.runtime)
    runs = stacked_runs.StackedRuns(config, mesh)
    ckpts = checkpoint.PassCheckpoints(path / "pass1")
    state, _ = ckpts.restore("best", runs.state(lambda c: common.init_state(c, "pass1")))
    ckpts.close()
    [probs] = runs.predict(common.eval_fn("clip", unlabelled), state, unlabelled,
                           [np.arange(len(unlabelled.arrays))], config.pass1.eval_batch_size)
    thresholds = json.loads((path / "results.json").read_text())["pass1"]["thresholds"]
    t = np.array([thresholds[c] for c in config.data.classes])
    pseudo = np.load(path / "pseudo_labels.npy")
    assert pseudo.shape == probs.shape
    near = np.abs(probs - t) < 1e-5  # float rounding on a threshold may decide either way
    assert ((pseudo == (probs >= t)) | near).all()


def test_threshold_independent_scores_and_tensorboard_scalars(workdir):
    from sed_scores_eval.intersection_based.psds import psds_from_psd_roc
    from tensorboard.backend.event_processing import event_accumulator

    path, proc = workdir
    results = json.loads((path / "results.json").read_text())
    ti = results["test"]["threshold_independent"]
    # scored: exactly the classes with reference events in the test split
    classes = json.loads((path / "config.json").read_text())["data"]["classes"]
    reference, _ = event_files.read_events(path / "synthetic" / results["split_sources"]["test"])
    present = [c for c in classes if c in {e["event_label"] for e in reference}]
    best = ti["collar_best"]["class_wise"]
    assert list(best) == list(ti["psds_detail"]["psds1"]["class_wise"]) == present
    assert ti["classes_without_reference_events"] == [c for c in classes if c not in present]
    # each PSDS (and each class's) is the area under its written PSD-ROC up to max eFPR,
    # sed_scores_eval's definition; the best collar F1 the mean of its classes' best F1s
    curves = np.load(path / "predictions" / "test_psd_roc.npz")
    for key in ("psds1", "psds2"):
        max_efpr = ti["settings"]["psds"][key]["max_efpr"]
        assert ti[key] == pytest.approx(psds_from_psd_roc(
            curves[f"{key}/etpr"], curves[f"{key}/efpr"], max_efpr), rel=1e-9), key
        for c in present:
            assert ti["psds_detail"][key]["class_wise"][c] == pytest.approx(psds_from_psd_roc(
                curves[f"{key}/class_wise/{c}/tpr"], curves[f"{key}/class_wise/{c}/efpr"],
                max_efpr), rel=1e-9), (key, c)
    assert ti["collar_f1_best_macro"] == pytest.approx(
        np.mean([c["f_measure"] for c in best.values()]), rel=1e-12)
    assert "PSDS1" in proc.stdout and (path / "psd_roc.png").exists()
    acc = event_accumulator.EventAccumulator(str(path / "tensorboard"), {"scalars": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    history = json.loads((path / "pass1" / "result.json").read_text())["history"]
    assert [step for step, _ in scalars["pass1/loss"]] == [h["epoch"] for h in history]
    np.testing.assert_allclose([v for _, v in scalars["pass1/val_score"]],
                               [h["val_score"] for h in history], rtol=1e-6)
    assert {"pass2/loss", "pass2/val_score", "pass1/learning_rate"} <= set(scalars)


def test_rerun_skips_finished_stages_and_gives_the_same_score(workdir):
    path, _ = workdir
    before = json.loads((path / "results.json").read_text())
    stamp = (path / "pseudo_labels.npy").stat().st_mtime_ns
    proc = run_main(path)
    assert (path / "pseudo_labels.npy").stat().st_mtime_ns == stamp
    assert "training: done before (recipe two_pass)" in proc.stderr
    after = json.loads((path / "results.json").read_text())
    assert after["test"] == before["test"]


def test_resume_after_losing_pass2_outputs_gives_the_same_score(workdir, tmp_path):
    """Pass 2 interrupted after its last epoch's checkpoint: resumes, same numbers."""
    path, _ = workdir
    before = json.loads((path / "results.json").read_text())
    (path / "pass2" / "result.json").unlink()
    (path / "training.json").unlink()
    (path / "predictions" / "test_probs.npy").unlink()
    (path / "results.json").unlink()
    proc = run_main(path)
    assert "pass1: done before" in proc.stderr and "pass2: resuming after epoch" in proc.stderr
    after = json.loads((path / "results.json").read_text())
    assert after["test"] == before["test"]


FOUR = ("Alarm_bell_ringing", "Cat", "Dog", "Speech")


def test_a_class_list_override_runs_on_a_dcase_layout_folder(tmp_path):
    """The real-data path (dataset=dcase2018) on a DCASE-layout folder holding four classes."""
    from sedjax.data import synthetic

    root = synthetic.generate(tmp_path / "dcase", num_weak=20, num_unlabeled=16, num_test=8,
                              seed=3, classes=FOUR)
    workdir = tmp_path / "run"
    run_main(workdir, "--config.data.dataset=dcase2018", f"--config.data.root={root}",
             "--config.data.classes=" + repr(FOUR).replace(" ", ""))
    assert not (workdir / "synthetic").exists()  # read from root, nothing generated
    assert np.load(workdir / "predictions" / "test_probs.npy").shape == (8, 500, 4)
    assert np.load(workdir / "pseudo_labels.npy").shape == (16, 4)
    results = json.loads((workdir / "results.json").read_text())
    assert set(results["test"]["event_based"]["class_wise"]) == set(FOUR)
    assert list(results["pass1"]["thresholds"]) == list(FOUR)


def test_attention_pooling_with_time_pooling_and_per_class_median_filters(tmp_path):
    """Frame outputs at 80 ms (time pooled x4) reach events and scores in seconds."""
    workdir = tmp_path / "run"
    run_main(workdir, "--config.model.pooling=attention",
             "--config.model.pool_sizes=((2,4),(2,4),(1,4))",
             "--config.postprocess.median_filter=(1,3,3,3,3,3,3,3,3,13)")
    probs = np.load(workdir / "predictions" / "test_probs.npy")
    assert probs.shape == (8, 125, 10)
    events, _ = event_files.read_events(workdir / "predictions" / "test_events.csv")
    for e in events:  # every boundary is a multiple of the 0.08 s output frame
        for t in (e["onset"], e["offset"]):
            assert abs(t / 0.08 - round(t / 0.08)) < 1e-6, e
    assert max((e["offset"] for e in events), default=0) <= 10.0 + 1e-6
    training = json.loads((workdir / "training.json").read_text())
    history = json.loads((workdir / "pass2" / "result.json").read_text())["history"]
    best = training["pass2"]["best_epoch"]
    assert training["recipe"] == "two_pass"
    assert training["pass2"]["best_score"] == history[best]["val_score"]
