"""The device mesh and how arrays are placed on it (shared by data/ and train/, owned by neither).

One 1-D mesh named 'batch' over all global devices: parameters are replicated, batches are
split along their first axis. Multi-host: each process contributes its own rows.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "batch"


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh named 'batch' over all (global) devices."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def num_shards(mesh: Mesh) -> int:
    """Devices the batch is split over."""
    return mesh.devices.size


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


def shard_runs(tree, mesh: Mesh):
    """(K, B, ...) arrays of K runs (the same on every process) -> sharded over all devices on
    axis 1, the batch axis; each process passes only its own slice of rows (multi-host)."""
    spec = NamedSharding(mesh, P(None, AXIS))
    count, index = jax.process_count(), jax.process_index()

    def put(x):
        x = np.asarray(x)
        local = x.shape[1] // count
        return jax.make_array_from_process_local_data(
            spec, x[:, index * local: (index + 1) * local], x.shape)
    return jax.tree_util.tree_map(put, tree)


def to_host(x) -> np.ndarray:
    """A global jax.Array as one numpy array on every process.

    Sharded outputs (predictions) of a multi-process run have rows on other processes, where
    jax.device_get fails: those are all-gathered first (a collective: every process calls it).
    """
    if getattr(x, "is_fully_addressable", True) or x.is_fully_replicated:
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _ordered_mean(x, axis_name: str):
    count, index = jax.lax.psum(1, axis_name), jax.lax.axis_index(axis_name)
    slots = jnp.zeros((count, *x.shape), x.dtype).at[index].set(x)
    return jax.lax.psum(slots, axis_name).sum(0) / count


def device_mean(tree, ordered: bool = True, axis_name: str = AXIS):
    """Inside a per-device step: the mean over the devices of `axis_name`, added up in one
    fixed order, the same on every device (for values not differentiated: gradients, BatchNorm
    statistics; `ordered_mean` inside a loss); ordered=False: lax.pmean.

    Why not lax.pmean: an all-reduce adds in an order that depends on how the devices are split
    among processes, so a 2 processes x 2 devices run parts from 1 process x 4 devices by
    rounding (and Adam turns rounding on near-zero gradients into full-size steps). Here each
    device's value goes to its own slot of a zero array and the psum gathers them exactly (one
    value plus zeros, in any order), then the slots are added on each device by the same local
    reduction. Costs `devices` times the all-reduce traffic of pmean
    (runtime.ordered_reductions=False for large models on many devices).
    """
    if not ordered:
        return jax.lax.pmean(tree, axis_name)
    return jax.tree_util.tree_map(lambda x: _ordered_mean(x, axis_name), tree)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def ordered_mean(x, axis_name: str = AXIS):
    """device_mean of one array inside a differentiated function (BatchNorm's batch moments):
    a per-device (varying) value whose gradient is averaged over devices in the same fixed
    order (autodiff of device_mean would sum the cotangents with an all-reduce)."""
    return jax.lax.pcast(_ordered_mean(x, axis_name), axis_name, to="varying")


def _ordered_mean_fwd(x, axis_name):
    return ordered_mean(x, axis_name), None


def _ordered_mean_bwd(axis_name, _, cotangent):
    # d/dx_i of sum_j f_j(mean(x)) = mean_j f_j'(...): the cotangents averaged the same way
    return (ordered_mean(cotangent, axis_name),)


ordered_mean.defvjp(_ordered_mean_fwd, _ordered_mean_bwd)


def is_primary() -> bool:
    """Whether this process writes the run's shared files (process 0; the only one alone)."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Waits until every process got here (multi-process), e.g. after process 0 wrote a file
    that all of them read next; nothing to wait for in a single process."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
