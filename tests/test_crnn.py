"""The CRNN: the Keras baseline's size, output shapes, and equal numbers across conv paths."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import baseline
from sedjax import models
from sedjax.models import crnn, layers, time_grid

KERAS_TRAINABLE = 125_706  # trainable parameters of the seed's Keras model (GRU reset_after=False)


def _init(model, shape=(2, 500, 64)):
    return model.init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False)


def test_parameter_count_within_one_percent_of_keras():
    variables = _init(models.from_config(baseline.get_config().model, 10))
    n = models.count_params(variables["params"])
    assert abs(n - KERAS_TRAINABLE) / KERAS_TRAINABLE < 0.01, n
    # BatchNorm running statistics are state, not parameters: 3 blocks x 64 x (mean, var)
    assert models.count_params(variables["batch_stats"]) == 3 * 64 * 2


@pytest.mark.parametrize("pooling", layers.POOLINGS)
def test_output_shapes_and_range(pooling):
    cfg = baseline.get_config().model
    cfg.pooling = pooling
    model = models.from_config(cfg, 10)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 500, 64))
    variables = _init(model, x.shape)
    frames, clip = model.apply(variables, x, train=False)
    assert frames.shape == (3, 500, 10) and clip.shape == (3, 10)
    for probs in (frames, clip):
        assert bool(((probs > 0) & (probs < 1)).all())


def test_mean_pooled_clip_output_is_the_time_mean_of_the_frame_output():
    model = models.from_config(baseline.get_config().model, 10)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 500, 64))
    frames, clip = model.apply(_init(model), x, train=False)
    np.testing.assert_allclose(clip, frames.mean(1), atol=1e-6)


def _frames_and_weights(seed=0, shape=(3, 7, 4)):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.99, shape).astype(np.float32)
    w = rng.uniform(0.05, 1.0, shape).astype(np.float32)
    return p, w


def test_each_pooling_equals_its_numpy_formula():
    p, w = _frames_and_weights()
    expected = {"mean": p.mean(1), "max": p.max(1),
                "linear_softmax": (p ** 2).sum(1) / p.sum(1),
                "attention": (p * w).sum(1) / w.sum(1)}
    for pooling, want in expected.items():
        got = layers.pool_frames(jnp.asarray(p), pooling, jnp.asarray(w))
        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=pooling)
    # linear softmax sits between mean and max: loud frames count more
    ls = expected["linear_softmax"]
    assert (ls >= expected["mean"] - 1e-6).all() and (ls <= expected["max"] + 1e-6).all()
    with pytest.raises(ValueError, match="model.pooling"):
        layers.pool_frames(jnp.asarray(p), "median")


def test_attention_weights_are_a_clamped_softmax_over_classes():
    """The model's attention: softmax over classes per frame, clamped at 1e-7 (DCASE2019)."""
    cfg = baseline.get_config().model
    cfg.pooling = "attention"
    model = models.from_config(cfg, 10)
    x = jax.random.normal(jax.random.PRNGKey(8), (2, 40, 64))
    variables = _init(model, x.shape)
    assert "attention" in variables["params"]
    _, inter = model.apply(variables, x, train=False, capture_intermediates=True)
    (frames, clip), = inter["intermediates"]["__call__"]
    gru = inter["intermediates"]["BiGRU_0"]["__call__"][0]
    att = variables["params"]["attention"]
    w = jax.nn.softmax(gru @ att["kernel"] + att["bias"], axis=-1)
    w = np.clip(np.asarray(w), 1e-7, 1.0)
    np.testing.assert_allclose(clip, (frames * w).sum(1) / w.sum(1), rtol=1e-5)


def test_time_pooling_lowers_the_frame_rate_and_maps_to_seconds():
    config = baseline.get_config()
    config.model.pool_sizes = ((2, 4), (2, 4), (1, 4))
    model = models.from_config(config.model, 10)
    x = jax.random.normal(jax.random.PRNGKey(9), (1, 500, 64))
    frames, clip = model.apply(_init(model, x.shape), x, train=False)
    assert frames.shape == (1, 125, 10) and clip.shape == (1, 10)
    assert time_grid.time_pooling(config.model) == 4
    assert time_grid.output_frames(500, config.model) == 125
    assert time_grid.frame_seconds(config) == pytest.approx(0.08)
    np.testing.assert_array_equal(time_grid.valid_output_frames([500, 101, 4, 1], 500, config.model),
                                  [125, 26, 1, 1])
    config.model.pool_sizes = ((8, 4), (1, 4), (1, 4))  # 500 / 8: the last 4 frames dropped
    assert time_grid.output_frames(500, config.model) == 62
    np.testing.assert_array_equal(time_grid.valid_output_frames([500], 500, config.model), [62])


def test_im2col_conv_equals_xla_conv_and_shares_its_parameters():
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 20, 16, 5))
    ours = layers.Im2ColConv(7, (3, 3))
    ref = nn.Conv(7, (3, 3), padding="SAME")
    params = ours.init(jax.random.PRNGKey(4), x)
    params = jax.tree_util.tree_map(lambda p: p + 0.1, params)  # non-zero bias too
    assert jax.tree_util.tree_map(jnp.shape, params) == jax.tree_util.tree_map(
        jnp.shape, ref.init(jax.random.PRNGKey(4), x))
    np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), atol=1e-5)


