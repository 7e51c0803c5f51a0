"""Stopping training cleanly on SIGTERM / SIGINT (spot VMs, SLURM, Ctrl-C).

Inside `deferred_signals()` (the training loop's epochs) a first SIGTERM or SIGINT only sets a
flag; the loop asks `should_stop()` after every step, saves a checkpoint at that step and ends
the run with a message to rerun the same command (sedjax.train.loop). Outside it, the signals
keep their usual effect (every output is written atomically, so a killed run loses nothing
but the work in progress). A second SIGINT while the flag is set interrupts at once.

One process: the flag is this process's. Several processes (jax.distributed): a SIGTERM is
caught by JAX's preemption service, which agrees with every process on the step to stop at
(multihost_utils.reached_preemption_sync_point); all processes then stop after the same step,
so their checkpoint is one state. Each process calls `should_stop()` once per step, from the
same first step, as that helper requires.

Outside training that service would swallow a SIGTERM: its handler stays installed for the
whole job, and nothing asks it after the last step. So the pipeline also asks at its stage
boundaries that every process passes (`stop_requested_at_boundary`, the same counter), and
once the last boundary is passed (the rest of each process's work is its own: process 0
scores and reports, the others exit) `default_sigterm()` gives SIGTERM back its default
effect. A SIGTERM at any moment then ends a multi-process job with status 143, as it ends a
single process.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

import jax

_received: list[str] = []  # names of the signals received inside deferred_signals()
_steps = [0]  # should_stop() calls so far: the step id every process counts alike


def _multiprocess() -> bool:
    return jax.process_count() > 1


def _handler(signum, frame):
    name = signal.Signals(signum).name
    if name == "SIGINT" and _received:  # a second Ctrl-C: stop now
        raise KeyboardInterrupt
    _received.append(name)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT ask the loop to stop after its current step.

    In a multi-process job SIGTERM is left to JAX's preemption service (it installs its own
    handler when jax.distributed starts), and SIGINT keeps its default effect.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    names = ("SIGINT", "SIGTERM") if not _multiprocess() else ()
    previous = {n: signal.signal(getattr(signal, n), _handler) for n in names}
    try:
        yield
    finally:
        for n, handler in previous.items():
            signal.signal(getattr(signal, n), handler)
        _received.clear()


def should_stop() -> bool:
    """True once a stop was asked for; call after every training step (all processes alike)."""
    _steps[0] += 1
    if _multiprocess():
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
        return bool(multihost_utils.reached_preemption_sync_point(_steps[0]))
    return bool(_received)


def stop_requested_at_boundary() -> bool:
    """should_stop() at a stage boundary that every process passes, in the same order: True
    when a stop was asked for since the last step or boundary (multi-process: a SIGTERM to any
    process, caught by JAX's preemption service)."""
    return should_stop()


def default_sigterm() -> None:
    """SIGTERM ends this process at once again (default action), replacing JAX's preemption
    handler in a multi-process job; call after the last boundary, from the main thread."""
    if _multiprocess() and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def reason() -> str:
    """The signal that stopped the run ('SIGTERM' when the preemption service did)."""
    return _received[0] if _received else "SIGTERM"


def request_stop(name: str = "SIGTERM") -> None:
    """Asks the loop to stop as a signal would (tests; schedulers that call Python)."""
    _received.append(name)
