"""Where a run's time goes: wall seconds per stage, compilation apart, each epoch's share.

run.train_and_evaluate records into a Recorder (`recording()`); the stages time themselves
with `stage(name)` and the epoch loop reports each epoch with `epoch(...)`. Compilation is
measured by JAX itself (jax.monitoring: tracing, lowering to MLIR, XLA's compile or the
persistent cache's load of every jitted program), so `compile_s` is the start-up inside the
stages' wall time (most of it in the first epoch), and `cache_hits` / `cache_misses` say
how much of it the persistent compilation cache saved. results.json's `timings`:

  stages_s     {stage: wall seconds}, in order: data, features, statistics, training,
               predict, postprocess, scoring, reporting (they add up to total_s, near enough)
  total_s      wall seconds from the start of the run to its results
  compile_s    seconds compiling, {stage: seconds} in compile_by_stage_s, and the cache's
               hits / misses (programs loaded / compiled and written)
  epochs       {training stage: [{epoch, train_s, validate_s, compile_s}]}
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import jax
from absl import logging

# JAX's own duration events of one jitted program's compilation (jax._src.dispatch)
_COMPILE_EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
                   "/jax/core/compile/backend_compile_duration": "backend"}
_CACHE_EVENTS = {"/jax/compilation_cache/cache_hits": "cache_hits",
                 "/jax/compilation_cache/cache_misses": "cache_misses"}


@dataclasses.dataclass
class Recorder:
    """One run's timings (module docstring)."""

    start: float = dataclasses.field(default_factory=time.perf_counter)
    stages_s: dict = dataclasses.field(default_factory=dict)
    compile_parts_s: dict = dataclasses.field(
        default_factory=lambda: dict.fromkeys(_COMPILE_EVENTS.values(), 0.0))
    compile_by_stage_s: dict = dataclasses.field(default_factory=dict)
    cache: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(_CACHE_EVENTS.values(), 0))
    epochs: dict = dataclasses.field(default_factory=dict)

    @property
    def compile_s(self) -> float:
        return sum(self.compile_parts_s.values())

    def to_json(self) -> dict:
        r = lambda x: round(x, 2)  # noqa: E731
        return {"stages_s": {k: r(v) for k, v in self.stages_s.items()},
                "total_s": r(time.perf_counter() - self.start),
                "compile_s": r(self.compile_s),
                "compile_parts_s": {k: r(v) for k, v in self.compile_parts_s.items()},
                "compile_by_stage_s": {k: r(v) for k, v in self.compile_by_stage_s.items()},
                **self.cache,
                "epochs": {k: [{key: (r(v) if isinstance(v, float) else v)
                                for key, v in e.items()} for e in v]
                           for k, v in self.epochs.items()}}


# a process-wide stack, not a context variable: JAX compiles in whichever thread calls first
_recorders: list[Recorder] = []
_listening = False


def current() -> Recorder | None:
    """The run being recorded, None outside one."""
    return _recorders[-1] if _recorders else None


def _on_duration(event: str, duration: float, **_) -> None:
    part = _COMPILE_EVENTS.get(event)
    rec = current()
    if part is not None and rec is not None:
        rec.compile_parts_s[part] += duration


def _on_event(event: str, **_) -> None:
    key = _CACHE_EVENTS.get(event)
    rec = current()
    if key is not None and rec is not None:
        rec.cache[key] += 1


def _listen() -> None:
    global _listening
    if not _listening:  # once per process: JAX's listeners cannot be told apart later
        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        jax.monitoring.register_event_listener(_on_event)
        _listening = True


@contextlib.contextmanager
def recording():
    """Makes a new Recorder the current one for the block; yields it."""
    _listen()
    rec = Recorder()
    _recorders.append(rec)
    try:
        yield rec
    finally:
        _recorders.remove(rec)


def compile_seconds() -> float:
    """Compile seconds recorded so far in the current run (0 outside one)."""
    rec = current()
    return rec.compile_s if rec is not None else 0.0


@contextlib.contextmanager
def stage(name: str):
    """Adds the block's wall and compile seconds to stage `name` of the current run."""
    rec = current()
    start, compiled = time.perf_counter(), compile_seconds()
    logging.info("stage %s", name)  # where a run was when it stopped (launch/chaos.py)
    try:
        yield
    finally:
        if rec is not None:
            rec.stages_s[name] = rec.stages_s.get(name, 0.0) + time.perf_counter() - start
            spent = rec.compile_s - compiled
            if spent > 0:
                rec.compile_by_stage_s[name] = rec.compile_by_stage_s.get(name, 0.0) + spent


def epoch(stage_name: str, number: int, train_s: float, validate_s: float,
          compile_s: float) -> None:
    """Records one finished epoch of a training stage (the loop's name for it)."""
    rec = current()
    if rec is not None:
        rec.epochs.setdefault(stage_name, []).append(
            {"epoch": number, "train_s": train_s, "validate_s": validate_s,
             "compile_s": compile_s})


def line(timings: dict) -> str:
    """The printed summary of a run's timings (to_json's dict)."""
    stages = timings["stages_s"]
    parts = []
    for name, seconds in stages.items():
        text = f"{name} {seconds:.1f}"
        if name == "training":
            for loop, epochs in timings["epochs"].items():
                steady = sorted(e["train_s"] + e["validate_s"] for e in epochs[1:])
                if steady:
                    text += (f" ({loop}: {len(epochs)} epochs, {steady[len(steady) // 2]:.1f} s "
                             f"each after the first {epochs[0]['train_s'] + epochs[0]['validate_s']:.1f})")
        parts.append(text)
    hits, misses = timings.get("cache_hits", 0), timings.get("cache_misses", 0)
    cache = f"; {hits} of {hits + misses} programs from the cache" if hits + misses else ""
    return (f"time (s): {', '.join(parts)}; total {timings['total_s']:.1f}, of which compiling "
            f"{timings['compile_s']:.1f}{cache}")
