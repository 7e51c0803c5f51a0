"""The first block's chunked conv -> pool -> ReLU against the whole-tensor computation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedjax.models import conv_pool, crnn, layers


def _whole(x, kernel, bias, pool):
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
    return jax.nn.relu(layers.max_pool(y, pool))


def _inputs(b, t, f, c, kh, kw, pool, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 4)
    x = jax.random.normal(ks[0], (b, t, f, 1))
    kernel = jax.random.normal(ks[1], (kh, kw, 1, c))
    bias = 0.1 * jax.random.normal(ks[2], (c,))
    g = jax.random.normal(ks[3], (b, t // pool[0], f // pool[1], c))
    return x, kernel, bias, g


# (batch, frames, bands, channels, kernel, pool, chunk): chunks of several sizes, odd and
# even kernels (asymmetric 'same' padding), a chunk as long as the clip
@pytest.mark.parametrize("b,t,f,c,kh,kw,pool,chunk", [
    (3, 20, 16, 5, 3, 3, (2, 4), 10),
    (2, 12, 8, 4, 3, 3, (1, 2), 4),
    (2, 12, 8, 4, 5, 3, (2, 2), 6),
    (2, 8, 8, 3, 2, 2, (2, 2), 4),
    (2, 20, 16, 5, 3, 3, (2, 4), 20),
])
def test_chunks_give_the_whole_blocks_output_and_gradients(b, t, f, c, kh, kw, pool, chunk):
    x, kernel, bias, g = _inputs(b, t, f, c, kh, kw, pool)
    np.testing.assert_allclose(conv_pool.conv_pool_relu(x, kernel, bias, pool, chunk),
                               _whole(x, kernel, bias, pool), atol=1e-5)

    def loss(fn, x, kernel, bias):
        return (fn(x, kernel, bias) * g).sum()
    chunked = functools.partial(conv_pool.conv_pool_relu, pool=pool, chunk_frames=chunk)
    whole = functools.partial(_whole, pool=pool)
    got = jax.grad(functools.partial(loss, chunked), (0, 1, 2))(x, kernel, bias)
    want = jax.grad(functools.partial(loss, whole), (0, 1, 2))(x, kernel, bias)
    for name, a, w in zip(("input", "kernel", "bias"), got, want):
        assert float(jnp.abs(w).max()) > 0, name  # a gradient that could be wrong
        np.testing.assert_allclose(a, w, atol=1e-4 * float(jnp.abs(w).max()), err_msg=name)
    # without the input's gradient (the model's case: features are data) the same kernel's
    k_only = jax.grad(lambda k, bb: loss(chunked, x, k, bb), (0, 1))(kernel, bias)
    np.testing.assert_array_equal(k_only[0], got[1])


def test_the_gradient_goes_to_each_window_maximum_and_not_below_zero():
    # a kernel and bias that make every output of channel 0 negative: its ReLU passes nothing
    x, kernel, _, g = _inputs(2, 8, 8, 2, 3, 3, (2, 2), seed=1)
    kernel = kernel.at[..., 0].set(0.0)
    bias = jnp.array([-1.0, 0.5])
    d_kernel, d_bias = jax.grad(
        lambda k, bb: (conv_pool.conv_pool_relu(x, k, bb, (2, 2), 4) * g).sum(), (0, 1))(
            kernel, bias)
    assert float(d_bias[0]) == 0.0 and float(jnp.abs(d_kernel[..., 0]).max()) == 0.0
    # channel 1's bias gradient: the sum of the gradients of its positive outputs
    out = conv_pool.conv_pool_relu(x, kernel, bias, (2, 2), 4)
    np.testing.assert_allclose(d_bias[1], float((g[..., 1] * (out[..., 1] > 0)).sum()),
                               rtol=1e-5)


def test_chunk_lengths_divide_the_clip_in_time_pool_multiples():
    assert conv_pool.chunk_frames_for(500, 2) == 100
    assert conv_pool.chunk_frames_for(200, 1) == 100
    assert conv_pool.chunk_frames_for(40, 2, 10) == 10
    # 626 = 2 x 313: only 2 divides under 100, too small a chunk: a clip per chunk instead
    assert conv_pool.chunk_frames_for(626, 2) == 626
    assert conv_pool.chunk_frames_for(313, 1) == 313
    assert conv_pool.chunk_frames_for(520, 2) == 52
    assert conv_pool.chunk_frames_for(30, 4) == 30  # no multiple of 4 divides 30: whole
    with pytest.raises(ValueError, match="chunk_frames 3"):
        conv_pool.conv_pool_relu(jnp.zeros((1, 12, 8, 1)), jnp.zeros((3, 3, 1, 2)),
                                 jnp.zeros(2), (2, 2), 3)


def _model(chunk, pooling=(2, 4)):
    return crnn.CRNN(num_classes=3, conv_features=(8, 8), pool_sizes=(pooling, (1, 4)),
                     gru_units=4, conv_dropout=0.0, gru_input_dropout=0.0,
                     first_block_chunk_frames=chunk)


@pytest.mark.parametrize("train", [True, False])
def test_the_chunked_model_computes_the_unchunked_one(train):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 40, 16)) * 2 + 1, jnp.float32)
    variables = _model(0).init(jax.random.PRNGKey(0), x)
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(
        _model(10).init(jax.random.PRNGKey(0), x))
    # trained-looking running statistics, so evaluation's folding is not an identity
    variables = jax.tree_util.tree_map(
        lambda v: v + 0.2 * jnp.abs(jnp.cos(jnp.arange(v.size).reshape(v.shape))), variables)

    def loss(chunk, params):
        (frames, _), updates = _model(chunk).apply(
            {**variables, "params": params}, x, train, mutable=["batch_stats"])
        return (frames * jnp.sin(jnp.arange(frames.size).reshape(frames.shape))).sum(), (
            frames, updates)
    (_, (want, want_stats)), want_g = jax.value_and_grad(
        functools.partial(loss, 0), has_aux=True)(variables["params"])
    (_, (got, got_stats)), got_g = jax.value_and_grad(
        functools.partial(loss, 10), has_aux=True)(variables["params"])
    np.testing.assert_allclose(got, want, atol=1e-5)
    jax.tree_util.tree_map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6),
                           got_stats, want_stats)
    if train:
        block = got_g["ConvBlock_0"]
        for path, name in (("Conv_0", "kernel"), ("BatchNorm_0", "scale"),
                           ("BatchNorm_0", "bias")):
            w = want_g["ConvBlock_0"][path][name]
            np.testing.assert_allclose(block[path][name], w, atol=1e-4 * float(jnp.abs(w).max()))


def test_only_a_one_channel_xla_block_chunks_and_in_training_only_folded():
    def make(conv_impl="xla", fold=True, chunk=10):
        return layers.ConvBlock(8, (3, 3), (2, 4), 0.0, 0.9, 1e-3, conv_impl,
                              fold_batch_norm=fold, chunk_frames=chunk)
    block = make()
    x1, x8 = jnp.zeros((1, 40, 16, 1)), jnp.zeros((1, 40, 16, 8))
    assert layers.chunk_length(block, x1, train=True) == 10
    assert layers.chunk_length(block, x1, train=False) == 10
    assert layers.chunk_length(block, x8, train=True) == 0
    assert layers.chunk_length(block, jnp.zeros((1, 40, 18, 1)), train=True) == 0  # 18 % 4
    assert layers.chunk_length(make(fold=False), x1, train=True) == 0
    assert layers.chunk_length(make(fold=False), x1, train=False) == 10
    assert layers.chunk_length(make(chunk=0), x1, train=True) == 0
    assert layers.chunk_length(make("im2col"), x1, train=True) == 0
