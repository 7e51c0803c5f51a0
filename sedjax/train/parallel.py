"""Data parallelism over all devices: a 1-D mesh, jit(shard_map(per-device step)).

Why jit(shard_map) rather than jax.pmap (DESIGN.md): the per-device code is the same pmap-style
code (collectives over the axis 'batch'), but inputs and outputs are global jax.Arrays with a
NamedSharding. Orbax saves and restores those directly, the same program runs unchanged across
hosts after jax.distributed.initialize(), and buffer donation works as for any jitted function.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sedjax.train import steps

AXIS = steps.AXIS


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh named 'batch' over all (global) devices."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def replicate(tree, mesh: Mesh):
    """Copies a pytree to every device of the mesh (host numpy or jax arrays)."""
    sharding = NamedSharding(mesh, P())
    return jax.tree_util.tree_map(lambda x: jax.device_put(x, sharding), tree)


def shard_batch(tree, mesh: Mesh):
    """Splits this process's rows (leading axis) over its devices into global arrays."""
    sharding = NamedSharding(mesh, P(AXIS))
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def num_shards(mesh: Mesh) -> int:
    """Devices the batch is split over."""
    return mesh.devices.size


def _map(fn, mesh, in_specs, out_specs, donate=()):
    return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs),
                   donate_argnums=donate)


def train_step_fn(mesh: Mesh, bce_eps: float, resident: bool):
    """The jitted data-parallel train step.

    resident=False: (state, features (B,T,F), labels (B,C)) with batches sharded over devices.
    resident=True:  (state, all_features, all_labels, index (B,)) where the split's arrays are
    replicated on every device and each device gathers its own rows: no host->device copy
    per step.
    """
    step = functools.partial(steps.train_step, bce_eps=bce_eps)
    if resident:
        def gather_step(state, features, labels, index):
            return step(state, features[index], labels[index])
        return _map(gather_step, mesh, (P(), P(), P(), P(AXIS)), (P(), P()), donate=(0,))
    return _map(step, mesh, (P(), P(AXIS), P(AXIS)), (P(), P()), donate=(0,))


def eval_step_fn(mesh: Mesh, resident: bool):
    """The jitted data-parallel prediction step (same two input modes as train_step_fn)."""
    if resident:
        def gather_eval(state, features, index):
            return steps.eval_step(state, features[index])
        return _map(gather_eval, mesh, (P(), P(), P(AXIS)), P(AXIS))
    return _map(steps.eval_step, mesh, (P(), P(AXIS)), P(AXIS))