def test_reshape_max_pool_equals_flax_max_pool_and_its_gradient():
    x = jax.random.normal(jax.random.PRNGKey(5), (2, 6, 16, 3))
    np.testing.assert_array_equal(layers.max_pool(x, (1, 4)),
                                  nn.max_pool(x, (1, 4), strides=(1, 4)))
    g_ours = jax.grad(lambda x: (layers.max_pool(x, (1, 4)) ** 2).sum())(x)
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


def _block(fold: bool, ordered: bool = False, features: int = 8):
    return layers.ConvBlock(features, (3, 3), (2, 4), 0.0, 0.9, 1e-3, "xla",
                          ordered_reductions=ordered, fold_batch_norm=fold)


@pytest.mark.parametrize("ordered", [False, True])
def test_the_folded_first_block_trains_as_conv_then_batch_norm(ordered):
    # inputs far from mean 0 / std 1 and edges whose zero padding counts in the moments
    x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 40, 16, 1)) * 3 + 1.5,
                    jnp.float32)
    variables = _block(False).init(jax.random.PRNGKey(0), x, False)
    folded_vars = _block(True).init(jax.random.PRNGKey(0), x, False)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(
        lambda a, b: a.shape == b.shape and bool((a == b).all()), variables, folded_vars))
    # a trained-looking kernel and BatchNorm scale, not the init's
    params = jax.tree_util.tree_map(lambda p: p + 0.3 * jnp.cos(jnp.arange(p.size).reshape(
        p.shape)), variables["params"])

    def loss(fold, p):
        y, updated = _block(fold, ordered).apply({**variables, "params": p}, x, True,
                                                 mutable=["batch_stats"])
        return (y * jnp.sin(jnp.arange(y.size).reshape(y.shape))).sum(), (y, updated)
    (_, (y, stats)), grads = jax.value_and_grad(functools.partial(loss, False),
                                                has_aux=True)(params)
    (_, (yf, statsf)), gradsf = jax.value_and_grad(functools.partial(loss, True),
                                                   has_aux=True)(params)
    np.testing.assert_allclose(yf, y, atol=2e-5)
    for name in ("mean", "var"):
        np.testing.assert_allclose(statsf["batch_stats"]["BatchNorm_0"][name],
                                   stats["batch_stats"]["BatchNorm_0"][name], rtol=1e-5,
                                   atol=1e-6)
    for path, g in (("Conv_0", "kernel"), ("BatchNorm_0", "scale"), ("BatchNorm_0", "bias")):
        want, got = grads[path][g], gradsf[path][g]
        np.testing.assert_allclose(got, want, atol=1e-4 * float(jnp.abs(want).max()))
    # a conv bias is undone by BatchNorm: no gradient reaches it either way
    assert float(jnp.abs(gradsf["Conv_0"]["bias"]).max()) < 1e-3 * float(
        jnp.abs(grads["Conv_0"]["kernel"]).max())
    # evaluation uses the running statistics, folded or not: the same program
    ev = [_block(f).apply(variables, x, False) for f in (False, True)]
    np.testing.assert_array_equal(ev[0], ev[1])


def test_only_the_one_channel_block_in_training_folds():
    x1, x8 = jnp.zeros((1, 4, 4, 1)), jnp.zeros((1, 4, 4, 8))
    assert layers.folds_batch_norm(_block(True), x1, train=True)
    assert not layers.folds_batch_norm(_block(True), x1, train=False)
    assert not layers.folds_batch_norm(_block(True), x8, train=True)
    assert not layers.folds_batch_norm(_block(False), x1, train=True)
    im2col = layers.ConvBlock(8, (3, 3), (2, 4), 0.0, 0.9, 1e-3, "im2col", fold_batch_norm=True)
    assert not layers.folds_batch_norm(im2col, x1, train=True)


def test_max_pool_gradient_goes_to_each_window_maximum():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 6, 8, 3)), jnp.float32)
    g = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 2, 3)), jnp.float32)
    pooled, vjp = jax.vjp(lambda v: layers.max_pool(v, (2, 4)), x)
    want_pooled, want_vjp = jax.vjp(
        lambda v: nn.max_pool(v, (2, 4), strides=(2, 4)), x)
    np.testing.assert_array_equal(pooled, want_pooled)
    np.testing.assert_allclose(vjp(g)[0], want_vjp(g)[0], atol=1e-6)
    assert int((vjp(g)[0] != 0).sum()) == g.size  # one element per window, no ties here


def test_relu_after_the_pool_is_the_block_of_relu_before_it():
    # ConvBlock pools before its ReLU: a monotonic function commutes with the max
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 8, 8, 4)), jnp.float32)
    np.testing.assert_array_equal(nn.relu(layers.max_pool(x, (2, 4))),
                                  layers.max_pool(nn.relu(x), (2, 4)))
