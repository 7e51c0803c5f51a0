"""A real multi-process job on this machine: 2 processes x 2 CPU devices (jax.distributed,
collectives over gloo, coordinator on localhost) against 1 process x 4 devices and 4 processes
x 1 device.

Averages over devices are added in one fixed order (sharding.device_mean; an all-reduce adds in
an order that depends on the process layout), so 2 x 2 and 4 x 1 train bit for bit alike,
Adam included. 1 x 4 is equal up to float rounding only: XLA:CPU runs large contractions
another way when a process holds more devices than this 2-core machine has cores (measured:
a plain jnp.dot with a 64,000-long contraction differs in the last bits with 4 devices in the
process, not with 1 or 2), and Adam turns last-bit differences of ~0 gradients (a conv bias
under BatchNorm) into steps of the learning rate; so against 1 x 4 parameters are compared
after plain SGD steps, and runs by their losses and predictions.
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


def _steps(out: pathlib.Path, processes: int, devices: int):
    """tests/distributed_steps.py as `processes` processes x `devices` devices -> its .npz."""
    script, port = str(ROOT / "tests" / "distributed_steps.py"), _free_port()
    procs = [subprocess.Popen(
        [sys.executable, script, str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, env=_env(devices, **({} if processes == 1 else dict(
            SEDJAX_COORDINATOR=f"127.0.0.1:{port}", SEDJAX_NUM_PROCESSES=str(processes),
            SEDJAX_PROCESS_ID=str(i))))) for i in range(processes)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-3000:]
    return np.load(out)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    base = tmp_path_factory.mktemp("layouts")
    return {(p, d): _steps(base / f"{p}x{d}.npz", p, d) for p, d in ((1, 4), (2, 2), (4, 1))}


def test_train_steps_of_two_processes_equal_one_process(layouts):
    """The global batch is assembled from each process's rows and gradients and BatchNorm
    statistics are averaged over all 4 devices of both processes."""
    a, b = layouts[1, 4], layouts[2, 2]
    assert (int(a["processes"]), int(b["processes"])) == (1, 2)
    assert int(a["devices"]) == int(b["devices"]) == 4
    sgd = [k for k in a.files if k.startswith("sgd/[")]
    assert len(sgd) > 20
    for key in sgd:  # parameters after 3 steps
        np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-5, err_msg=key)
    for opt in ("sgd", "adam"):
        # 2e-5: the first block's BatchNorm, folded into its conv (layers.folded_conv_and_norm),
        # takes its moments from a long contraction over the device's patches (the effect of
        # the module docstring; measured 1.1e-5 after 3 Adam steps)
        np.testing.assert_allclose(b[f"{opt}/losses"], a[f"{opt}/losses"], rtol=2e-5)
        assert not np.allclose(a[f"{opt}/losses"][0], a[f"{opt}/losses"][1:])  # it trained


def test_averages_over_devices_do_not_depend_on_the_process_layout(layouts):
    """device_mean gives the same bits in-process (1 x 4) and across processes (2 x 2, 4 x 1),
    on every device; so do 3 Adam steps of 2 x 2 and 4 x 1 (same per-device programs)."""
    for layout in ((2, 2), (4, 1)):
        np.testing.assert_array_equal(layouts[layout]["device_mean"],
                                      layouts[1, 4]["device_mean"], err_msg=str(layout))
    means = layouts[1, 4]["device_mean"]
    assert (means == means[0]).all()  # the same value on every device
    rows = layouts[1, 4]["rows"]
    error = np.abs(means[0] - rows.astype(np.float64).mean(0))
    assert (error <= 1e-6 * np.abs(rows).max(0)).all()  # a mean, to float32 rounding
    b, c = layouts[2, 2], layouts[4, 1]
    params = [k for k in b.files if k.startswith(("sgd/[", "adam/["))]
    assert len(params) > 40 and int(c["processes"]) == 4
    for key in params:
        np.testing.assert_array_equal(c[key], b[key], err_msg=key)
    np.testing.assert_array_equal(c["adam/losses"], b["adam/losses"])


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


def _saved(stage: pathlib.Path) -> bool:
    """Whether the stage's `latest` checkpoint holds a finished save (orbax's step folder)."""
    latest = stage / "checkpoints" / "latest"
    return latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir())


def _launch(workdir: pathlib.Path) -> list:
    """configs/tiny.py as 2 processes on launch/multiprocess_cpu.sh."""
    return ["bash", "launch/multiprocess_cpu.sh", "2", "configs/tiny.py", str(workdir)]


def _start_job(launch: list, env: dict, workdir: pathlib.Path, ready=None,
               process_id: int = 1) -> tuple:
    """(the launcher, the pid of process `process_id`) once `ready(workdir)` (default: pass 1
    saved its first epoch)."""
    ready = ready or (lambda w: _saved(w / "pass1"))
    job = subprocess.Popen(launch, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while not ready(workdir) and job.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    pid = _process_pid(workdir, process_id)
    assert pid is not None and ready(workdir), job.communicate()[0][-3000:]
    return job, pid


def _write_log(writes: pathlib.Path) -> dict:
    """Environment for a job whose processes record each completed atomic write in `writes`
    (tests/write_log/sitecustomize.py; the repository on the path for it to import sedjax)."""
    path = [str(ROOT / "tests" / "write_log"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {"SEDJAX_WRITE_LOG": str(writes), "PYTHONPATH": os.pathsep.join(p for p in path if p)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """configs/tiny.py alone on 4 devices, and as 2 processes x 2 devices: process 1 killed
    after pass 1's first epoch, then the job started again to resume."""
    base = tmp_path_factory.mktemp("multiprocess")
    single, multi, writes = base / "single", base / "multi", base / "writes.tsv"
    subprocess.run([sys.executable, "-m", "sedjax.main", "--config=configs/tiny.py",
                    f"--workdir={single}"], cwd=ROOT, env=_env(4), check=True,
                   capture_output=True, timeout=900)
    launch = _launch(multi)
    env = _env(2, SEDJAX_DEVICES_PER_PROCESS="2", **_write_log(writes))
    job, pid = _start_job(launch, env, multi)
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


