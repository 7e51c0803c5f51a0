"""Batch normalization whose statistics are averaged over devices in one fixed order.

The same numbers, parameters ('scale', 'bias') and running statistics ('mean', 'var') as
flax.linen.BatchNorm (fast variance E[x^2] - E[x]^2, clipped at 0; running averages with
`momentum`). What differs is how the batch moments of the devices are averaged in training:
flax's `pmean` is an all-reduce whose order of additions depends on how the devices are split
among processes; here the moments and their gradients are averaged in one fixed order
(sedjax.system.sharding.ordered_mean), so a run does not depend on that split.

`unbiased_running_var` gives PyTorch's BatchNorm update instead (DESED_task's CRNN): the
running variance averages the batch variance times n / (n - 1) (n: the values per feature, over
all devices), while the batch is still normalized with the biased one; `ordered=False` averages
the devices' moments with flax's all-reduce (jax.lax.pmean) instead.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sedjax.system import sharding


class BatchNorm(nn.Module):
    """Normalizes over every axis but the last (features) with the batch's moments in
    training (averaged over `axis_name`'s devices in a fixed order when given) and the
    running ones otherwise."""

    use_running_average: bool
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Any = None
    axis_name: str | None = None
    unbiased_running_var: bool = False
    ordered: bool = True

    @nn.compact
    def __call__(self, x):
        features = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(features, jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones(features, jnp.float32))
        if self.use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            stats = x.astype(jnp.promote_types(x.dtype, jnp.float32))
            axes = tuple(range(x.ndim - 1))
            moments = jnp.stack([stats.mean(axes), jnp.square(stats).mean(axes)])
            count = x.size // x.shape[-1]
            if self.axis_name is not None and not self.is_initializing():
                moments = (sharding.ordered_mean(moments, self.axis_name) if self.ordered
                           else jax.lax.pmean(moments, self.axis_name))
                count *= jax.lax.axis_size(self.axis_name)
            mean, var = moments[0], jnp.maximum(0.0, moments[1] - jnp.square(moments[0]))
            if not self.is_initializing():
                running_var = var * (count / max(count - 1, 1) if self.unbiased_running_var
                                     else 1.0)
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * running_var
        scale = self.param("scale", nn.initializers.ones, features, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, features, jnp.float32)
        y = (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
        return jnp.asarray(y, self.dtype if self.dtype is not None else y.dtype)
