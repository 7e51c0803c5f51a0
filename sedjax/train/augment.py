"""Augmentation on the device, inside the jitted step; every draw comes from the step's key.

All functions work on one device's shard: features (B, T, F) already normalized (0 = the band
mean), clip targets (B, C), frame targets (B, T', C) at the model's output rate, and each clip's
kind (weak / unlabeled / strong) so that mixup pairs clips whose targets mean the same thing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def same_kind_partner(key: jax.Array, kind: jax.Array) -> jax.Array:
    """A random partner index for every row among the rows of its own kind (itself if alone).

    Rows are shuffled within their kind and each is paired with the next one of the shuffled
    group (cyclically), so the pairing is a permutation with no cross-kind pair.
    """
    b = kind.shape[0]
    order = jnp.argsort(kind.astype(jnp.float32) * 2.0 + jax.random.uniform(key, (b,)))
    sorted_kind = kind[order]
    pos = jnp.arange(b)
    first = jnp.searchsorted(sorted_kind, sorted_kind, side="left")
    last = jnp.searchsorted(sorted_kind, sorted_kind, side="right") - 1
    nxt = jnp.where(pos == last, first, pos + 1)
    return jnp.zeros(b, jnp.int32).at[order].set(order[nxt].astype(jnp.int32))


def mixup(key: jax.Array, arrays: tuple, kind: jax.Array, alpha: float, share: float
          ) -> tuple[tuple, jax.Array]:
    """Mixes each row with a same-kind partner on a `share` of the steps; (mixed, lambda).

    lambda ~ Beta(alpha, alpha), taken as max(lambda, 1 - lambda) so that the clip keeps its own
    identity; one lambda per device and step (DESED). Targets are mixed the same way (soft).
    """
    k_on, k_lam, k_pair = jax.random.split(key, 3)
    lam = jax.random.beta(k_lam, alpha, alpha)
    lam = jnp.where(jax.random.uniform(k_on) < share, jnp.maximum(lam, 1.0 - lam), 1.0)
    partner = same_kind_partner(k_pair, kind)
    mixed = tuple(lam * a + (1.0 - lam) * a[partner] for a in arrays)
    return mixed, lam


def _span_mask(key: jax.Array, batch: int, length: int, max_width: int) -> jax.Array:
    """(batch, length) float mask, 1 on one random span of 0..max_width positions per row."""
    k_w, k_s = jax.random.split(key)
    width = jax.random.randint(k_w, (batch, 1), 0, max_width + 1)
    start = jnp.floor(jax.random.uniform(k_s, (batch, 1)) * (length - width + 1)).astype(jnp.int32)
    pos = jnp.arange(length)[None, :]
    return ((pos >= start) & (pos < start + width)).astype(jnp.float32)


def mask_time_frequency(key: jax.Array, x: jax.Array, max_time: int, max_freq: int
                        ) -> jax.Array:
    """SpecAugment-style masks: one span of up to max_time frames and one of up to max_freq
    bands per clip set to 0 (the band mean of normalized features)."""
    b, t, f = x.shape
    k_t, k_f = jax.random.split(key)
    keep = 1.0
    if max_time > 0:
        keep = keep * (1.0 - _span_mask(k_t, b, t, min(max_time, t)))[:, :, None]
    if max_freq > 0:
        keep = keep * (1.0 - _span_mask(k_f, b, f, min(max_freq, f)))[:, None, :]
    return x * keep


def time_shift(key: jax.Array, x: jax.Array, frame_targets: jax.Array, max_shift: int,
               time_pooling: int) -> tuple[jax.Array, jax.Array]:
    """Rolls each clip by a random whole number of output frames (up to max_shift input frames
    either way); frame targets move with the audio, so strong labels stay true."""
    max_out = max_shift // time_pooling
    if max_out <= 0:
        return x, frame_targets
    shift = jax.random.randint(key, (x.shape[0],), -max_out, max_out + 1)
    x = jax.vmap(lambda a, s: jnp.roll(a, s * time_pooling, axis=0))(x, shift)
    frame_targets = jax.vmap(lambda a, s: jnp.roll(a, s, axis=0))(frame_targets, shift)
    return x, frame_targets
