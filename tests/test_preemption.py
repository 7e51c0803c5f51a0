"""Stopping on purpose: a signal mid-epoch saves the state and the rerun ends bit for bit where
an uninterrupted run ends; a diverging loss stops the stage with one message."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

from configs import tiny, tiny_mean_teacher
from sedjax import run
from sedjax.system import cli, preemption
from sedjax.train import loop

ROOT = pathlib.Path(__file__).parents[1]


def _strip(d):
    """A results/training JSON without wall times (the one thing a resumed run may change)."""
    if isinstance(d, dict):
        return {k: _strip(v) for k, v in d.items() if k not in ("seconds", "timings", "timings_s")}
    if isinstance(d, list):
        return [_strip(v) for v in d]
    return d


def assert_same_outputs(a: pathlib.Path, b: pathlib.Path) -> None:
    """Every prediction, pseudo-label and result of workdir a equals b's, bit for bit."""
    arrays = [p.relative_to(a) for p in a.rglob("*.npy") if "features" not in p.parts]
    assert any("test_probs" in str(p) for p in arrays)
    for rel in arrays:
        np.testing.assert_array_equal(np.load(a / rel), np.load(b / rel), err_msg=str(rel))
    for rel in [p.relative_to(a) for p in a.rglob("*.json")
                if "features" not in p.parts and "checkpoints" not in p.parts
                and p.name != "config.json"]:
        assert _strip(json.loads((a / rel).read_text())) == _strip(
            json.loads((b / rel).read_text())), rel


def stop_at_call(monkeypatch, n: int) -> None:
    """The n-th should_stop() call sees a SIGTERM (as if it arrived during that step)."""
    calls, original = [0], preemption.should_stop

    def should_stop():
        calls[0] += 1
        if calls[0] == n:
            preemption.request_stop("SIGTERM")
        return original()
    monkeypatch.setattr(preemption, "should_stop", should_stop)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The tiny two-pass program run through once."""
    path = tmp_path_factory.mktemp("whole")
    run.train_and_evaluate(tiny.get_config(), path)
    return path


# tiny.py: pass 1 has 2 steps per epoch (2 epochs), pass 2 2 steps (1 epoch); should_stop is
# asked after every step and after every epoch
@pytest.mark.parametrize("call, where", [(4, "pass1: stopped by SIGTERM at epoch 2, step 1"),
                                         (7, "pass2: stopped by SIGTERM at epoch 1, step 1"),
                                         (3, "pass1: stopped by SIGTERM after epoch 1")])
def test_a_stopped_two_pass_run_resumes_bit_for_bit(uninterrupted, tmp_path, monkeypatch,
                                                     call, where):
    with monkeypatch.context() as m:
        stop_at_call(m, call)
        with pytest.raises(loop.Preempted) as stopped:
            run.train_and_evaluate(tiny.get_config(), tmp_path)
    message = str(stopped.value)
    assert message.startswith(where) and "Rerun the same command" in message
    assert not (tmp_path / "results.json").exists()
    run.train_and_evaluate(tiny.get_config(), tmp_path)
    assert_same_outputs(uninterrupted, tmp_path)


def test_the_partial_epoch_is_recorded_in_the_checkpoint(tmp_path, monkeypatch):
    stop_at_call(monkeypatch, 1)
    with pytest.raises(loop.Preempted):
        run.train_and_evaluate(tiny.get_config(), tmp_path)
    metas = list((tmp_path / "pass1" / "checkpoints" / "latest").rglob("meta/metadata"))
    assert len(metas) == 1
    meta = json.loads(metas[0].read_text())
    assert meta["epoch"] == -1 and meta["partial"]["epoch"] == 0
    assert meta["partial"]["steps"] == 1 and meta["partial"]["sums"]["count"] == [8.0]


def test_a_stopped_mean_teacher_resumes_bit_for_bit(tmp_path, monkeypatch):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run.train_and_evaluate(tiny_mean_teacher.get_config(), whole)
    with monkeypatch.context() as m:
        stop_at_call(m, 2)
        with pytest.raises(loop.Preempted, match=r"mean_teacher: stopped by SIGTERM at epoch 1, "
                                                  r"step 2"):
            run.train_and_evaluate(tiny_mean_teacher.get_config(), parts)
    run.train_and_evaluate(tiny_mean_teacher.get_config(), parts)
    assert_same_outputs(whole, parts)


def test_a_real_sigterm_stops_the_command_with_one_message(uninterrupted, tmp_path):
    """python -m sedjax.main gets SIGTERM once pass 1 trains: one message, status 143 (or, had
    the signal landed outside training, the default death); the rerun finishes as a whole run."""
    cmd = [sys.executable, "-m", "sedjax.main", "--config=configs/tiny.py",
           f"--workdir={tmp_path}"]
    env = {**os.environ, "SEDJAX_NO_REEXEC": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # absl logs to stderr
        lines.append(line)
        if "pass1 run 0 epoch 1" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    proc.wait(timeout=300)
    assert proc.returncode in (143, -signal.SIGTERM), rest[-2000:]
    if proc.returncode == 143:
        errors = [l for l in rest.splitlines() if l.startswith("error:")]
        assert len(errors) == 1 and "Rerun the same command" in errors[0], rest[-2000:]
        assert "Traceback" not in rest
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert_same_outputs(uninterrupted, tmp_path)


def test_a_diverging_learning_rate_stops_the_stage_with_one_message(tmp_path):
    config = tiny.get_config()
    config.pass1.learning_rate = 1e38
    with pytest.raises(loop.Diverged) as error:
        run.train_and_evaluate(config, tmp_path)
    message = str(error.value)
    assert message.startswith("pass1 diverged: the training loss is not finite in epoch 1, "
                              "step "), message
    assert "no epoch finished before it" in message
    assert isinstance(error.value, cli.UserError)  # one `error:` line from the command
    assert not (tmp_path / "pass2").exists() and not (tmp_path / "results.json").exists()


def test_divergence_keeps_the_last_good_epoch(tmp_path, monkeypatch):
    """A loss that turns NaN in epoch 2: epoch 1's checkpoint stays, and the message says so."""
    original = loop._accumulate
    calls = [0]

    def poisoned(total, metrics, first_bad, step):
        calls[0] += 1
        if calls[0] == 4:  # epoch 2, its second step
            metrics = {**metrics, "loss_sum": metrics["loss_sum"] * np.float32("nan")}
        return original(total, metrics, first_bad, step)
    monkeypatch.setattr(loop, "_accumulate", poisoned)
    with pytest.raises(loop.Diverged, match=r"pass1 diverged: .* epoch 2, step 2; the last good "
                                             r"state \(epoch 1\) is kept"):
        run.train_and_evaluate(tiny.get_config(), tmp_path)
    metas = list((tmp_path / "pass1" / "checkpoints" / "latest").rglob("meta/metadata"))
    assert [json.loads(m.read_text())["epoch"] for m in metas] == [0]


def test_a_signal_after_the_loops_last_question_still_ends_the_process():
    """A SIGTERM recorded inside deferred_signals() that no should_stop() answered (it came
    after the last step) is not dropped: the process ends by it when the block ends."""
    code = ("import os, signal\n"
            "from sedjax.system import preemption\n"
            "with preemption.deferred_signals():\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "print('after the block')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGTERM, proc.stdout + proc.stderr
    assert "after the block" not in proc.stdout
