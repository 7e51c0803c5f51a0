"""Layers the CRNNs share: conv blocks (the seed's CPU kernels included) and frame pooling.

`ConvBlock` is the seed's conv -> BatchNorm -> ReLU -> max-pool -> dropout; its first block
(one input channel) may fold BatchNorm into the conv and compute conv -> pool -> ReLU in chunks
(sedjax.models.conv_pool): the same function to float rounding, faster on CPUs (docs/speed.md).
`pool_frames` turns frame probabilities into clip probabilities (`model.pooling`).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sedjax.models import conv_pool
from sedjax.models.batch_norm import BatchNorm
from sedjax.models.dropout import Dropout
from sedjax.system import sharding

glorot = nn.initializers.glorot_uniform()  # Keras' default for conv, dense and GRU kernels

POOLINGS = ("mean", "max", "linear_softmax", "attention")
CONV_IMPLS = ("xla", "im2col", "auto")


class Im2ColConv(nn.Module):
    """A 'same' 2-D convolution as one matmul over stacked shifted inputs.

    Same parameters (kernel (kh, kw, cin, cout), bias) and numbers as nn.Conv; on CPUs whose
    XLA convolution is slow this hits the fast matmul path instead (see `model.conv_impl`).
    """

    features: int
    kernel_size: Sequence[int]
    dtype: Any = jnp.float32
    kernel_init: Any = glorot
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        cin = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (kh, kw, cin, self.features),
                            jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        ph, pw = (kh - 1) // 2, (kw - 1) // 2
        xp = jnp.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
        h, w = x.shape[1], x.shape[2]
        cols = jnp.concatenate([xp[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)],
                               axis=-1)
        y = jnp.dot(cols.astype(self.dtype), kernel.reshape(kh * kw * cin, -1).astype(self.dtype))
        return y + bias.astype(self.dtype)


def max_pool(x, pool):
    """Non-overlapping max-pool (window = stride) as reshape + max.

    The same numbers as nn.max_pool; its gradient (_window_max) is one compare-and-select
    instead of XLA's select-and-scatter or the reduce-max gradient's tie counting, each
    several times slower on CPU.
    """
    b, t, f, c = x.shape
    pt, pf = pool
    if t % pt or f % pf:
        return nn.max_pool(x, pool, strides=pool)
    return _window_max(x.reshape(b, t // pt, pt, f // pf, pf, c))


@jax.custom_vjp
def _window_max(windows):
    """(B, T', pt, F', pf, C) -> (B, T', F', C): the max of each window."""
    return windows.max(axis=(2, 4))


def _window_max_fwd(windows):
    out = _window_max(windows)
    return out, (windows, out)


def _window_max_bwd(saved, g):
    # the gradient goes to every element equal to its window's max; a tie (two equal floats
    # in one window) gets it twice where jax's max would split it, which is why max_pool
    # comes before the ReLU in ConvBlock: ties at the ReLU's 0 would otherwise be common
    windows, out = saved
    hit = windows == out[:, :, None, :, None, :]
    return (jnp.where(hit, g[:, :, None, :, None, :], jnp.zeros((), g.dtype)),)


_window_max.defvjp(_window_max_fwd, _window_max_bwd)


def conv_and_norm(block: "ConvBlock", x, train: bool, kernel_init=glorot,
                  bias_init=nn.initializers.zeros, unbiased_running_var: bool = False):
    """A block's 'same' convolution (block.conv_impl) then BatchNorm; called inside the block's
    compact __call__, so the layers are the block's own (Conv_0 / Im2ColConv_0, BatchNorm_0).
    unbiased_running_var: PyTorch's running-variance update (sedjax's BatchNorm)."""
    kernel = tuple(block.kernel_size)
    if resolve_conv_impl(block.conv_impl) == "im2col":
        x = Im2ColConv(block.features, kernel, dtype=block.dtype, kernel_init=kernel_init,
                       bias_init=bias_init)(x)
    else:
        x = nn.Conv(block.features, kernel, padding="SAME", kernel_init=kernel_init,
                    bias_init=bias_init, dtype=block.dtype)(x)
    # axis_name: batch statistics are averaged over all devices, so the model sees the global
    # batch whatever the device count; in a fixed order (sedjax's BatchNorm) or by flax's
    # all-reduce (the same numbers on one device)
    settings = dict(use_running_average=not train, momentum=block.bn_momentum,
                    epsilon=block.bn_epsilon, dtype=block.dtype,
                    axis_name=block.axis_name if train else None)
    if unbiased_running_var:
        return BatchNorm(**settings, unbiased_running_var=True,
                         ordered=block.ordered_reductions)(x)
    norm = BatchNorm if block.ordered_reductions else nn.BatchNorm
    return norm(**settings)(x)


class _ConvParams(nn.Module):
    """nn.Conv's parameters (kernel (kh, kw, cin, cout), bias) without its convolution: named
    Conv_0 in a block, the folded block has the parameters of the unfolded one."""

    features: int
    kernel_size: Sequence[int]
    kernel_init: Any = glorot
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self, cin: int):
        kernel = self.param("kernel", self.kernel_init,
                            (*self.kernel_size, cin, self.features), jnp.float32)
        return kernel, self.param("bias", self.bias_init, (self.features,), jnp.float32)


class _NormVariables(nn.Module):
    """BatchNorm's variables (scale, bias; running mean and var) without its normalization."""

    features: int

    @nn.compact
    def __call__(self):
        shape = (self.features,)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(shape, jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones(shape, jnp.float32))
        scale = self.param("scale", nn.initializers.ones, shape, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, shape, jnp.float32)
        return scale, bias, ra_mean, ra_var


