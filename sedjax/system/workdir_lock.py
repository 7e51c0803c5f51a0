"""One run per workdir: a lock file that names the run holding the workdir.

`with hold(workdir, primary=...):` around a run. While it runs, <workdir>/.sedjax.lock holds
JSON {pid, host, started, command, boot_id, start_ticks}; a second run on the same workdir
stops with one `error:` line (WorkdirBusy, a cli.UserError) that names the holder and what to
do. The file is removed when the block ends, by an exception too.

A lock left by a run that died without cleaning up (killed, SIGTERM, power cut) is stale and
is taken over, with a log line, when it was written on this host (same hostname) and its
process is gone: the machine rebooted since (boot_id differs), or no process has its PID
(os.kill(pid, 0)), or the process with that PID started at another time than the holder (Linux
/proc/<pid>/stat start time: the PID was reused). A lock written on another host cannot be
checked from here: the run refuses, and the message says which file to remove if that job is
gone. So does a lock file that cannot be read.

Race safety:
- taking a free workdir: the record is written to a temporary file, then hard-linked to the
  lock's name; link() fails when the name exists, so of two runs only one gets it, and the
  lock never exists half-written;
- taking over a stale lock: the taker flock()s the stale file, checks that the lock's name
  still refers to that very file (same inode) and that it still reads as stale, then unlinks it
  and links its own record. A second taker waits on the flock, then sees the name refer to
  another file and starts over: it finds the winner's live lock and refuses.
- releasing: the lock is removed only when it still holds this run's record.

In a multi-process JAX job only process 0 holds the lock (primary=True); the others do
nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import pathlib
import shlex
import socket
import sys
import uuid
from typing import Iterator

from absl import logging

from sedjax.system import files
from sedjax.system.cli import UserError

LOCK_NAME = ".sedjax.lock"
_BOOT_ID = pathlib.Path("/proc/sys/kernel/random/boot_id")


class WorkdirBusy(UserError):
    """Another run holds the workdir (or its lock cannot be checked): the message says what to
    do."""


@contextlib.contextmanager
def hold(workdir: str | os.PathLike, primary: bool = True) -> Iterator[pathlib.Path | None]:
    """Holds <workdir>/.sedjax.lock for the block (creating workdir); yields the lock's path,
    or None when not `primary` (then it does nothing).

    Raises WorkdirBusy when a live run, or one on another host, holds the workdir.
    """
    if not primary:
        yield None
        return
    lock = pathlib.Path(workdir) / LOCK_NAME
    lock.parent.mkdir(parents=True, exist_ok=True)
    record = _own_record()
    _acquire(lock, record)
    try:
        yield lock
    finally:
        _release(lock, record)


# ---------------------------------------------------------------------------- records
def _own_record() -> dict:
    """This process's lock record; `token` tells this hold apart from any other."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": shlex.join([sys.executable, *sys.argv]), "boot_id": _boot_id(),
            "start_ticks": _start_ticks(pid), "token": uuid.uuid4().hex}


def _boot_id() -> str | None:
    """This boot's id (Linux), or None where it cannot be read."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, Linux /proc), or None if unknown."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # field 22; the command name (field 2) is in parentheses and may hold spaces
    return int(stat.rsplit(")", 1)[1].split()[19])


def _read(lock: pathlib.Path) -> dict | None:
    """The record in `lock`; None when it is gone; ValueError when it is not a record."""
    try:
        record = json.loads(lock.read_bytes())
    except FileNotFoundError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        raise ValueError("not a sedjax lock record")
    return record


def _read_quietly(lock: pathlib.Path) -> dict | None:
    """The record in `lock`, or None when it is gone or not a record."""
    try:
        return _read(lock)
    except (ValueError, UnicodeDecodeError):
        return None


# ---------------------------------------------------------------------------- liveness
def _is_stale(record: dict) -> bool:
    """True when the run of a record written on this host is gone (see the module doc)."""
    if record.get("boot_id") and _boot_id() and record["boot_id"] != _boot_id():
        return True  # rebooted since: no process of that boot is alive
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    recorded, current = record.get("start_ticks"), _start_ticks(record["pid"])
    return recorded is not None and current is not None and recorded != current


# ---------------------------------------------------------------------------- taking, releasing
def _acquire(lock: pathlib.Path, record: dict) -> None:
    """Links `record` to `lock`, taking over a stale lock; WorkdirBusy when held."""
    while True:  # each turn either returns, raises, or saw the lock change under it
        if _link_record(lock, record):
            return
        try:
            held = _read(lock)
        except (ValueError, UnicodeDecodeError):
            raise WorkdirBusy(_unreadable_message(lock)) from None
        if held is None:
            continue  # released meanwhile: try again
        if held.get("host") != record["host"]:
            raise WorkdirBusy(_other_host_message(lock, held, record["host"]))
        if not _is_stale(held):
            raise WorkdirBusy(_busy_message(lock, held))
        if _take_over(lock, held, record):
            logging.warning("workdir lock %s: took over the stale lock of PID %s (started %s, "
                            "no longer running)", lock, held["pid"], held.get("started"))
            return


def _link_record(lock: pathlib.Path, record: dict) -> bool:
    """Creates `lock` holding `record`, complete from its first instant; False if it exists."""
    tmp = lock.with_name(f"{lock.name}.{record['token']}.partial")
    try:
        with files.naming_disk_full(lock):
            tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.link(tmp, lock)  # atomic, and fails when the name exists (O_EXCL for a whole file)
        return True
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _take_over(lock: pathlib.Path, stale: dict, record: dict) -> bool:
    """Replaces the stale lock holding `stale` by `record`; False when the lock changed meanwhile
    (another taker won, or it was released): the caller looks again."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one taker at a time per stale file
        try:
            same_file = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False
        if not same_file or _read_quietly(lock) != stale:
            return False
        os.remove(lock)
        return _link_record(lock, record)  # a fresh run may have linked first: look again
    finally:
        os.close(fd)  # drops the flock


def _release(lock: pathlib.Path, record: dict) -> None:
    """Removes `lock` if it still holds `record` (never another run's lock)."""
    try:
        held = _read(lock)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        logging.warning("workdir lock %s: not released (%s)", lock, e)
        return
    if held is not None and held.get("token") == record["token"]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)
    elif held is not None:
        logging.warning("workdir lock %s: now held by PID %s on %s; left in place", lock,
                        held.get("pid"), held.get("host"))


# ---------------------------------------------------------------------------- messages
def _holder(held: dict) -> str:
    return f"PID {held['pid']} on host {held.get('host')} since {held.get('started')}"


def _busy_message(lock: pathlib.Path, held: dict) -> str:
    return (f"workdir {lock.parent} is in use by another sedjax run ({_holder(held)}); wait "
            f"for it to finish or stop it (kill {held['pid']}), or give another --workdir")


def _other_host_message(lock: pathlib.Path, held: dict, host: str) -> str:
    return (f"workdir {lock.parent} is in use by a sedjax run on another host ({_holder(held)}"
            f"), which cannot be checked from {host}; if that run is gone, remove {lock} and "
            f"rerun")


def _unreadable_message(lock: pathlib.Path) -> str:
    return (f"workdir {lock.parent} has a lock file that is not a sedjax lock record ({lock}); "
            f"if no run uses this workdir, remove it and rerun")

