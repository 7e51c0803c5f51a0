"""Mean teacher through `python -m sedjax.main`: a tiny run, killed and resumed to the same
scores, and the real-data config on a DCASE2018 layout and on a DCASE2019-style one."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sedjax.data import event_files, synthetic
from sedjax.train import loop

ROOT = pathlib.Path(__file__).parents[1]


def _cmd(config: str, workdir: pathlib.Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "sedjax.main", f"--config={config}", f"--workdir={workdir}",
            *overrides]


def run_main(config, workdir, *overrides) -> subprocess.CompletedProcess:
    proc = subprocess.run(_cmd(config, workdir, *overrides), cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def sed_eval_segment_f1(reference_path, events_path, classes, segment_seconds) -> float:
    """The segment-based macro F1 of an events table against a reference table, computed with
    sed_eval itself, file by file as the challenge's evaluation_measures.py."""
    import sed_eval

    reference, _ = event_files.read_events(reference_path)
    estimated, names = event_files.read_events(events_path)
    metrics = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=list(classes),
                                                       time_resolution=segment_seconds)
    for name in names:
        metrics.evaluate(reference_event_list=[e for e in reference if e["filename"] == name],
                         estimated_event_list=[e for e in estimated if e["filename"] == name])
    return metrics.results_class_wise_average_metrics()["f_measure"]["f_measure"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    path = tmp_path_factory.mktemp("mt")
    return path, run_main("configs/tiny_mean_teacher.py", path)


def test_a_tiny_run_trains_both_models_and_scores(finished):
    path, proc = finished
    training = json.loads((path / "training.json").read_text())
    assert training["recipe"] == "mean_teacher" and training["predict_with"] == "teacher"
    history = json.loads((path / "mean_teacher" / "result.json").read_text())["history"]
    assert len(history) == 2 and all(h["strong"] > 0 and h["weak"] > 0 for h in history)
    assert history[0]["consistency_weight"] < history[1]["consistency_weight"] <= 2.0
    assert "'strong': 2" in proc.stderr  # the strong split is in the mix
    probs = np.load(path / "predictions" / "test_probs.npy")
    assert probs.shape == (8, 125, 10)  # x4 time pooling
    results = json.loads((path / "results.json").read_text())
    # sed_eval on the written tables gives the reported score
    config = json.loads((path / "config.json").read_text())
    assert results["test"]["segment_based"]["f_measure_macro"] == pytest.approx(
        sed_eval_segment_f1(path / "synthetic" / results["split_sources"]["test"],
                            path / "predictions" / "test_events.csv", config["data"]["classes"],
                            config["evaluation"]["segment_seconds"]), rel=1e-12)
    # where the time went: every stage, compilation apart, both epochs
    t = results["timings"]
    assert list(t["stages_s"]) == ["data", "features", "statistics", "training", "predict",
                                   "postprocess", "scoring", "reporting"]
    assert sum(t["stages_s"].values()) <= t["total_s"] + 0.1
    assert 0 < t["compile_by_stage_s"]["training"] <= t["stages_s"]["training"]
    epochs = t["epochs"]["mean_teacher"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert epochs[0]["compile_s"] > epochs[1]["compile_s"]  # the step compiles in epoch 1
    assert t["cache_hits"] + t["cache_misses"] > 0  # the session's cache (conftest) is on
    assert f"total {t['total_s']:.1f}, of which compiling {t['compile_s']:.1f}" in proc.stdout


def test_killed_and_resumed_run_gives_the_same_scores(finished, tmp_path):
    path, _ = finished
    workdir = tmp_path / "killed"
    proc = subprocess.Popen(_cmd("configs/tiny_mean_teacher.py", workdir), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    # orbax's step folder of `latest` after the first epoch
    first_epoch = (workdir / "mean_teacher" / "checkpoints" / "latest"
                   / str(loop.STEPS_PER_EPOCH))
    deadline = time.time() + 600
    while not first_epoch.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # killed as a scheduler would, mid-epoch 2
    proc.wait()
    assert first_epoch.exists() and not (workdir / "results.json").exists()
    resumed = run_main("configs/tiny_mean_teacher.py", workdir)
    assert "mean_teacher: resuming after epoch 1" in resumed.stderr
    before = json.loads((path / "results.json").read_text())
    after = json.loads((workdir / "results.json").read_text())
    assert after["test"] == before["test"]
    # the same programs as the first run's: loaded from the session's cache, not compiled
    assert after["timings"]["cache_hits"] > 0
    np.testing.assert_array_equal(np.load(path / "predictions" / "test_probs.npy"),
                                  np.load(workdir / "predictions" / "test_probs.npy"))


TINY = ("--config.mean_teacher.num_epochs=1", "--config.mean_teacher.steps_per_epoch=2",
        "--config.mean_teacher.batch_weak=4", "--config.mean_teacher.batch_unlabeled=2",
        "--config.mean_teacher.batch_strong=2", "--config.mean_teacher.eval_batch_size=8",
        "--config.runtime.predict_batch_size=8")


@pytest.mark.parametrize("num_strong", [0, 10])
def test_the_real_data_config_reads_dcase2018_and_dcase2019_layouts(tmp_path, num_strong):
    root = synthetic.generate(tmp_path / "data", num_weak=12, num_unlabeled=6, num_test=4,
                              seed=5, num_strong=num_strong)
    assert (root / "metadata/train/synthetic.csv").exists() == bool(num_strong)
    workdir = tmp_path / "run"
    proc = run_main("configs/mean_teacher.py", workdir, f"--config.data.root={root}", *TINY)
    assert not (workdir / "synthetic").exists()  # nothing generated: the root was read
    mix = "{'weak': 4, 'unlabeled': 2, 'strong': 2}" if num_strong else (
        "{'weak': 6, 'unlabeled': 2}")  # no strong split: its share goes to weak clips
    assert f"mean teacher: {mix} clips per batch" in proc.stderr
    assert np.load(workdir / "predictions" / "test_probs.npy").shape == (4, 125, 10)
    assert json.loads((workdir / "training.json").read_text())["recipe"] == "mean_teacher"
