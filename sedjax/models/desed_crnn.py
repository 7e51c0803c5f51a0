"""The DESED_task baseline CRNN (DCASE 2023 Task 4) in Flax linen, `model.arch = 'desed_crnn'`.

As DCASE-REPO/DESED_task's desed_task/nnet/{CNN,RNN,CRNN}.py build it with
recipes/dcase2023_task4_baseline/confs/default.yaml:
- 7 blocks of conv 3x3 (bias) -> BatchNorm (PyTorch's update: the running variance averages
  the unbiased batch variance) -> GLU -> dropout -> average pooling, filters
  16-32-64-128-128-128-128, pooling (time, frequency) (2,2),(2,2),(1,2) x 5: 626 frames x 128
  mel bands -> 156 frames x 128 channels. DESED's "GLU" is Linear_channels(x) * sigmoid(x)
  (a gate on the input, not the split-channel GLU).
- a 2-layer bidirectional GRU of 128 units (PyTorch's cell: separate input and hidden biases),
- dropout 0.5, then two dense heads on every frame: sigmoid frame probabilities and attention
  weights (a softmax over the classes, clamped to [1e-7, 1]); the clip probability is
  sum_t p w / sum_t w.
With `embeddings` (per-clip frame embeddings extracted elsewhere, e.g. BEATs (B, T_e, D)), they
are average-pooled to the CNN's frame count (PyTorch's adaptive_avg_pool1d), concatenated with
the CNN features, dropped out (head_dropout) and projected back to the CNN's width before the
GRU (DESED_task's 'pool1d').
With `beats` (a sedjax.models.beats.BeatsConfig; model.beats.trainable) the BEATs encoder is
part of the model, its weights the params' `beats` subtree: `embeddings` is then BEATs'
normalized fbank (B, frames, 128) (sedjax.models.beats.preprocess of the clips), which the
model encodes itself (`Beats.encode`, no padding mask; its dropouts active in training) into
the frame embeddings joined as above, so that training updates the encoder too.

Initialisation follows PyTorch's defaults (uniform +-1/sqrt(fan_in)), so parameter shapes and
counts equal DESED_task's (1,112,420 without embeddings; tests/test_desed_crnn.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sedjax.models import beats as beats_lib, kernels, layers
from sedjax.models.dropout import Dropout


ENCODER = "beats"  # the params' subtree of a trained BEATs encoder


def torch_uniform(fan_in: int):
    """PyTorch's default init of Linear/Conv/GRU tensors: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def avg_pool(x, pool):
    """Non-overlapping average pooling (B, T, F, C) that drops incomplete windows (AvgPool2d)."""
    b, t, f, c = x.shape
    pt, pf = pool
    x = x[:, : t // pt * pt, : f // pf * pf]
    return x.reshape(b, t // pt, pt, f // pf, pf, c).mean(axis=(2, 4))


def adaptive_avg_pool_matrix(length: int, size: int) -> np.ndarray:
    """(size, length) averaging matrix of PyTorch's adaptive_avg_pool1d: output i averages
    inputs floor(i L / size) .. ceil((i + 1) L / size) - 1."""
    out = np.zeros((size, length), np.float32)
    for i in range(size):
        start, stop = (i * length) // size, -(-((i + 1) * length) // size)
        out[i, start:stop] = 1.0 / (stop - start)
    return out


class GatedConvBlock(layers.ConvBlock):
    """Conv 3x3 same (bias) -> BatchNorm -> GLU (Linear_c(x) * sigmoid(x)) -> Dropout -> avg pool."""

    @nn.compact
    def __call__(self, x, train: bool):
        kh, kw = self.kernel_size
        init = torch_uniform(kh * kw * x.shape[-1])
        # PyTorch's BatchNorm2d: the running variance averages the unbiased batch variance
        x = layers.conv_and_norm(self, x, train, kernel_init=init, bias_init=init,
                               unbiased_running_var=True)
        gate = torch_uniform(self.features)
        x = nn.Dense(self.features, kernel_init=gate, bias_init=gate, dtype=self.dtype,
                     name="glu")(x) * nn.sigmoid(x)
        x = Dropout(self.dropout, deterministic=not train, masks=self.dropout_masks)(x)
        return avg_pool(x, tuple(self.pool))


class _HiddenStep(nn.Module):
    """One PyTorch GRU time step given the input's gate projections (hoisted out of the scan)."""

    units: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, gates_x):
        init = torch_uniform(self.units)
        w = self.param("hidden_kernel", init, (self.units, 3 * self.units), jnp.float32)
        b = self.param("hidden_bias", init, (3 * self.units,), jnp.float32)
        gates_h = jnp.dot(h.astype(self.dtype), w.astype(self.dtype)) + b.astype(self.dtype)
        xr, xz, xn = jnp.split(gates_x, 3, axis=-1)
        hr, hz, hn = jnp.split(gates_h, 3, axis=-1)
        r, z = nn.sigmoid(xr + hr), nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        h = (1.0 - z) * n + z * h
        return h, h


class TorchGRU(nn.Module):
    """One direction of a PyTorch GRU layer: (B, T, D) -> (B, T, units).

    The input projection of all frames is one matmul before the time loop; the scan carries
    only the hidden-state product (which is what must be sequential).
    """

    units: int
    reverse: bool = False
    unroll: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        init = torch_uniform(self.units)
        w = self.param("input_kernel", init, (x.shape[-1], 3 * self.units), jnp.float32)
        b = self.param("input_bias", init, (3 * self.units,), jnp.float32)
        gates_x = jnp.dot(x.astype(self.dtype), w.astype(self.dtype)) + b.astype(self.dtype)
        scan = nn.scan(_HiddenStep, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=1, out_axes=1, reverse=self.reverse, unroll=self.unroll)
        # zeros derived from x: inside shard_map the carry must vary over devices like x
        carry = jnp.zeros((x.shape[0], self.units), self.dtype) + 0 * jax.lax.stop_gradient(
            gates_x[:, 0, :1])
        _, y = scan(self.units, self.dtype, name="step")(carry, gates_x)
        return y


class DesedCRNN(nn.Module):
    """Features (B, T, F) [+ embeddings (B, T_e, D)] -> (frame probs (B, T', C), clip (B, C)).

    With `beats`, embeddings are BEATs' normalized fbank (B, frames, 128), encoded here."""

    num_classes: int = 10
    conv_features: Sequence[int] = (16, 32, 64, 128, 128, 128, 128)
    conv_kernel: Sequence[int] = (3, 3)
    pool_sizes: Sequence[Sequence[int]] = ((2, 2), (2, 2), (1, 2), (1, 2), (1, 2), (1, 2),
                                           (1, 2))
    conv_dropout: float = 0.5
    bn_momentum: float = 0.01  # flax's: DESED's torch momentum 0.99 = weight of the new batch
    bn_epsilon: float = 1e-3
    gru_units: int = 128
    gru_layers: int = 2
    gru_unroll: int = 1
    head_dropout: float = 0.5
    pooling: str = "attention"
    conv_impl: str = "xla"
    dtype: Any = jnp.float32
    axis_name: str | None = None
    ordered_reductions: bool = False
    dropout_masks: str = "hash"  # sedjax.models.dropout.MASKS (sedjax.models.kernels)
    # a trained BEATs encoder reads `embeddings` (set by the recipes' init_state: its
    # architecture comes with model.beats' checkpoint, which models do not read)
    beats: beats_lib.BeatsConfig | None = None

    @nn.compact
    def __call__(self, x, train: bool = False, embeddings=None):
        x = x[..., None].astype(self.dtype)
        for features, pool in zip(self.conv_features, self.pool_sizes):
            x = GatedConvBlock(features, self.conv_kernel, pool, self.conv_dropout,
                               self.bn_momentum, self.bn_epsilon, self.conv_impl, self.dtype,
                               self.axis_name, self.ordered_reductions,
                               dropout_masks=self.dropout_masks)(x, train)
        b, t, f, c = x.shape
        x = x.reshape(b, t, f * c)  # frequency pooled to 1: (B, T', channels)
        if embeddings is not None:
            if self.beats is not None:  # the fbank, through the encoder trained with the CRNN
                embeddings, _ = beats_lib.Beats(self.beats, name=ENCODER).encode(
                    embeddings, None, train)
            pool = jnp.asarray(adaptive_avg_pool_matrix(embeddings.shape[1], t), self.dtype)
            e = jnp.einsum("ol,bld->bod", pool, embeddings.astype(self.dtype))
            x = jnp.concatenate([x, e], axis=-1)
            # DESED_task drops out the joined features before cat_tf (its one `dropout` module)
            x = Dropout(self.head_dropout, deterministic=not train, masks=self.dropout_masks,
                        name="embeddings_dropout")(x)
            init = torch_uniform(x.shape[-1])
            x = nn.Dense(f * c, kernel_init=init, bias_init=init, dtype=self.dtype,
                         name="embeddings_projection")(x)
        for layer in range(self.gru_layers):
            x = jnp.concatenate(
                [TorchGRU(self.gru_units, reverse, self.gru_unroll, self.dtype,
                          name=f"gru{layer}_{'backward' if reverse else 'forward'}")(x)
                 for reverse in (False, True)], axis=-1)
        x = Dropout(self.head_dropout, deterministic=not train, masks=self.dropout_masks)(x)
        init = torch_uniform(x.shape[-1])
        logits = nn.Dense(self.num_classes, kernel_init=init, bias_init=init, dtype=self.dtype,
                          name="dense")(x)
        frames = nn.sigmoid(logits.astype(jnp.float32))
        weights = None
        if self.pooling == "attention":
            scores = nn.Dense(self.num_classes, kernel_init=init, bias_init=init,
                              dtype=self.dtype, name="attention")(x)
            weights = jnp.clip(nn.softmax(scores.astype(jnp.float32), axis=-1), 1e-7, 1.0)
        return frames, layers.pool_frames(frames, self.pooling, weights)


def from_config(model_config, num_classes: int, axis_name: str | None = None,
                ordered_reductions: bool = False) -> DesedCRNN:
    """The DESED CRNN of config.model (arch 'desed_crnn')."""
    m = model_config
    return DesedCRNN(num_classes=num_classes, conv_features=tuple(m.conv_features),
                     conv_kernel=tuple(m.conv_kernel),
                     pool_sizes=tuple(tuple(p) for p in m.pool_sizes),
                     conv_dropout=m.conv_dropout, bn_momentum=m.batchnorm_momentum,
                     bn_epsilon=m.batchnorm_epsilon, gru_units=m.gru_units,
                     gru_layers=m.gru_layers, gru_unroll=m.gru_unroll,
                     head_dropout=m.head_dropout, pooling=m.pooling, conv_impl=m.conv_impl,
                     dtype=jnp.dtype(m.dtype), axis_name=axis_name,
                     ordered_reductions=ordered_reductions,
                     dropout_masks=kernels.choose("dropout_masks", m.dropout_masks))
