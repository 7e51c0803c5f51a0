"""Data parallelism over all devices: jit(shard_map(per-device step)) for any recipe's step.

Why jit(shard_map) rather than jax.pmap (DESIGN.md): the per-device code is the same pmap-style
code (collectives over the axis 'batch'), but inputs and outputs are global jax.Arrays with a
NamedSharding. Orbax saves and restores those directly, the same program runs unchanged across
hosts after jax.distributed.initialize(), and buffer donation works as for any jitted function.

A step receives its batch as a dict (`features` normalized here, `frames`, `labels`, and what
else the split carries). Batches come in one of two modes (sedjax.data.pipeline):
streamed: (state, stats, batch) with each array of `batch` sharded over devices;
resident: (state, stats, data, index) with the whole split replicated on every device and each
device gathering its rows of `index` (no host->device copy per step).
stats = (mean, std) of the log-mel bands, replicated.
"""

from __future__ import annotations

from typing import Callable

import jax
from jax.sharding import PartitionSpec as P

from sedjax.data import features as features_lib
from sedjax.sharding import AXIS


def _normalized(step: Callable) -> Callable:
    def run(state, stats, batch):
        batch = dict(batch, features=features_lib.normalize(batch["features"], batch["frames"],
                                                            *stats))
        return step(state, batch)
    return run


def data_parallel(step: Callable, mesh, resident: bool, out_specs, donate_state: bool = False):
    """Maps step(state, batch dict) over the mesh in either batch mode (module docstring)."""
    run = _normalized(step)
    if resident:
        def gather(state, stats, data, index):
            return run(state, stats, {k: v[index] for k, v in data.items()})
        fn, in_specs = gather, (P(), P(), P(), P(AXIS))
    else:
        fn, in_specs = run, (P(), P(), P(AXIS))
    return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs),
                   donate_argnums=(0,) if donate_state else ())


def train_step_fn(step: Callable, mesh, resident: bool):
    """step(state, batch) -> (state, metric sums), all replicated; the input state is donated."""
    return data_parallel(step, mesh, resident, (P(), P()), donate_state=True)


def eval_step_fn(step: Callable, mesh, resident: bool):
    """step(state, batch) -> per-clip outputs, sharded over devices like the batch."""
    return data_parallel(step, mesh, resident, P(AXIS))
