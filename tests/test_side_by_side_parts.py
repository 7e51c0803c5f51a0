"""The side-by-side harness's parts that need neither torch nor DESED_task
(sedjax/benchmarks/desed_task): the class list of a folder's metadata, DESED_task's yaml
rewritten from a sedjax config, the table, the measured subprocess, --only_table. The whole
harness against DESED_task itself: tests/parity/test_side_by_side.py."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading

import pytest

from configs import demo_desed
from sedjax.benchmarks.desed_task import __main__ as command
from sedjax.benchmarks.desed_task import conf, layout, process, table
from sedjax.data import synthetic

CLASSES = ("Cat", "Dog", "Speech")

# the keys of DESED_task's confs/default.yaml that the rewrite reads or sets (values: its own)
BASE = {
    "training": {"batch_size": [12, 12, 24], "batch_size_val": 24, "const_max": 2,
                 "n_epochs_warmup": 50, "num_workers": 6, "n_epochs": 200,
                 "early_stop_patience": 200, "median_window": 7, "val_thresholds": [0.5],
                 "ema_factor": 0.999, "backend": "dp", "weak_split": 0.9, "seed": 42,
                 "mixup": "soft", "enable_progress_bar": True},
    "scaler": {"statistic": "instance", "normtype": "minmax", "dims": [1, 2],
               "savepath": "./scaler.ckpt"},
    "data": {"audio_max_len": 10, "fs": 16000, "net_subsample": 4},
    "opt": {"lr": 0.001},
    "feats": {"n_mels": 128, "n_filters": 2048, "hop_length": 256, "n_window": 2048,
              "sample_rate": 16000, "f_min": 0, "f_max": 8000},
    "net": {"dropout": 0.5, "rnn_layers": 2, "nclass": 10, "attention": True,
            "n_RNN_cell": 128, "nb_filters": [16, 32, 64, 128, 128, 128, 128]},
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A small generated DESED-layout folder (1-s clips of three classes), weak.tsv with one
    more label than the strong files."""
    root = tmp_path_factory.mktemp("desed")
    synthetic.generate(root, num_weak=10, num_unlabeled=6, num_test=6, num_strong=8,
                       num_validation=6, num_synth_validation=6, seed=3, sample_rate=16000,
                       classes=CLASSES, clip_seconds=1.0, layout="desed", num_workers=1)
    with open(root / layout.WEAK_TSV, "a") as f:
        f.write("Ysyn_extra.wav\tBlender\n")
    return root


def test_classes_are_the_sorted_union_of_the_metadata_labels(folder):
    assert layout.classes(layout.find(folder)) == ["Blender", "Cat", "Dog", "Speech"]


def test_layout_follows_the_split_roles(folder):
    sedjax_roles = layout.find(folder, "sedjax")
    assert sedjax_roles.test.tsv == folder / "metadata/eval/public.tsv"
    assert sedjax_roles.synth_val_source == "synthetic21_validation"
    desed_roles = layout.find(folder, "desed_task")
    assert desed_roles.test.tsv == folder / "metadata/validation/validation.tsv"
    assert desed_roles.test_source == "validation"


def test_yaml_takes_the_sedjax_config_values(folder, tmp_path):
    config = demo_desed.get_config()
    config.data.classes = CLASSES
    mt = config.mean_teacher
    mt.batch_strong = mt.batch_weak = mt.batch_unlabeled = 2  # the folder is small
    found = layout.find(folder, "sedjax")
    classes = layout.classes(found)
    yaml, steps, notes = conf.build(BASE, config, found, classes, 7, tmp_path,
                                    rate_of=lambda _: 16000)
    mt, f, m = config.mean_teacher, config.features, config.model
    t, d = yaml["training"], yaml["data"]
    assert t["batch_size"] == [mt.batch_strong, mt.batch_weak, mt.batch_unlabeled]
    assert yaml["opt"]["lr"] == mt.learning_rate
    assert t["ema_factor"] == mt.ema_decay
    assert t["n_epochs"] == mt.num_epochs
    assert t["const_max"] == mt.consistency_weight
    assert t["median_window"] == config.postprocess.median_filter
    assert t["val_thresholds"] == [config.postprocess.threshold]
    assert t["mixup"] == ("soft" if mt.augment.mixup_share else None)
    assert t["seed"] == 7 and t["num_workers"] == 0 and t["backend"] is None
    assert t["early_stop_patience"] == min(mt.early_stopping_patience, mt.num_epochs)
    assert yaml["feats"]["n_mels"] == f.n_mels and yaml["feats"]["hop_length"] == f.hop_length
    assert yaml["feats"]["n_filters"] == f.n_fft and yaml["feats"]["sample_rate"] == f.sample_rate
    assert yaml["net"]["nclass"] == len(classes)
    assert yaml["net"]["nb_filters"] == list(m.conv_features)
    assert d["audio_max_len"] == 1 and d["fs"] == f.sample_rate and d["net_subsample"] == 4
    # every path in the folder; the test is the split sedjax tests on, DESED_task validates on
    # synthetic21_validation
    assert d["test_tsv"] == str(folder / "metadata/eval/public.tsv")
    assert d["test_dur"] == str(folder / "metadata/eval/public_durations.tsv")
    assert d["synth_val_tsv"] == str(folder / layout.SYNTH_VAL_TSV)
    assert d["weak_folder"] == d["weak_folder_44k"] == str(folder / "audio/train/weak")
    # the same steps: sedjax's per epoch (capped by DESED_task's shortest part), its ramp-up
    counts = layout.counts(found)
    assert steps["sedjax"] == mt.steps_per_epoch
    assert steps["desed_epoch"] == conf.desed_epoch_length(counts, t["batch_size"], 0.9)
    assert steps["limit_train_batches"] == min(steps["sedjax"], steps["desed_epoch"])
    assert t["n_epochs_warmup"] * steps["desed_epoch"] == pytest.approx(
        round(mt.consistency_rampup * mt.steps_per_epoch * mt.num_epochs))
    assert any(n.startswith("checkpoint:") for n in notes)


