"""A real multi-process job on this machine: 2 processes x 2 CPU devices (jax.distributed,
collectives over gloo, coordinator on localhost) against 1 process x 4 devices.

Equal up to float rounding, not bit for bit: the cross-process all-reduce sums in another
order than the in-process one, and two contractions of the per-device program round
differently when a process holds 2 devices instead of 4 (measured: per-device gradients of
the first conv and the dense kernels differ in the last bit). Adam then turns last-bit
differences of ~0 gradients (a conv bias under BatchNorm) into steps of the learning rate, so
parameters are compared after plain SGD steps, and runs by their losses and predictions.
"""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).parents[1]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="gloo on Linux")


def _env(devices: int, **extra) -> dict:
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                     if "device_count" not in f)
    return {**os.environ, "JAX_PLATFORMS": "cpu", **extra,
            "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={devices}".strip()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_train_steps_of_two_processes_equal_one_process(tmp_path):
    """The global batch is assembled from each process's rows and gradients and BatchNorm
    statistics are averaged over all 4 devices of both processes."""
    script = str(ROOT / "tests" / "distributed_steps.py")
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    subprocess.run([sys.executable, script, str(one)], cwd=ROOT, env=_env(4), check=True,
                   capture_output=True, timeout=600)
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, script, str(two)], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, env=_env(2, SEDJAX_COORDINATOR=f"127.0.0.1:{port}",
                                         SEDJAX_NUM_PROCESSES="2", SEDJAX_PROCESS_ID=str(i)))
        for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-3000:]
    a, b = np.load(one), np.load(two)
    assert (int(a["processes"]), int(b["processes"])) == (1, 2)
    assert int(a["devices"]) == int(b["devices"]) == 4
    sgd = [k for k in a.files if k.startswith("sgd/[")]
    assert len(sgd) > 20
    for key in sgd:  # parameters after 3 steps
        np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-5, err_msg=key)
    for opt in ("sgd", "adam"):
        np.testing.assert_allclose(b[f"{opt}/losses"], a[f"{opt}/losses"], rtol=1e-5)
        assert not np.allclose(a[f"{opt}/losses"][0], a[f"{opt}/losses"][1:])  # it trained


def _process_pid(workdir: pathlib.Path, process_id: int) -> int | None:
    """The pid of the sedjax.main process `process_id` working in `workdir`."""
    for entry in pathlib.Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except (OSError, ValueError):
            continue
        if (b"sedjax.main" in cmd and f"--workdir={workdir}".encode() in cmd
                and f"SEDJAX_PROCESS_ID={process_id}\0".encode() in environ):
            return int(entry.name)
    return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """configs/tiny.py alone on 4 devices, and as 2 processes x 2 devices: process 1 killed
    after pass 1's first epoch, then the job started again to resume."""
    base = tmp_path_factory.mktemp("multiprocess")
    single, multi, writes = base / "single", base / "multi", base / "writes.tsv"
    subprocess.run([sys.executable, "-m", "sedjax.main", "--config=configs/tiny.py",
                    f"--workdir={single}"], cwd=ROOT, env=_env(4), check=True,
                   capture_output=True, timeout=900)
    launch = ["bash", "launch/multiprocess_cpu.sh", "2", "configs/tiny.py", str(multi)]
    env = _env(2, SEDJAX_WRITE_LOG=str(writes))
    job = subprocess.Popen(launch, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    first_epoch = multi / "pass1" / "checkpoints" / "latest" / "0"
    deadline = time.time() + 600
    while not first_epoch.exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    pid = _process_pid(multi, 1)
    assert pid is not None and first_epoch.exists()
    os.kill(pid, signal.SIGKILL)  # one worker lost mid-run, as a preempted node
    killed_output, _ = job.communicate(timeout=600)
    resumed = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return single, multi, writes, job.returncode, resumed.stdout + resumed.stderr


def test_a_killed_job_stops_and_its_restart_resumes(runs):
    _, multi, _, killed_rc, resumed = runs
    assert killed_rc != 0  # the launcher stopped the surviving process and failed
    resumed_from = re.compile(r"pass1: resuming after epoch \d|pass1: done before")
    assert resumed_from.search(resumed) and "JAX process 0/2" in resumed
    log = (multi / "logs" / "process_1.log").read_text()
    assert "JAX process 1/2" in log and resumed_from.search(log)


def test_two_processes_predict_what_one_process_predicts(runs):
    single, multi, *_ = runs
    np.testing.assert_array_equal(np.load(multi / "pseudo_labels.npy"),
                                  np.load(single / "pseudo_labels.npy"))
    p1, p2 = (np.load(d / "predictions" / "test_probs.npy") for d in (single, multi))
    assert p1.shape == p2.shape == (8, 500, 10)
    # rows gathered from both processes in clip order (a mix-up differs by ~0.1-0.5)
    np.testing.assert_allclose(p2, p1, rtol=0, atol=1e-2)
    r1, r2 = (json.loads((d / "results.json").read_text()) for d in (single, multi))
    assert r1["devices"] == r2["devices"] == 4
    assert r1["pass1"]["thresholds"] == r2["pass1"]["thresholds"]
    ev1, ev2 = r1["test"]["event_based"], r2["test"]["event_based"]
    assert abs(ev1["f_measure_macro"] - ev2["f_measure_macro"]) <= 0.05


def test_each_output_file_has_one_writer(runs):
    _, multi, writes, *_ = runs
    writers = defaultdict(set)
    for line in writes.read_text().splitlines():
        process, path = line.split("\t")
        writers[path].add(process)
    assert any(p.endswith("results.json") for p in writers)
    assert any("/features/" in p for p in writers)
    shared = {p: w for p, w in writers.items() if len(w) > 1}
    assert not shared, shared
    # and process 1 wrote its own share of the features, nothing of the results
    assert {p for p, w in writers.items() if w == {"1"}} and all(
        "/features/" in p for p, w in writers.items() if w == {"1"})
