"""The runs-per-program bench: clips/s of the pass-2 step with K runs in one program
(config.num_runs, the run axis vmapped) against K separate one-run programs."""

from __future__ import annotations

import functools
import time
from typing import Callable, Sequence

import jax
import numpy as np

from sedjax.benchmarks import timing, train_step
from sedjax.recipes import common, two_pass
from sedjax.system import cli, sharding
from sedjax.train import parallel, stacked_runs


def runs_train_throughput(config, batch_size: int, num_runs: int, steps: int, warmup: int,
                          repeats: int) -> float:
    """Clips/s of the pass-2 step with num_runs runs in one program (run-axis state, vmapped;
    seeds seed .. seed + num_runs - 1), each run its own pre-sharded batch of batch_size."""
    mesh = sharding.make_mesh()
    if batch_size % sharding.num_shards(mesh):
        raise cli.UserError(f"runs batch size {batch_size} is not divisible by "
                            f"{sharding.num_shards(mesh)} devices")
    t, f, c = config.features.num_frames, config.features.n_mels, len(config.data.classes)
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.num_runs = num_runs
    configs = stacked_runs.run_configs(config) if num_runs > 1 else [config]
    state = sharding.replicate(stacked_runs.stack(
        [common.init_state(rc, "pass2") for rc in configs]), mesh)
    rng = np.random.default_rng(0)
    shape = (num_runs, batch_size)
    batch = sharding.shard_runs({
        "features": rng.normal(size=(*shape, t, f)).astype(np.float32),
        "frames": np.full(shape, t, np.int32),
        "labels": (rng.random((*shape, c)) < 0.3).astype(np.float32)}, mesh)
    stats = sharding.replicate((np.zeros(f, np.float32), np.ones(f, np.float32)), mesh)
    step = parallel.train_step_fn(functools.partial(
        two_pass.train_step, bce_eps=config.pass2.bce_eps, output="frame"), mesh,
        resident=False, runs=True)

    def run(n):
        nonlocal state  # donated
        for _ in range(n):
            state, _ = step(state, stats, batch)
        jax.block_until_ready(state)

    return timing.rate(run, num_runs * batch_size, steps, warmup, repeats)


def runs_bench(config, batch_size: int, run_counts: Sequence[int], steps: int, warmup: int,
               repeats: int, on_row: Callable | None = None, deadline: float | None = None,
               separate: float | None = None) -> dict:
    """Train clips/s of K runs per program against K separate one-run programs (which, run one
    after another, train at the one-run program's clips/s), and their ratio, per K.

    on_row(k, clips/s, ratio) is called as each K is measured (on_row(None, separate, None)
    first); K values not started by `deadline` (time.monotonic()) are listed in 'skipped'.
    separate: the one-run program's clips/s when already measured (same config and batch)."""
    if separate is None:
        separate = train_step.sedjax_train_throughput(config, batch_size, steps, warmup,
                                                      repeats)[0]
    out = {"batch_size_per_run": batch_size, "separate_clips_per_s": separate,
           "clips_per_s": {}, "speedup_vs_separate": {}, "skipped": []}
    if on_row:
        on_row(None, separate, None)
    for k in run_counts:
        if deadline is not None and time.monotonic() > deadline:
            out["skipped"].append(str(k))
            continue
        rate = runs_train_throughput(config, batch_size, k, steps, warmup, repeats)
        out["clips_per_s"][str(k)] = rate
        out["speedup_vs_separate"][str(k)] = rate / separate
        if on_row:
            on_row(k, rate, rate / separate)
    return out
