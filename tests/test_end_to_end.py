"""Both passes on a tiny synthetic set through `python -m sedjax.main`: artefacts, score, resume."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

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


def test_score_is_computed_and_consistent(workdir):
    path, proc = workdir
    results = json.loads((path / "results.json").read_text())
    f1 = results["test"]["event_based"]["f_measure_macro"]
    assert f1 is not None and 0.0 <= f1 <= 1.0
    assert set(results["test"]["event_based"]["class_wise"]) >= {"Dog", "Speech"}
    assert f"event-based macro F1 {100 * f1:.2f} %" in proc.stdout
    probs = np.load(path / "predictions" / "test_probs.npy")
    assert probs.shape == (8, 500, 10) and 0 <= probs.min() and probs.max() <= 1
    pseudo = np.load(path / "pseudo_labels.npy")
    assert pseudo.shape == (16, 10) and set(np.unique(pseudo)) <= {0.0, 1.0}
    thresholds = results["pass1"]["thresholds"]
    assert len(thresholds) == 10 and all(0 <= t <= 1 for t in thresholds.values())
    # the scorer command gives the same numbers from the written files
    ref = path / "synthetic" / "metadata" / "test" / "test.csv"
    out = path / "rescored.json"
    subprocess.run([sys.executable, "-m", "sedjax.evaluate", str(ref),
                    str(path / "predictions" / "test_events.csv"), "--json", str(out)],
                   cwd=ROOT, check=True, capture_output=True)
    assert json.loads(out.read_text())["event_based"]["f_measure_macro"] == pytest.approx(f1)


def test_threshold_independent_scores_and_tensorboard_scalars(workdir):
    from tensorboard.backend.event_processing import event_accumulator

    path, proc = workdir
    ti = json.loads((path / "results.json").read_text())["test"]["threshold_independent"]
    for key in ("psds1", "psds2", "collar_f1_best_macro"):
        assert ti[key] is not None and 0.0 <= ti[key] <= 1.0, key
    assert "PSDS1" in proc.stdout and (path / "psd_roc.png").exists()
    assert (path / "predictions" / "test_psd_roc.npz").exists()
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
    assert training["recipe"] == "two_pass" and 0 <= training["pass2"]["best_score"] <= 1
