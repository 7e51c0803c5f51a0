"""Per-epoch scalars for `tensorboard --logdir WORKDIR`: a thin wrapper over tensorboardX.

The training loops call `writer.scalars({tag: value}, step, prefix="pass1/")` once an epoch
(sedjax/train/loop.py, sedjax/train/stacked_runs.py); sedjax/run.py makes the writer (process 0
only) and closes it. tensorboardX writes the event files (no TensorFlow) from a background thread;
two writers in one directory make two files, which TensorBoard reads one after the other.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Mapping


def _import_tensorboardx():
    """tensorboardX, imported without PyTorch: its writer module imports torch whenever it is
    installed (to accept tensors; sedjax writes floats), which costs a sedjax run memory and
    start-up time (docs/speed.md). A None in sys.modules makes that `import torch` fail as if
    torch were absent; a torch imported before (by the user) is left as it is."""
    if "torch" in sys.modules:
        import tensorboardX
        return tensorboardX
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        import tensorboardX
    finally:
        del sys.modules["torch"]
    return tensorboardX


tensorboardX = _import_tensorboardx()

# tensorboardX names a file events.out.tfevents.<seconds>.<host>: a second writer in the same
# second would truncate the first one's file, so each writer's name also gets pid and a count.
_writers = itertools.count()


class SummaryWriter:
    """Scalar summaries in a new TensorBoard event file in `logdir`; a context manager.

    A background thread writes the events and puts them on disk every flush_secs; close()
    writes every pending event.
    """

    def __init__(self, logdir: str | os.PathLike, flush_secs: int = 10):
        self._writer = tensorboardX.SummaryWriter(
            os.fspath(logdir), flush_secs=flush_secs,
            filename_suffix=f".{os.getpid()}.{next(_writers)}")

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One scalar point (tag, e.g. 'train/loss'; value; step, e.g. the epoch)."""
        self._writer.add_scalar(str(tag), float(value), int(step))

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        """scalar() for every (tag, value) of a mapping; tags get `prefix` (e.g. 'pass1/')."""
        for tag, value in values.items():
            self.scalar(prefix + str(tag), value, step)

    def flush(self) -> None:
        """Flushes what the thread has written so far (events still queued wait for flush_secs)."""
        self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the file."""
        self._writer.close()

    def __enter__(self) -> "SummaryWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
