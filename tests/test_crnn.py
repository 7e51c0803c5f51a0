"""The CRNN: the Keras baseline's size, output shapes, and equal numbers across conv paths."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import baseline
from sedjax.models import crnn

KERAS_TRAINABLE = 125_706  # trainable parameters of the seed's Keras model (GRU reset_after=False)


def _init(model, shape=(2, 500, 64)):
    return model.init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False)


def test_parameter_count_within_one_percent_of_keras():
    variables = _init(crnn.from_config(baseline.get_config().model, clip_level=False))
    n = crnn.count_params(variables["params"])
    assert abs(n - KERAS_TRAINABLE) / KERAS_TRAINABLE < 0.01, n
    # BatchNorm running statistics are state, not parameters: 3 blocks x 64 x (mean, var)
    assert crnn.count_params(variables["batch_stats"]) == 3 * 64 * 2


@pytest.mark.parametrize("clip_level,expected", [(True, (3, 10)), (False, (3, 500, 10))])
def test_output_shapes_and_range(clip_level, expected):
    model = crnn.from_config(baseline.get_config().model, clip_level=clip_level)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 500, 64))
    variables = _init(model, x.shape)
    probs = model.apply(variables, x, train=False)
    assert probs.shape == expected
    assert bool(((probs > 0) & (probs < 1)).all())


def test_clip_output_is_the_time_mean_of_the_frame_output():
    cfg = baseline.get_config().model
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 500, 64))
    frames = crnn.from_config(cfg, clip_level=False)
    variables = _init(frames)
    clips = crnn.from_config(cfg, clip_level=True).apply(variables, x, train=False)
    np.testing.assert_allclose(clips, frames.apply(variables, x, train=False).mean(1), atol=1e-6)


def test_im2col_conv_equals_xla_conv_and_shares_its_parameters():
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 20, 16, 5))
    ours = crnn.Im2ColConv(7, (3, 3))
    ref = nn.Conv(7, (3, 3), padding="SAME")
    params = ours.init(jax.random.PRNGKey(4), x)
    params = jax.tree_util.tree_map(lambda p: p + 0.1, params)  # non-zero bias too
    assert jax.tree_util.tree_map(jnp.shape, params) == jax.tree_util.tree_map(
        jnp.shape, ref.init(jax.random.PRNGKey(4), x))
    np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), atol=1e-5)


def test_reshape_max_pool_equals_flax_max_pool_and_its_gradient():
    x = jax.random.normal(jax.random.PRNGKey(5), (2, 6, 16, 3))
    np.testing.assert_array_equal(crnn.max_pool(x, (1, 4)),
                                  nn.max_pool(x, (1, 4), strides=(1, 4)))
    g_ours = jax.grad(lambda x: (crnn.max_pool(x, (1, 4)) ** 2).sum())(x)
    g_ref = jax.grad(lambda x: (nn.max_pool(x, (1, 4), strides=(1, 4)) ** 2).sum())(x)
    np.testing.assert_allclose(g_ours, g_ref, atol=1e-6)


def test_the_gru_reads_the_whole_sequence_in_both_directions():
    """Changing the first frame moves the last output and vice versa (a working BiGRU)."""
    model = crnn.BiGRU(8)
    x = jax.random.normal(jax.random.PRNGKey(6), (1, 5, 4))
    params = model.init(jax.random.PRNGKey(7), x)
    y = model.apply(params, x)
    assert y.shape == (1, 5, 16)
    y_first = model.apply(params, x.at[:, 0].add(3.0))
    y_last = model.apply(params, x.at[:, -1].add(3.0))
    assert float(jnp.abs(y_first[0, -1, :8] - y[0, -1, :8]).max()) > 1e-4  # forward half
    assert float(jnp.abs(y_last[0, 0, 8:] - y[0, 0, 8:]).max()) > 1e-4  # backward half
    np.testing.assert_allclose(y_first[0, 1:, 8:], y[0, 1:, 8:], atol=1e-6)  # causal halves
    np.testing.assert_allclose(y_last[0, :-1, :8], y[0, :-1, :8], atol=1e-6)
