"""Atomic file writes: an output appears under its final name only once it is complete.

Every stage of a run is skipped when its output exists, so a half-written file must never carry
the final name. Each writer here writes to a temporary name in the same directory (the rename is
then atomic on POSIX) and renames; on any error the temporary file is removed.

A full disk (or quota) while writing raises DiskFullError, an OSError that names the output's
final path: the command then says so in one line (sedjax.system.cli), and a rerun after space
is freed writes the file, since nothing was kept under its name.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import pathlib
import tempfile
from collections.abc import Mapping
from typing import Any, Iterator

import numpy as np


DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})  # no space left; disk quota exceeded


class DiskFullError(OSError):
    """No space (or quota) left while writing an output; `filename` is the output's final path
    (not the temporary one, which was removed)."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yields a temporary path next to `path`; renames it to `path` when the block succeeds.

    A full disk anywhere in the block raises DiskFullError naming `path`.
    """
    path = pathlib.Path(path)
    with naming_disk_full(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".partial")
        os.close(fd)
        try:
            yield pathlib.Path(tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            raise


@contextlib.contextmanager
def naming_disk_full(path: str | os.PathLike) -> Iterator[None]:
    """Re-raises a full disk's OSError in the block as DiskFullError naming `path`: for a
    writer that, like atomic_path, leaves nothing under `path` when it fails."""
    try:
        yield
    except DiskFullError:
        raise  # a nested write's error already names its own file
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        # a failed write() names no file, and a temporary name would mean nothing to the user
        raise DiskFullError(e.errno, e.strerror, os.fspath(path)) from e


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 `text` to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Saves `array` as a .npy file (readable with mmap_mode) atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array))


def to_jsonable(obj: Any) -> Any:
    """Returns obj with numpy scalars/arrays as Python values and NaN/inf as None (JSON null)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        # Strict JSON has no NaN; an undefined score (e.g. recall of a class with no reference
        # event) is written as null rather than silently as 0.
        return float(obj) if math.isfinite(obj) else None
    return obj