def same_patches(x: jax.Array, kh: int, kw: int) -> jax.Array:
    """(B, T, F) -> (B, T, F, kh * kw): each position's 'same'-padded kh x kw neighbourhood,
    in the order of a (kh, kw, 1, C) kernel's rows."""
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    return conv_pool.valid_patches(jnp.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw))),
                                   kh, kw)


def folded_kernel_and_bias(block: "ConvBlock", x):
    """conv_and_norm in training for a one-channel input, BatchNorm folded into the conv:
    the (kernel, bias) of the one convolution that computes both.

    Why: the first block's output (B, T, F, 64) is the model's largest tensor, and conv then
    BatchNorm passes over it ~10 times (conv, moments, normalization and their gradients).
    The conv output z = P w + b is linear in the 9 values of each input patch P, so its batch
    mean and variance follow from the patches' first two moments (9 and 9 x 9 numbers): mean
    = E[P] w + b, var = w' Cov(P) w. The normalized output is then one convolution with the
    kernel scaled by s = scale / sqrt(var + eps) and the bias (b - mean) s + beta. The same
    function, parameters and running statistics as conv_and_norm (to float rounding); the
    gradient reaches the kernel through the scaled conv and the analytic moments, as it does
    through BatchNorm's.
    """
    kh, kw = tuple(block.kernel_size)
    kernel, conv_bias = _ConvParams(block.features, (kh, kw), name="Conv_0")(x.shape[-1])
    scale, beta, ra_mean, ra_var = _NormVariables(block.features, name="BatchNorm_0")()
    patches = same_patches(x[..., 0].astype(jnp.float32), kh, kw).reshape(-1, kh * kw)
    count = patches.shape[0]
    moments = jnp.concatenate([patches.mean(0), (patches.T @ patches / count).reshape(-1)])
    # the patches are data: no gradient flows into their moments
    moments = jax.lax.stop_gradient(moments)
    if block.axis_name is not None and not block.is_initializing():  # the global batch's
        moments = (sharding.ordered_mean(moments, block.axis_name) if block.ordered_reductions
                   else jax.lax.pmean(moments, block.axis_name))
    m1 = moments[:kh * kw]
    cov = moments[kh * kw:].reshape(kh * kw, kh * kw) - jnp.outer(m1, m1)
    w = kernel.reshape(kh * kw, block.features)
    mean = m1 @ w + conv_bias
    var = jnp.maximum(0.0, jnp.einsum("ic,ij,jc->c", w, cov, w))
    if not block.is_initializing():
        ra_mean.value = block.bn_momentum * ra_mean.value + (1 - block.bn_momentum) * mean
        ra_var.value = block.bn_momentum * ra_var.value + (1 - block.bn_momentum) * var
    s = scale * jax.lax.rsqrt(var + block.bn_epsilon)
    return kernel * s, (conv_bias - mean) * s + beta


def running_folded_kernel_and_bias(block: "ConvBlock", cin: int):
    """conv_and_norm in evaluation (BatchNorm with its running statistics, an affine map per
    channel) as the (kernel, bias) of one convolution: the same function to float rounding."""
    kernel, conv_bias = _ConvParams(block.features, tuple(block.kernel_size),
                                    name="Conv_0")(cin)
    scale, beta, ra_mean, ra_var = _NormVariables(block.features, name="BatchNorm_0")()
    s = scale * jax.lax.rsqrt(ra_var.value + block.bn_epsilon)
    return kernel * s, (conv_bias - ra_mean.value) * s + beta


