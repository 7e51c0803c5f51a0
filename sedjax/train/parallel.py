"""Data parallelism over all devices: jit(shard_map(per-device step)) for any recipe's step.

Why jit(shard_map) rather than jax.pmap (docs/design.md, "Decisions"): the per-device code is
the same pmap-style code (collectives over the axis 'batch'), but inputs and outputs are global
jax.Arrays with a NamedSharding. Orbax saves and restores those directly, the same program runs
unchanged across hosts after jax.distributed.initialize(), and buffer donation works as for any
jitted function.

A step receives its batch as a dict (`features` normalized here, `frames`, `labels`, and what
else the split carries). Batches come in one of two modes (sedjax.data.pipeline):
streamed: (state, stats, batch) with each array of `batch` sharded over devices;
resident: (state, stats, data, index) with the whole split replicated on every device and each
device gathering its rows of `index` (no host->device copy per step).
stats = (mean, std) of the log-mel bands, replicated.

Runs (`runs=True`, as every recipe's loop calls it; config.num_runs = K >= 1): the state carries
a leading run axis and the step is vmapped over it inside shard_map (one run: applied to its
slice, no vmap), so the collectives over 'batch' still average
over devices, run by run. Streamed: each array of `batch` is (K, B, ...) sharded over devices on
axis 1. Resident: (state, stats, data, run_data, index) with `index` (K, B) sharded on axis 1,
each run gathering its rows of the shared `data` and of its own slice of `run_data` (arrays that
differ per run, (K, N, ...), e.g. pass-2 pseudo-labels), which override `data`'s of that name.
"""

from __future__ import annotations

from typing import Callable

import jax
from jax.sharding import PartitionSpec as P

from sedjax.data import features as features_lib
from sedjax.system.sharding import AXIS


def _normalized(step: Callable) -> Callable:
    def run(state, stats, batch):
        batch = dict(batch, features=features_lib.normalize(batch["features"], batch["frames"],
                                                            *stats))
        return step(state, batch)
    return run


def _gather(data: dict, index) -> dict:
    return {k: v[index] for k, v in data.items()}


def _map_runs(fn: Callable, *args):
    """fn mapped over the leading run axis of every leaf of args.

    One run (K = 1): fn itself on the run's slice, not a vmap of size 1, so a single run
    compiles to the very program it had before runs existed (its numbers bit for bit).
    """
    if len(jax.tree_util.tree_leaves(args[0])[0]) == 1:
        out = fn(*jax.tree_util.tree_map(lambda x: x[0], args))
        return jax.tree_util.tree_map(lambda x: x[None], out)
    return jax.vmap(fn)(*args)


def _over_runs(run: Callable, resident: bool) -> tuple[Callable, tuple]:
    """The per-device function mapped over the run axis, and its input specs."""
    if resident:
        def gather_runs(state, stats, data, run_data, index):
            def one(s, rd, i):
                return run(s, stats, {**_gather(data, i), **_gather(rd, i)})
            return _map_runs(one, state, run_data, index)
        return gather_runs, (P(), P(), P(), P(), P(None, AXIS))

    def stream_runs(state, stats, batch):
        return _map_runs(lambda s, b: run(s, stats, b), state, batch)
    return stream_runs, (P(), P(), P(None, AXIS))


def data_parallel(step: Callable, mesh, resident: bool, out_specs, donate_state: bool = False,
                  runs: bool = False):
    """Maps step(state, batch dict) over the mesh in either batch mode (module docstring)."""
    run = _normalized(step)
    if runs:
        fn, in_specs = _over_runs(run, resident)
    elif resident:
        def gather(state, stats, data, index):
            return run(state, stats, _gather(data, index))
        fn, in_specs = gather, (P(), P(), P(), P(AXIS))
    else:
        fn, in_specs = run, (P(), P(), P(AXIS))
    return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs),
                   donate_argnums=(0,) if donate_state else ())


def train_step_fn(step: Callable, mesh, resident: bool, runs: bool = False):
    """step(state, batch) -> (state, metric sums), all replicated; the input state is donated.

    runs: the state and metric sums carry a leading run axis (module docstring)."""
    return data_parallel(step, mesh, resident, (P(), P()), donate_state=True, runs=runs)


def eval_step_fn(step: Callable, mesh, resident: bool, runs: bool = False):
    """step(state, batch) -> per-clip outputs, sharded over devices like the batch.

    runs: outputs (K, B, ...) sharded on axis 1."""
    return data_parallel(step, mesh, resident, P(None, AXIS) if runs else P(AXIS), runs=runs)
