"""Runs a command and writes its own peak resident memory (ru_maxrss, MiB) to a file.

    python -m sedjax.benchmarks.desed_task.peak_rss OUT_FILE -- COMMAND...

Why a small process between the harness and each run: Linux counts in a child's ru_maxrss the
high-water mark of the memory it was spawned from (subprocess spawns by vfork, and exec keeps
that mark), so a run spawned by a large process (a pytest session with jax loaded) reported at
least that process's size. Spawned from this one, a run's figure is its own plus a few MiB.
SIGTERM is passed on to the run; the exit status is the run's.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m sedjax.benchmarks.desed_task.peak_rss OUT_FILE -- COMMAND...",
              file=sys.stderr)
        return 2
    out, command = pathlib.Path(argv[0]), argv[2:]
    proc = subprocess.Popen(command)
    signal.signal(signal.SIGTERM, lambda signum, frame: proc.terminate())
    _, status, usage = os.wait4(proc.pid, 0)  # retried after the handler (PEP 475)
    proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
    # Linux reports ru_maxrss in KiB (macOS in bytes)
    peak = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    out.write_text(f"{peak:.1f}\n")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