def folded_conv_and_norm(block: "ConvBlock", x):
    """folded_kernel_and_bias's convolution: conv + BatchNorm in training, (B, T, F, C)."""
    kernel, bias = folded_kernel_and_bias(block, x)
    y = jax.lax.conv_general_dilated(x.astype(block.dtype), kernel.astype(block.dtype),
                                     (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias.astype(block.dtype)


def folds_batch_norm(block: "ConvBlock", x, train: bool) -> bool:
    """Whether the block computes conv + BatchNorm as folded_conv_and_norm: in training,
    with model.fold_batch_norm, XLA's conv and a one-channel input (the first block)."""
    return (train and block.fold_batch_norm and x.shape[-1] == 1
            and resolve_conv_impl(block.conv_impl) == "xla")


def chunk_length(block: "ConvBlock", x, train: bool) -> int:
    """Frames per chunk of the block's conv -> pool -> ReLU (sedjax.models.conv_pool), 0 when
    it is computed whole: chunked with model.first_block_chunk_frames > 0, a one-channel
    input, XLA's conv, a pool that tiles the input and, in training, BatchNorm folded (its
    batch statistics need the whole conv output otherwise)."""
    if (block.chunk_frames <= 0 or resolve_conv_impl(block.conv_impl) != "xla"
            or not conv_pool.applies(x.shape, tuple(block.pool))
            or (train and not folds_batch_norm(block, x, train))):
        return 0
    n = conv_pool.chunk_frames_for(x.shape[1], int(block.pool[0]), block.chunk_frames)
    return n if n >= block.kernel_size[0] - 1 else 0


class ConvBlock(nn.Module):
    """Conv 3x3 same -> BatchNorm -> ReLU -> max-pool over frequency -> Dropout.

    Computed as max-pool then ReLU: the same numbers (ReLU is monotonic, so it commutes with
    the max), with the ReLU and its gradient on a tensor pool-size times smaller. The first
    block (one input channel) computes conv, BatchNorm, pool and ReLU chunk by chunk
    (chunk_frames; sedjax.models.conv_pool), BatchNorm folded into the conv.
    """

    features: int
    kernel_size: Sequence[int]
    pool: Sequence[int]
    dropout: float
    bn_momentum: float
    bn_epsilon: float
    conv_impl: str = "xla"
    dtype: Any = jnp.float32
    axis_name: str | None = None
    ordered_reductions: bool = False
    fold_batch_norm: bool = False
    chunk_frames: int = 0
    dropout_masks: str = "hash"  # sedjax.models.dropout.MASKS

    @nn.compact
    def __call__(self, x, train: bool):
        chunk = chunk_length(self, x, train)
        if chunk:
            kernel, bias = (folded_kernel_and_bias(self, x) if train
                            else running_folded_kernel_and_bias(self, x.shape[-1]))
            x = conv_pool.conv_pool_relu(x.astype(self.dtype), kernel.astype(self.dtype),
                                         bias.astype(self.dtype), tuple(self.pool), chunk)
        else:
            if folds_batch_norm(self, x, train):
                x = folded_conv_and_norm(self, x)
            else:
                x = conv_and_norm(self, x, train)
            x = nn.relu(max_pool(x, tuple(self.pool)))
        return Dropout(self.dropout, deterministic=not train, masks=self.dropout_masks)(x)


def pool_frames(frames: jax.Array, pooling: str, weights: jax.Array | None = None) -> jax.Array:
    """Clip probabilities (B, C) from frame probabilities (B, T, C).

    mean: the seed's global average. max: the loudest frame. linear_softmax: sum p^2 / sum p
    (Wang, Li & Metze, ICASSP 2019), which weights each frame by its own probability.
    attention: sum p w / sum w with per-frame weights w (B, T, C) from the model.
    """
    if pooling == "mean":
        return frames.mean(axis=1)
    if pooling == "max":
        return frames.max(axis=1)
    if pooling == "linear_softmax":
        # the floor only matters when every frame's sigmoid underflowed to 0 (0/0)
        return (frames * frames).sum(axis=1) / jnp.maximum(frames.sum(axis=1), 1e-12)
    if pooling == "attention":
        return (frames * weights).sum(axis=1) / weights.sum(axis=1)
    raise ValueError(f"model.pooling: unknown pooling {pooling!r}; choose one of {POOLINGS}")


def resolve_conv_impl(conv_impl: str) -> str:
    """'auto' -> 'xla' (lax.conv) everywhere: with jax >= 0.10 XLA's CPU convolutions (and
    their gradients) beat im2col's matmul (docs/speed.md)."""
    return "xla" if conv_impl == "auto" else conv_impl
