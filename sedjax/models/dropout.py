"""Dropout whose mask comes from a counter hash (the same rate, scaling and API as flax's), or
from flax's own threefry draw (masks='threefry', what model.dropout_masks 'auto' picks off
the CPU: sedjax.models.kernels).

Why: threefry spends 20 rounds per 64 bits where a mask needs a comparison, a share of the
CPU step for the first conv block's masks (student and teacher; docs/speed.md).
Here the module's 'dropout' key gives two 32-bit seeds (threefry, 2 words), and element
pairs get their bits from a counter hash: word i = fmix(fmix(i ^ s0) + s1), MurmurHash3's
32-bit finalizer (a bijection whose every output bit depends on every input bit) applied
twice, much cheaper than threefry (docs/speed.md). Each word gives two 16-bit
uniforms; an element is kept when its uniform is below round(keep * 2^16), i.e. with
probability keep to within 2^-17, and kept elements are scaled by 1 / keep as in
flax.linen.Dropout. Only elementwise ops on values drawn from the key: vmapped runs get
exactly the masks of single runs.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_LEVELS = 1 << 16


def _fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finalizer (uint32 -> uint32, a bijection)."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def keep_mask(key: jax.Array, keep: float, shape: Sequence[int]) -> jax.Array:
    """A boolean mask of `shape`, each element True with probability keep (to 2^-17)."""
    n = int(np.prod(shape))
    words = -(-n // 2)
    if words > np.iinfo(np.uint32).max:
        raise ValueError(f"dropout: a mask of {n} elements exceeds the 32-bit counter")
    s0, s1 = jax.random.bits(key, (2,), jnp.uint32)
    counter = jax.lax.iota(jnp.uint32, words)
    bits = _fmix32(_fmix32(counter ^ s0) + s1)
    halves = jax.lax.bitcast_convert_type(bits, jnp.uint16).reshape(-1)[:n]
    return (halves < jnp.uint16(min(round(keep * _LEVELS), _LEVELS - 1))).reshape(shape)


MASKS = ("hash", "threefry")


class Dropout(nn.Module):
    """flax.linen.Dropout's interface: rate, broadcast_dims (axes sharing one mask value),
    deterministic; randomness from the 'dropout' collection. masks: 'hash' (keep_mask) or
    'threefry' (jax.random.bernoulli, as flax.linen.Dropout draws it)."""

    rate: float
    broadcast_dims: Sequence[int] = ()
    deterministic: bool = False
    masks: str = "hash"

    @nn.compact
    def __call__(self, x):
        if self.deterministic or self.rate == 0.0:
            return x
        if self.rate == 1.0:
            return jnp.zeros_like(x)
        keep = 1.0 - self.rate
        shape = list(x.shape)
        for d in self.broadcast_dims:
            shape[d] = 1
        if self.masks == "threefry":
            mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        elif self.masks == "hash":
            mask = keep_mask(self.make_rng("dropout"), keep, shape)
        else:
            raise ValueError(f"model.dropout_masks: unknown masks {self.masks!r}; choose one "
                             f"of {MASKS}")
        return jnp.where(jnp.broadcast_to(mask, x.shape), x / keep, jnp.zeros_like(x))