def test_desed_epoch_is_its_shortest_part():
    counts = {"synth": 50, "weak": 100, "unlabeled": 300}
    # weak: round(0.9 * 100) = 90 clips -> 15 batches of 6; synth 50 // 6 = 8; unlabeled 25
    assert conf.desed_epoch_length(counts, [6, 6, 12], 0.9) == 8


def _state():
    def run(system, seed, psds1, s_epoch, wall, rss):
        scores = {"psds1": psds1, "psds2": psds1 + 0.1, "collar_f1": 0.5, "num_clips": 87}
        return {"system": system, "seed": seed, "status": "done", "headline": "teacher",
                "scores": {"teacher": scores, "student": dict(scores, psds1=psds1 / 2)},
                "s_per_epoch": s_epoch, "s_per_epoch_after_first": s_epoch / 2,
                "wall_s": wall, "peak_rss_mb": rss}
    runs = [run("sedjax", 0, 0.10, 10.0, 100.0, 1000.0),
            run("sedjax", 1, 0.20, 12.0, 110.0, 1100.0),
            run("desed_task", 0, 0.30, 20.0, 200.0, 1500.0),
            run("desed_task", 1, 0.40, 30.0, 220.0, 1600.0)]
    return {"runs": {table.key(r["system"], r["seed"]): r for r in runs},
            "data": {"test_source": "eval/public"}}


def test_table_is_mean_and_std_over_seeds():
    text = table.markdown(_state())
    lines = text.splitlines()
    assert lines[0] == "| " + " | ".join(table.COLUMNS) + " |"
    sedjax_row = next(x for x in lines if x.startswith("| sedjax (teacher)"))
    assert "0.150 ± 0.071" in sedjax_row and "50.0 ± 0.0 %" in sedjax_row
    assert "11.0 ± 1.4" in sedjax_row and "1050 ± 71" in sedjax_row
    assert any(x.startswith("| DESED_task (teacher) | 0.350 ± 0.071") for x in lines)
    assert any(x.startswith("| DESED_task (student)") and "(same run)" in x for x in lines)
    # DESED_task's s/epoch over sedjax's, per seed: 2.0 and 2.5
    assert "2.25 ± 0.35x" in text and "87 test clips" in text


def test_seconds_per_epoch_is_the_median_of_the_epochs():
    state = _state()
    state["runs"]["desed_task/0"]["epoch_s"] = [20.0, 21.0, 19.0, 400.0]  # one disturbed epoch
    assert table.epoch_seconds(state["runs"]["desed_task/0"]) == 20.5
    assert table.epoch_seconds(state["runs"]["sedjax/0"]) == 10.0  # no epochs kept: the mean
    desed_row = next(x for x in table.markdown(state).splitlines()
                     if x.startswith("| DESED_task (teacher)"))
    assert "25.2 ± 6.7" in desed_row  # medians 20.5 and 30.0


def test_table_without_runs():
    assert table.markdown({"runs": {}}) == "no finished runs yet"


def test_only_table_prints_the_json(tmp_path, capsys):
    table.write(tmp_path, _state())
    assert command.main([f"--workdir={tmp_path}", "--only_table"]) == 0
    assert "| sedjax (teacher) |" in capsys.readouterr().out
    assert command.main([f"--workdir={tmp_path / 'none'}", "--only_table"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_bad_flags_are_one_error_line(tmp_path, capsys):
    assert command.main([f"--workdir={tmp_path}", "--systems=pytorch"]) == 2
    assert "--systems: unknown pytorch" in capsys.readouterr().err
    assert command.main([f"--workdir={tmp_path}", "--seeds=0,x"]) == 2


def test_peak_memory_is_each_process_own(tmp_path):
    big = process.run([sys.executable, "-c", "x = b'1' * (300 << 20)"], tmp_path / "big.log",
                      tmp_path, "big", heartbeat=60)
    small = process.run([sys.executable, "-c", "pass"], tmp_path / "small.log", tmp_path,
                        "small", heartbeat=60)
    assert big.returncode == small.returncode == 0
    assert big.peak_rss_mb >= 300 > small.peak_rss_mb
    assert small.wall_s > 0 and small.log.read_text().startswith("$ ")


def test_a_stopped_harness_stops_its_run(tmp_path):
    folder = tmp_path / "run"
    command = [sys.executable, "-c", "import sys, time; time.sleep(60)", str(folder)]
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    with pytest.raises(SystemExit) as stopped:
        process.run(command, folder / "log.txt", tmp_path, "sleep", heartbeat=60)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert (folder / process.PID_FILE).is_file() and process.running_pid(folder) is None
    # a run still going (its harness killed outright) is found by its folder. Read once it
    # runs: right after exec, /proc/PID/cmdline can still be empty (the kernel sets the new
    # arguments after the spawning parent resumes)
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print('running', flush=True); time.sleep(60)",
         str(folder)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "running"
    try:
        (folder / process.PID_FILE).write_text(f"{child.pid}\n")
        assert process.running_pid(folder) == child.pid
    finally:
        child.kill()
        child.wait()


def test_json_is_written_whole(tmp_path):
    table.write(tmp_path, {"runs": {}, "x": 1})
    assert json.loads((tmp_path / table.FILENAME).read_text()) == {"runs": {}, "x": 1}
    assert not list(pathlib.Path(tmp_path).glob("*.tmp*"))
