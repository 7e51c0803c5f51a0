"""sedjax's BatchNorm: flax.linen.BatchNorm's numbers, with the batch moments (and their
gradients) averaged over devices in one fixed order."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from sedjax.models.batch_norm import BatchNorm
from sedjax.system import sharding


def _inputs(shape=(8, 20, 6, 5)):
    return jnp.asarray(np.random.default_rng(0).normal(2.0, 3.0, shape).astype(np.float32))


@pytest.mark.parametrize("dtype", [None, jnp.bfloat16])
def test_same_numbers_as_flax_batch_norm_on_one_device(dtype):
    x = _inputs()
    ref = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-3, dtype=dtype)
    ours = BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-3, dtype=dtype)
    variables = ref.init(jax.random.PRNGKey(0), x)
    assert (jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(0), x))
            == jax.tree.map(jnp.shape, variables))  # same names: checkpoints load in both
    variables = jax.tree.map(lambda v: v + 0.5, variables)  # not the initial ones

    def loss(module, v):
        y, stats = module.apply(v, x, mutable=["batch_stats"])
        return (y.astype(jnp.float32) ** 2).sum(), (y, stats)
    (_, (y1, s1)), g1 = jax.value_and_grad(lambda v: loss(ref, v), has_aux=True)(variables)
    (_, (y2, s2)), g2 = jax.value_and_grad(lambda v: loss(ours, v), has_aux=True)(variables)
    assert y1.dtype == y2.dtype
    np.testing.assert_array_equal(y2, y1)
    jax.tree.map(np.testing.assert_array_equal, s2, s1)  # running statistics updated alike
    jax.tree.map(np.testing.assert_array_equal, g2["params"], g1["params"])
    e1 = nn.BatchNorm(use_running_average=True, epsilon=1e-3, dtype=dtype).apply(variables, x)
    e2 = BatchNorm(use_running_average=True, epsilon=1e-3, dtype=dtype).apply(variables, x)
    np.testing.assert_array_equal(e2, e1)


@pytest.mark.parametrize("module", [BatchNorm, nn.BatchNorm])
def test_moments_and_their_gradients_span_the_global_batch_on_four_devices(module):
    """Split over 4 devices, outputs, running statistics and the gradient with respect to the
    inputs (through the averaged moments: ordered_mean's backward) are those of one device
    normalizing the whole batch; as they are with flax's BatchNorm (pmean)."""
    mesh = sharding.make_mesh()
    assert sharding.num_shards(mesh) == 4
    x = _inputs()
    weights = jnp.asarray(np.random.default_rng(1).normal(size=x.shape).astype(np.float32))
    sharded = module(use_running_average=False, axis_name=sharding.AXIS)
    alone = BatchNorm(use_running_average=False)
    variables = alone.init(jax.random.PRNGKey(0), x)

    def per_device(v, x, w):
        y, stats = sharded.apply(v, x, mutable=["batch_stats"])
        return (y * w).sum()[None], y, stats["batch_stats"]["mean"][None]

    def total(x):
        losses, y, means = jax.shard_map(
            per_device, mesh=mesh, in_specs=(P(), P(sharding.AXIS), P(sharding.AXIS)),
            out_specs=(P(sharding.AXIS), P(sharding.AXIS), P(sharding.AXIS)))(
                variables, x, weights)
        return losses.sum(), (y, means)

    def reference(x):
        y, stats = alone.apply(variables, x, mutable=["batch_stats"])
        return (y * weights).sum(), (y, stats["batch_stats"]["mean"])

    (_, (y, means)), grad = jax.jit(jax.value_and_grad(total, has_aux=True))(x)
    (_, (y_ref, mean_ref)), grad_ref = jax.value_and_grad(reference, has_aux=True)(x)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for m in np.asarray(means):  # every device keeps the global running mean
        np.testing.assert_allclose(m, mean_ref, rtol=1e-6)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-4, atol=1e-5)


def test_unbiased_running_variance_is_pytorchs():
    """unbiased_running_var (DESED_task's BatchNorm2d): the running variance averages the
    batch variance times n / (n - 1); the output still uses the biased one."""
    x = _inputs()
    ours = BatchNorm(use_running_average=False, momentum=0.01, epsilon=1e-3,
                     unbiased_running_var=True)
    variables = ours.init(jax.random.PRNGKey(0), x)
    y, stats = ours.apply(variables, x, mutable=["batch_stats"])
    flat = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    np.testing.assert_allclose(stats["batch_stats"]["var"],
                               0.01 + 0.99 * flat.var(0, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(stats["batch_stats"]["mean"], 0.99 * flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(y, (flat - flat.mean(0)).reshape(x.shape)
                               / np.sqrt(flat.var(0) + 1e-3), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ordered", [True, False])
def test_unbiased_running_variance_counts_the_global_batch(ordered):
    """Over 4 devices, n is the global batch's count: the running variance of one device."""
    mesh = sharding.make_mesh()
    x = _inputs()
    sharded = BatchNorm(use_running_average=False, axis_name=sharding.AXIS,
                        unbiased_running_var=True, ordered=ordered)
    alone = BatchNorm(use_running_average=False, unbiased_running_var=True)
    variables = alone.init(jax.random.PRNGKey(0), x)

    def per_device(v, x):
        _, stats = sharded.apply(v, x, mutable=["batch_stats"])
        return stats["batch_stats"]["var"][None]

    got = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(sharding.AXIS)),
                                out_specs=P(sharding.AXIS)))(variables, x)
    _, want = alone.apply(variables, x, mutable=["batch_stats"])
    for v in np.asarray(got):
        np.testing.assert_allclose(v, want["batch_stats"]["var"], rtol=1e-5)
