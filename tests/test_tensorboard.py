"""Tests of sedjax.reporting.tensorboard: what it writes, read back by TensorBoard itself."""

import time

import numpy as np
import pytest

from sedjax.reporting import tensorboard

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def read_scalars(logdir):
    """{tag: [(step, value), ...]} as TensorBoard reads logdir (every point, in file order)."""
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def event_files(logdir):
    return sorted(p.name for p in logdir.iterdir() if "tfevents" in p.name)


def f32(x):
    return float(np.float32(x))  # TensorBoard's simple_value is a float32


def test_scalars_steps_and_tags_read_back(tmp_path):
    points = {"train/loss": [(0, 0.75), (1, 0.5), (2, 0.25)],
              "val/score": [(0, 0.125), (1, 0.3), (2, -1.5e-3)],
              "lr": [(7, 3e-3), (-2, 1.0), (2**40, 12345.678)]}
    with tensorboard.SummaryWriter(tmp_path) as w:
        for tag, series in points.items():
            for step, value in series:
                w.scalar(tag, value, step)
    files = event_files(tmp_path)
    assert len(files) == 1 and files[0].startswith("events.out.tfevents.")
    assert read_scalars(tmp_path) == {tag: [(s, f32(v)) for s, v in series]
                                      for tag, series in points.items()}


def test_scalars_of_a_mapping_get_the_prefix(tmp_path):
    with tensorboard.SummaryWriter(tmp_path) as w:
        # what the loops pass: python floats, numpy scalars, 0-d arrays
        w.scalars({"loss": np.float32(0.5), "val_score": 0.25, "learning_rate": np.array(1e-3)},
                  step=1, prefix="pass1/")
        w.scalars({"loss": 0.375, "val_score": 0.5, "learning_rate": 1e-3}, step=2, prefix="pass1/")
    assert read_scalars(tmp_path) == {
        "pass1/loss": [(1, 0.5), (2, 0.375)],
        "pass1/val_score": [(1, 0.25), (2, 0.5)],
        "pass1/learning_rate": [(1, f32(1e-3)), (2, f32(1e-3))]}


def test_scalars_reach_the_disk_within_flush_secs_before_close(tmp_path):
    w = tensorboard.SummaryWriter(tmp_path, flush_secs=1)
    try:
        w.scalars({"a": 1.0}, step=3, prefix="x/")
        w.flush()
        deadline = time.time() + 10
        while not read_scalars(tmp_path) and time.time() < deadline:
            time.sleep(0.2)
        assert read_scalars(tmp_path) == {"x/a": [(3, 1.0)]}
    finally:
        w.close()


def test_second_writer_makes_second_file_read_after_the_first(tmp_path):
    with tensorboard.SummaryWriter(tmp_path) as w:
        w.scalars({"a": 1.0, "b": 2.0}, step=1, prefix="x/")
    with tensorboard.SummaryWriter(tmp_path) as w:
        w.scalar("x/a", 3.0, 2)
    assert len(event_files(tmp_path)) == 2
    assert read_scalars(tmp_path) == {"x/a": [(1, 1.0), (2, 3.0)], "x/b": [(1, 2.0)]}


def test_sedjax_run_does_not_import_torch():
    """tensorboardX imports torch whenever it is installed (~1 GB, seconds); sedjax's run
    imports it without (sedjax.reporting.tensorboard)."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed: nothing could import it")
    code = ("import sys, sedjax.run, sedjax.reporting.tensorboard as t; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]; "
            "assert t.tensorboardX.SummaryWriter")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
