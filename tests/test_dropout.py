"""sedjax's Dropout: flax's rate, scaling and broadcasting from a counter hash's bits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedjax.models.dropout import Dropout, keep_mask


@pytest.mark.parametrize("rate", [0.3, 0.5])
def test_the_kept_share_is_one_minus_the_rate_and_kept_values_are_scaled(rate):
    x = jnp.ones((200, 501))  # an odd size: the last 32-bit word is split in half
    y = Dropout(rate).apply({}, x, rngs={"dropout": jax.random.PRNGKey(0)})
    kept = np.asarray(y != 0)
    share = kept.mean()
    # within 5 binomial standard deviations of 1 - rate
    assert abs(share - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / x.size)
    np.testing.assert_allclose(np.asarray(y)[kept], 1 / (1 - rate), rtol=1e-6)
    # rows and columns are not correlated (both 16-bit halves of a word are used)
    assert abs(kept[:, 0::2].mean() - kept[:, 1::2].mean()) < 0.02


def test_masks_differ_by_key_and_repeat_for_the_same_key():
    a, b = (keep_mask(jax.random.PRNGKey(k), 0.7, (1000,)) for k in (0, 1))
    assert bool((a != b).any())
    np.testing.assert_array_equal(a, keep_mask(jax.random.PRNGKey(0), 0.7, (1000,)))


@pytest.mark.parametrize("lag", [1, 2, 3, 64, 4096])
def test_mask_elements_are_independent_of_their_neighbours_and_of_other_keys(lag):
    # a counter hash with weak mixing would correlate nearby counters (lags 1-3: the same
    # and the next word) or repeat along the channels (64) or between keys
    keep, n = 0.7, 400_000
    m = np.asarray(keep_mask(jax.random.PRNGKey(5), keep, (n,)))
    other = np.asarray(keep_mask(jax.random.fold_in(jax.random.PRNGKey(5), 1), keep, (n,)))
    sd = np.sqrt(keep**2 * (1 - keep**2) / n)
    assert abs((m[lag:] & m[:-lag]).mean() - keep**2) < 5 * sd
    assert abs((m & other).mean() - keep**2) < 5 * sd
    assert abs((m[lag:] & other[:-lag]).mean() - keep**2) < 5 * sd


def test_vmapped_masks_are_the_masks_of_each_key():
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    batched = jax.vmap(lambda k: keep_mask(k, 0.7, (4, 33)))(keys)
    for k, m in zip(keys, batched):
        np.testing.assert_array_equal(m, keep_mask(k, 0.7, (4, 33)))


def test_broadcast_dims_share_one_value_and_deterministic_is_identity():
    x = jnp.ones((4, 10, 6))
    y = Dropout(0.5, broadcast_dims=(1,)).apply({}, x, rngs={"dropout": jax.random.PRNGKey(2)})
    assert bool((y == y[:, :1, :]).all())
    np.testing.assert_array_equal(Dropout(0.5, deterministic=True).apply({}, x), x)