def _signalled(workdir: pathlib.Path, ready=None, process_id: int = 1,
               freeze: bool = False) -> tuple:
    """configs/tiny.py as 2 processes x 2 devices; process `process_id` gets SIGTERM (as a spot
    VM's notice) once `ready(workdir)`; then the same command again. (status, process 0's
    output, process 1's log, the rerun's status). `freeze`: the process is stopped (SIGSTOP)
    while the signal is sent, and results.json must not exist then: the signal lands before
    the run's end."""
    launch = _launch(workdir)
    env = _env(2, SEDJAX_DEVICES_PER_PROCESS="2")
    job, pid = _start_job(launch, env, workdir, ready, process_id)
    if freeze:
        os.kill(pid, signal.SIGSTOP)
        assert not (workdir / "results.json").exists(), "the job ended before the signal"
    os.kill(pid, signal.SIGTERM)
    if freeze:
        os.kill(pid, signal.SIGCONT)
    output, _ = job.communicate(timeout=600)
    log = (workdir / "logs" / "process_1.log").read_text()  # before the rerun rewrites it
    resumed = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert (workdir / "results.json").exists()
    return job.returncode, output, log


STOP = re.compile(r"error: (?:\w+: )?stopped by SIGTERM ([^;]+);")


def _assert_stopped_alike(rc: int, output: str, log: str, may_die: bool = False) -> None:
    """The job ended with 143 (the launcher passes on the processes' status) and every
    process that was still running reported the same stop point; `may_die`: the signalled
    process 0 may also have ended by the signal itself (past the last stage boundary)."""
    assert rc == 143, output[-3000:]
    first, other = STOP.search(output), STOP.search(log)
    if may_die and first is None:
        return
    assert first and other and first.group(1) == other.group(1), output[-3000:] + log[-3000:]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """Process 1 gets SIGTERM after pass 1's first epoch; the job started again resumes."""
    multi = tmp_path_factory.mktemp("sigterm") / "multi"
    return (multi, *_signalled(multi))


def test_sigterm_stops_every_process_at_the_same_step(stopped):
    _, rc, output, log = stopped
    _assert_stopped_alike(rc, output, log)


def _has_features(workdir: pathlib.Path) -> bool:
    return any((workdir / "features").glob("*")) if (workdir / "features").is_dir() else False


def test_a_sigterm_while_features_are_computed_stops_the_job(tmp_path):
    rc, output, log = _signalled(tmp_path / "multi", ready=_has_features)
    _assert_stopped_alike(rc, output, log)


def test_a_sigterm_to_process_0_while_it_scores_stops_the_job(tmp_path):
    workdir = tmp_path / "multi"
    rc, output, log = _signalled(
        workdir, ready=lambda w: (w / "predictions" / "test_probs.npy").exists(),
        process_id=0, freeze=True)
    _assert_stopped_alike(rc, output, log, may_die=True)


def test_a_job_stopped_mid_epoch_ends_as_one_stopped_between_epochs(runs, stopped):
    """Resumed mid-epoch (SIGTERM) or after an epoch (SIGKILL), the 2 x 2 job ends with the
    same predictions, bit for bit."""
    (_, killed, *_), (signalled, *_) = runs, stopped
    for rel in ("pseudo_labels.npy", "predictions/test_probs.npy"):
        np.testing.assert_array_equal(np.load(signalled / rel), np.load(killed / rel))
