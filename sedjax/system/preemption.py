"""Stopping cleanly on SIGTERM / SIGINT (spot VMs, SLURM, Ctrl-C), in one process or many.

One process: inside `deferred_signals()` (the training loop's epochs) a first SIGTERM or
SIGINT only sets a flag; the loop asks `should_stop()` after every step, saves a checkpoint at
that step and ends the run with a message to rerun the same command (sedjax.train.loop).
Outside it the signals keep their usual effect (every output is written atomically, so a
killed run loses nothing but the work in progress); a signal that lands after the loop's last
question is delivered again when the block ends, so it still ends the process. A second SIGINT
while the flag is set interrupts at once.

Several processes (jax.distributed): every process must stop at the same point, so a signal
to one of them cannot simply end it. `install()` (called once the job is joined) puts a
handler on SIGTERM for the whole job that records the signal and passes it on to JAX's
preemption service. During training the service agrees with every process on the step to stop
at (multihost_utils.reached_preemption_sync_point; each process calls `should_stop()` once per
step, from the same first step). That agreement runs in the background and learns of a signal
only about a second later (JAX polls for it), so a signal near the end of training could be
decided after the last step and be lost. The pipeline therefore also asks at its stage
boundaries, which every process passes in the same order (`stop_requested_at_boundary`): there
the processes compare what each received, at once and for certain. After the last boundary
each process's work is its own, and `default_sigterm()` gives SIGTERM its default effect back.
A SIGTERM at any moment thus ends a multi-process job with status 143, as it ends one process.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
from typing import Callable, Iterator

import jax
import numpy as np

_received: list[str] = []  # names of the signals received and not yet acted upon
_steps = [0]  # should_stop() calls so far: the step id every process counts alike
_jax_handler: list[Callable[[int], None]] = []  # JAX's own SIGTERM handler, multi-process


def _multiprocess() -> bool:
    return jax.process_count() > 1


def _handler(signum, frame):
    name = signal.Signals(signum).name
    if name == "SIGINT" and _received:  # a second Ctrl-C: stop now
        raise KeyboardInterrupt
    _received.append(name)


def _multiprocess_handler(signum, frame):
    _received.append(signal.Signals(signum).name)
    for forward in _jax_handler:  # JAX's service then agrees on the step to stop at
        forward(signum)


class _Sigaction(ctypes.Structure):
    """glibc's struct sigaction (Linux): handler, 1024-bit mask, flags, restorer."""
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * (128 // 8)),
                ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]


def _installed_c_handler(signum: int) -> Callable[[int], None] | None:
    """The C function that handles `signum` now (JAX's, which Python's signal module cannot
    see or restore), as a callable; None where it cannot be read (not Linux) or is no plain
    handler."""
    if not sys.platform.startswith("linux"):
        return None
    action = _Sigaction()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.sigaction(signum, None, ctypes.byref(action)) != 0:
        return None
    sa_siginfo = 4  # the handler takes (int, siginfo_t *, void *)
    if action.handler in (None, 0, 1) or action.flags & sa_siginfo:  # SIG_DFL, SIG_IGN
        return None
    return ctypes.CFUNCTYPE(None, ctypes.c_int)(action.handler)


def install() -> None:
    """Multi-process jobs, once jax.distributed started (it installs JAX's SIGTERM handler):
    SIGTERM is recorded here for the stage boundaries and passed on to JAX's service for the
    training steps. Main thread only; nothing to do in a single process."""
    if not _multiprocess() or threading.current_thread() is not threading.main_thread():
        return
    forward = _installed_c_handler(signal.SIGTERM)
    if forward is None:
        logging.warning("SIGTERM: JAX's preemption handler could not be read on this system; "
                        "a SIGTERM outside training may not stop this multi-process job")
        return
    _jax_handler[:] = [forward]
    signal.signal(signal.SIGTERM, _multiprocess_handler)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT ask the loop to stop after its current step.

    In a multi-process job SIGTERM is handled for the whole job (install()), and SIGINT keeps
    its default effect.
    """
    if _multiprocess() or threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    names = ("SIGINT", "SIGTERM")
    previous = {n: signal.signal(getattr(signal, n), _handler) for n in names}
    finished = False
    try:
        yield
        finished = True
    finally:
        for n, handler in previous.items():
            signal.signal(getattr(signal, n), handler)
        late = list(_received)
        _received.clear()
        if finished and late:  # arrived after the loop's last question: its usual effect now
            os.kill(os.getpid(), getattr(signal, late[0]))


def should_stop() -> bool:
    """True once a stop was asked for; call after every training step (all processes alike)."""
    _steps[0] += 1
    if _multiprocess():
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
        return bool(multihost_utils.reached_preemption_sync_point(_steps[0]))
    return bool(_received)


def stop_requested_at_boundary() -> bool:
    """True when a stop was asked for and not yet acted upon: a SIGTERM to any process of a
    multi-process job (the processes compare, so all of them answer alike). Call at a stage
    boundary that every process passes, in the same order."""
    if not _multiprocess():
        return bool(_received)
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    received = multihost_utils.process_allgather(np.asarray([len(_received)], np.int32))
    return bool(np.asarray(received).sum())


def default_sigterm() -> None:
    """From here SIGTERM ends this process at once (its default action); call after the last
    stage boundary, before its stop_requested_at_boundary(), from the main thread. A signal
    recorded before is still answered there (signal.signal runs pending handlers first)."""
    if _jax_handler and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _jax_handler.clear()


def reason() -> str:
    """The signal that stopped the run ('SIGTERM' when the preemption service did)."""
    return _received[0] if _received else "SIGTERM"


def request_stop(name: str = "SIGTERM") -> None:
    """Asks the loop to stop as a signal would (tests; schedulers that call Python)."""
    _received.append(name)
