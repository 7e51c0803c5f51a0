"""A few data-parallel train steps of the seed's model on fixed random batches, as one process
of a jax.distributed job when SEDJAX_COORDINATOR is set (else alone). Process 0 writes the
parameters after the steps, with plain SGD and with the recipe's Adam, and the per-step
losses to the .npz named by argv[1], and the mean over devices of fixed per-device values of
very different magnitudes, by lax.pmean and by sharding.device_mean. Run by
tests/test_multiprocess.py."""

import functools
import os
import sys

from sedjax.system import distributed

if os.environ.get("SEDJAX_COORDINATOR"):
    distributed.initialize()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from configs import tiny  # noqa: E402
from sedjax.recipes import common, two_pass  # noqa: E402
from sedjax.system import sharding  # noqa: E402
from sedjax.train import parallel  # noqa: E402

STEPS, BATCH = 3, 8


def train(state, config, mesh):
    """STEPS steps on the same global batches in every layout; (params, losses) on the host."""
    frames, bands = config.features.num_frames, config.features.n_mels
    step = functools.partial(two_pass.train_step, bce_eps=config.pass1.bce_eps, output="clip",
                             ordered=common.ordered_reductions(config))
    fn = parallel.train_step_fn(step, mesh, resident=False)
    stats = sharding.replicate((np.zeros(bands, np.float32), np.ones(bands, np.float32)), mesh)
    rng = np.random.default_rng(0)  # the same global batches on every process
    losses = []
    for _ in range(STEPS):
        batch = {"features": rng.normal(size=(BATCH, frames, bands)).astype(np.float32),
                 "frames": np.full(BATCH, frames, np.int32),
                 "labels": rng.integers(0, 2, (BATCH, len(config.data.classes))
                                        ).astype(np.float32)}
        state, sums = fn(state, stats, sharding.shard_batch(batch, mesh))
        losses.append(float(sums["loss_sum"]) / float(sums["count"]))
    params = jax.device_get(state.params)  # replicated: this process's copy is the whole
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}, np.asarray(losses)


def reductions(mesh) -> dict:
    """pmean and device_mean of per-device rows whose sum rounds differently in each order."""
    rng = np.random.default_rng(0)
    devices = sharding.num_shards(mesh)
    rows = (rng.normal(size=(devices, 1000)) * 10.0 ** rng.integers(-4, 5, (devices, 1000))
            ).astype(np.float32)

    def both(x):
        return jax.lax.pmean(x[0], sharding.AXIS)[None], sharding.device_mean(x[0])[None]
    spec = P(sharding.AXIS)
    fn = jax.jit(jax.shard_map(both, mesh=mesh, in_specs=spec, out_specs=(spec, spec)))
    pmean, ordered = (sharding.to_host(v) for v in fn(sharding.shard_batch(rows, mesh)))
    return {"rows": rows, "pmean": pmean, "device_mean": ordered}


def main(out: str) -> None:
    config = tiny.get_config()
    mesh = sharding.make_mesh()
    adam = common.init_state(config, "pass1")
    sgd = optax.sgd(config.pass1.learning_rate)
    plain = common.init_state(config, "pass1")  # its own arrays: train steps donate them
    plain = plain.replace(tx=sgd, opt_state=sgd.init(plain.params))
    results = reductions(mesh)
    for name, state in (("adam", adam), ("sgd", plain)):
        params, losses = train(sharding.replicate(state, mesh), config, mesh)
        results.update({f"{name}/{k}": v for k, v in params.items()})
        results[f"{name}/losses"] = losses
    if sharding.is_primary():
        np.savez(out, devices=sharding.num_shards(mesh), processes=jax.process_count(),
                 **results)


if __name__ == "__main__":
    main(sys.argv[1])
