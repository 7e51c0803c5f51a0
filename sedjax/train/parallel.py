"""Data parallelism over all devices: a 1-D mesh, jit(shard_map(per-device step)).

Why jit(shard_map) rather than jax.pmap (DESIGN.md): the per-device code is the same pmap-style
code (collectives over the axis 'batch'), but inputs and outputs are global jax.Arrays with a
NamedSharding. Orbax saves and restores those directly, the same program runs unchanged across
hosts after jax.distributed.initialize(), and buffer donation works as for any jitted function.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sedjax.data import features as features_lib
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
    """Global batch (the same rows on every process) -> arrays sharded over all devices.

    Each process passes only its own slice of rows to its local devices (multi-host).
    """
    sharding = NamedSharding(mesh, P(AXIS))
    count, index = jax.process_count(), jax.process_index()

    def put(x):
        x = np.asarray(x)
        local = len(x) // count
        return jax.make_array_from_process_local_data(
            sharding, x[index * local: (index + 1) * local], x.shape)
    return jax.tree_util.tree_map(put, tree)


def num_shards(mesh: Mesh) -> int:
    """Devices the batch is split over."""
    return mesh.devices.size


def _map(fn, mesh, in_specs, out_specs, donate=()):
    return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs),
                   donate_argnums=donate)


def train_step_fn(mesh: Mesh, bce_eps: float, resident: bool):
    """The jitted data-parallel train step on raw (un-normalized) features.

    resident=False: (state, stats, batch) with batch = (features (B,T,F), frames (B,),
    labels (B,C)) sharded over devices. resident=True: (state, stats, data, index) where data
    holds the whole split replicated on every device and each device gathers its rows of
    index (B,): no host->device copy per step. stats = (mean, std), replicated.
    """
    def step(state, stats, batch):
        features, frames, labels = batch
        x = features_lib.normalize(features, frames, *stats)
        return steps.train_step(state, x, labels, bce_eps)

    if resident:
        def gather_step(state, stats, data, index):
            return step(state, stats, tuple(a[index] for a in data))
        return _map(gather_step, mesh, (P(), P(), P(), P(AXIS)), (P(), P()), donate=(0,))
    return _map(step, mesh, (P(), P(), P(AXIS)), (P(), P()), donate=(0,))


def eval_step_fn(mesh: Mesh, resident: bool):
    """The jitted data-parallel prediction step (same input modes as train_step_fn)."""
    def predict(state, stats, batch):
        features, frames, _ = batch
        return steps.eval_step(state, features_lib.normalize(features, frames, *stats))

    if resident:
        def gather_predict(state, stats, data, index):
            return predict(state, stats, tuple(a[index] for a in data))
        return _map(gather_predict, mesh, (P(), P(), P(), P(AXIS)), P(AXIS))
    return _map(predict, mesh, (P(), P(), P(AXIS)), P(AXIS))
