"""sedjax.system.workdir_lock: one run per workdir; a stale lock is taken over, a live one or
one of another host refuses in one `error:` line, the lock goes when the run ends."""

import errno
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from absl import flags

from sedjax.system import cli, files, workdir_lock

ROOT = pathlib.Path(__file__).parents[1]
HOLDER = """
import sys, time
from sedjax.system import workdir_lock
with workdir_lock.hold(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """A process that holds tmp_path/'w' (sleeping); killed at the end if still alive."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "w")], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "held\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def write_lock(workdir: pathlib.Path, **fields) -> pathlib.Path:
    """A lock record as a run of this host would write it, with `fields` changed."""
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": "2024-01-02T03:04:05+00:00", "command": "python -m sedjax.main",
              "boot_id": workdir_lock._boot_id(), "start_ticks": workdir_lock._start_ticks(
                  os.getpid()), "token": "theirs"}
    record.update(fields)
    workdir.mkdir(parents=True, exist_ok=True)
    lock = workdir / workdir_lock.LOCK_NAME
    lock.write_text(json.dumps(record))
    return lock


def exited_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_lock_names_this_run_while_held_and_goes_at_the_end(tmp_path):
    workdir = tmp_path / "new" / "w"  # created by hold
    with workdir_lock.hold(workdir) as lock:
        assert lock == workdir / ".sedjax.lock"
        record = json.loads(lock.read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert record["started"][:4].isdigit() and "T" in record["started"]
        assert sys.argv[0] in record["command"]
    assert sorted(os.listdir(workdir)) == []  # no lock, no temporary file left


def test_a_live_run_makes_a_second_one_refuse_in_one_line(tmp_path, holder, capsys):
    record = json.loads((tmp_path / "w" / ".sedjax.lock").read_text())
    assert record["pid"] == holder.pid

    def second_run(argv):
        with workdir_lock.hold(tmp_path / "w"):
            raise AssertionError("the second run must not start")

    assert cli.call(second_run, flags.FlagValues(), []) == cli.EXIT_USER_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0] == (
        f"error: workdir {tmp_path / 'w'} is in use by another sedjax run (PID {holder.pid} "
        f"on host {socket.gethostname()} since {record['started']}); wait for it to finish or "
        f"stop it (kill {holder.pid}), or give another --workdir")
    assert json.loads((tmp_path / "w" / ".sedjax.lock").read_text()) == record  # untouched


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)  # no chance to clean up: the lock stays
    holder.wait()
    assert (tmp_path / "w" / ".sedjax.lock").exists()
    with workdir_lock.hold(tmp_path / "w") as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_a_stale_lock_of_an_exited_pid_is_taken_over_and_logged(tmp_path, caplog):
    pid = exited_pid()
    write_lock(tmp_path, pid=pid, start_ticks=None)
    with workdir_lock.hold(tmp_path) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"took over the stale lock of PID {pid}" in caplog.text


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_a_reused_pid_is_told_apart_by_its_start_time(tmp_path, holder):
    # the PID is alive, but its process started after the one that wrote the lock
    ticks = workdir_lock._start_ticks(holder.pid)
    write_lock(tmp_path, pid=holder.pid, start_ticks=ticks - 1)
    with workdir_lock.hold(tmp_path) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_a_lock_from_before_a_reboot_is_stale(tmp_path):
    if workdir_lock._boot_id() is None:
        pytest.skip("no boot id on this system")
    write_lock(tmp_path, boot_id="an-earlier-boot")  # our own, live, PID: reused after boot
    with workdir_lock.hold(tmp_path) as lock:
        assert json.loads(lock.read_text())["token"] != "theirs"


def test_a_live_pid_with_its_own_start_time_holds(tmp_path):
    write_lock(tmp_path)  # this very process: alive, same start time and boot
    with pytest.raises(workdir_lock.WorkdirBusy, match=f"PID {os.getpid()} "):
        with workdir_lock.hold(tmp_path):
            pass
    assert json.loads((tmp_path / ".sedjax.lock").read_text())["token"] == "theirs"


