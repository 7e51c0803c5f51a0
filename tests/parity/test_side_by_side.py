"""The side-by-side harness end to end (python -m sedjax.benchmarks.desed_task) at the smallest
size: one generated folder of 2-s clips of three classes, sedjax and DESED_task's own
train_sed.py one epoch of two steps each, seed 0, then --convert_check (DESED_task's
checkpoint converted by sedjax.convert and scored by sedjax). A few CPU minutes."""

import json
import math
import os
import subprocess
import sys

from sedjax.config import config_files

CONFIG = '''"""tiny_desed.py with three classes, 12-clip splits and batches of 2 + 2 + 2 clips,
so that DESED_task's epoch (its shortest part) holds sedjax's two steps and every scored split has
events of every class (DESED_task's validation PSDS asserts it)."""
from configs import tiny_desed


def get_config(variant=""):
    c = tiny_desed.get_config(variant)
    c.data.classes = ("Cat", "Dog", "Speech")
    s = c.data.synthetic
    s.num_weak, s.num_unlabeled, s.num_strong = 12, 8, 8
    s.num_validation = s.num_test = s.num_synth_validation = 12
    mt = c.mean_teacher
    mt.batch_weak = mt.batch_unlabeled = mt.batch_strong = 2
    mt.num_epochs, mt.steps_per_epoch = 1, 2
    return c
'''


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _harness(*args, timeout: int):
    env = dict(os.environ)  # one CPU device, as a user's run (not the test session's four)
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "xla_force_host_platform_device_count" not in f)
    return subprocess.run([sys.executable, "-m", "sedjax.benchmarks.desed_task", *args],
                          capture_output=True, text=True, cwd=config_files.repo_root(),
                          env=env, timeout=timeout)


def test_side_by_side_end_to_end(desed_task_root, tmp_path):
    config = tmp_path / "tiny_side_by_side.py"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    flags = [f"--workdir={out}", f"--config={config}", f"--desed_task={desed_task_root}",
             "--seeds=0", "--heartbeat=60"]
    done = _harness(*flags, "--convert_check", timeout=1500)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    state = json.loads((out / "side_by_side.json").read_text())
    clips = state["data"]["test_clips_with_events"]
    for system in ("sedjax", "desed_task"):
        run = state["runs"][f"{system}/0"]
        assert run["status"] == "done", run
        assert all(_finite(run[k]) and run[k] > 0 for k in ("s_per_epoch", "wall_s",
                                                             "peak_rss_mb"))
        scores = run["scores"][run["headline"]]
        assert all(_finite(scores[k]) for k in ("psds1", "psds2", "collar_f1")), scores
        assert scores["num_clips"] == clips > 0
    desed = state["runs"]["desed_task/0"]
    assert desed["steps_per_epoch"] == [2]  # sedjax's steps (limit_train_batches)
    assert all(_finite(desed["scores"]["student"][k]) for k in ("psds1", "psds2", "collar_f1"))
    check = desed["convert"]
    assert check["agree"], check
    # the converted model, predicted by sedjax, gives DESED_task's own scores
    assert check["max_abs_score_difference"] < 1e-4, check
    for row in ("| sedjax (teacher) |", "| DESED_task (teacher) |", "| DESED_task (student) |"):
        assert row in done.stdout
    # started again: every run is done, nothing reruns; --only_table reprints the table
    again = _harness(*flags, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "sedjax/0: done before, skipped" in again.stdout
    assert "desed_task/0: done before, skipped" in again.stdout
    table = _harness(f"--workdir={out}", "--only_table", timeout=120)
    assert table.returncode == 0 and "| DESED_task (teacher) |" in table.stdout
