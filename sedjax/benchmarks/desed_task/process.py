"""One training process, measured: wall time, peak resident memory, its output in a log file.

The peak is the run's own ru_maxrss, measured by a small process between this one and the run
(sedjax.benchmarks.desed_task.peak_rss: a run spawned straight from a large process would
report at least that process's size), so each run's figure is its own. While it runs, one progress line every `heartbeat` seconds: elapsed time and the
log's last line that is not a warning (the full output goes to the log). A harness stopped by
SIGTERM (or Ctrl-C) stops its run; one killed outright leaves it running, which the next
start finds (running_pid) and names.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time


PID_FILE = "pid"  # beside the log: the run's process id (running_pid)


def running_pid(folder: pathlib.Path) -> int | None:
    """The id of a process that a harness started for `folder` and that still runs (Linux:
    its command line names the folder), e.g. after that harness was killed; else None."""
    try:
        pid = int((folder / PID_FILE).read_text())
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except (OSError, ValueError):
        return None
    return pid if str(folder).encode() in cmdline else None


@dataclasses.dataclass
class Finished:
    returncode: int
    wall_s: float
    peak_rss_mb: float
    log: pathlib.Path


def _last_line(path: pathlib.Path, limit: int = 110) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            lines = [x for x in f.read().decode("utf-8", "replace").replace("\r", "\n")
                     .splitlines() if x.strip()]
    except OSError:
        return ""
    # the last line that says something: not a warning, nor its indented continuation
    telling = [x for x in lines if not x[:1].isspace() and "warn" not in x.lower()]
    text = (telling or lines or [""])[-1].strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run(command: list[str], log: pathlib.Path, cwd: pathlib.Path, label: str,
        heartbeat: float = 30.0, env: dict | None = None) -> Finished:
    """Runs `command` to its end (stdout and stderr into `log`); its figures."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rss_file = log.parent / "peak_rss_mb.txt"
    rss_file.unlink(missing_ok=True)
    with open(log, "wb") as out:
        out.write(("$ " + " ".join(command) + "\n").encode())
        out.flush()
        measured = [sys.executable, "-m", "sedjax.benchmarks.desed_task.peak_rss",
                    str(rss_file), "--", *command]
        proc = subprocess.Popen(measured, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, **(env or {})})
        (log.parent / PID_FILE).write_text(f"{proc.pid}\n")
        done = threading.Event()

        def stop(signum, frame):  # a harness stopped by SIGTERM stops its run first
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise SystemExit(128 + signum)

        previous = (signal.signal(signal.SIGTERM, stop)
                    if threading.current_thread() is threading.main_thread() else None)

        def beat():
            while not done.wait(heartbeat):
                print(f"  [{label}] {time.perf_counter() - start:6.0f} s  {_last_line(log)}",
                      flush=True)

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
        finally:
            done.set()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    wall = time.perf_counter() - start
    try:
        peak = float(rss_file.read_text())
    except (OSError, ValueError):  # the measuring process itself was killed
        peak = float("nan")
    return Finished(proc.returncode, round(wall, 3), round(peak, 1), log)