def test_a_lock_of_another_host_refuses_and_says_how_to_remove_it(tmp_path):
    lock = write_lock(tmp_path, host="node-17", pid=exited_pid())  # dead here, unknowable there
    with pytest.raises(workdir_lock.WorkdirBusy) as e:
        with workdir_lock.hold(tmp_path):
            pass
    assert str(e.value) == (
        f"workdir {tmp_path} is in use by a sedjax run on another host (PID "
        f"{json.loads(lock.read_text())['pid']} on host node-17 since 2024-01-02T03:04:05+00:00"
        f"), which cannot be checked from {socket.gethostname()}; if that run is gone, remove "
        f"{lock} and rerun")
    assert isinstance(e.value, cli.UserError) and lock.exists()


def test_an_unreadable_lock_file_refuses(tmp_path):
    (tmp_path / ".sedjax.lock").write_text("{half a rec")
    with pytest.raises(workdir_lock.WorkdirBusy, match="not a sedjax lock record.*remove it"):
        with workdir_lock.hold(tmp_path):
            pass


def test_the_lock_goes_when_the_run_fails(tmp_path):
    with pytest.raises(RuntimeError, match="training diverged"):
        with workdir_lock.hold(tmp_path):
            raise RuntimeError("training diverged")
    assert not (tmp_path / ".sedjax.lock").exists()
    with workdir_lock.hold(tmp_path):  # and the next run gets it
        pass


def test_a_lock_that_another_run_took_meanwhile_is_left_in_place(tmp_path):
    with workdir_lock.hold(tmp_path):
        write_lock(tmp_path, token="someone else's")
    assert json.loads((tmp_path / ".sedjax.lock").read_text())["token"] == "someone else's"


def test_only_the_primary_process_holds_it(tmp_path, holder):
    with workdir_lock.hold(tmp_path / "w", primary=False) as lock:  # no error though held
        assert lock is None
    with workdir_lock.hold(tmp_path / "other", primary=False):
        assert not (tmp_path / "other").exists()


def test_of_several_takers_of_one_stale_lock_exactly_one_wins(tmp_path, monkeypatch):
    write_lock(tmp_path, pid=exited_pid(), start_ticks=None)
    judge = workdir_lock._is_stale

    def slow_judge(record):  # every taker has judged the lock stale before any replaces it
        time.sleep(0.3)
        return judge(record)

    monkeypatch.setattr(workdir_lock, "_is_stale", slow_judge)
    takers = 6
    done = threading.Barrier(takers)
    outcomes = []

    def take():
        try:
            with workdir_lock.hold(tmp_path):
                outcomes.append("won")
                done.wait(30)  # hold it until every taker has tried
        except workdir_lock.WorkdirBusy:
            outcomes.append("refused")
            done.wait(30)
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            outcomes.append(repr(e))
            done.abort()

    threads = [threading.Thread(target=take) for _ in range(takers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["refused"] * (takers - 1) + ["won"]
    assert os.listdir(tmp_path) == []


def test_no_room_for_the_lock_is_a_full_disk_naming_it(tmp_path, monkeypatch):
    def full(self, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    with pytest.raises(files.DiskFullError) as e:
        with workdir_lock.hold(tmp_path):
            raise AssertionError("must not run without the lock")
    assert e.value.filename == str(tmp_path / ".sedjax.lock") and os.listdir(tmp_path) == []


def test_sedjax_run_refuses_a_workdir_in_use_before_touching_it(tmp_path, holder):
    """run.train_and_evaluate takes the lock first: nothing is generated or written."""
    from configs import tiny  # pylint: disable=g-import-not-at-top
    from sedjax import run  # pylint: disable=g-import-not-at-top
    with pytest.raises(workdir_lock.WorkdirBusy, match=f"PID {holder.pid}"):
        run.train_and_evaluate(tiny.get_config(), tmp_path / "w")
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == [workdir_lock.LOCK_NAME]
