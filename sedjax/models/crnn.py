"""The DCASE2018 baseline CRNN in Flax linen: conv blocks, bidirectional GRU (nn.scan), sigmoid.

The model returns frame probabilities and a clip probability pooled from them; how frames are
pooled into the clip (`model.pooling`) decides how well a weakly trained model localizes.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sedjax.models import conv_pool, kernels
from sedjax.models.dropout import Dropout
from sedjax.models.layers import ConvBlock, glorot, pool_frames


class BiGRU(nn.Module):
    """Bidirectional GRU, nn.scan over nn.GRUCell in each direction, outputs concatenated."""

    units: int
    unroll: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):  # (B, T, D) -> (B, T, 2 * units)
        outputs = []
        for reverse, name in ((False, "forward"), (True, "backward")):
            scan = nn.scan(nn.GRUCell, variable_broadcast="params", split_rngs={"params": False},
                           in_axes=1, out_axes=1, reverse=reverse, unroll=self.unroll)
            cell = scan(features=self.units, kernel_init=glorot, dtype=self.dtype, name=name)
            # zeros derived from x: inside shard_map the carry must vary over devices like x
            carry = jnp.zeros((x.shape[0], self.units), self.dtype) + 0 * jax.lax.stop_gradient(
                x[:, 0, :1]).astype(self.dtype)
            _, y = cell(carry, x)
            outputs.append(y)
        return jnp.concatenate(outputs, axis=-1)


class CRNN(nn.Module):
    """Log-mel (B, T, F) -> (frame probabilities (B, T', C), clip probabilities (B, C)).

    T' = T / (product of the time pool sizes): the frame outputs' resolution.
    """

    num_classes: int = 10
    conv_features: Sequence[int] = (64, 64, 64)
    conv_kernel: Sequence[int] = (3, 3)
    pool_sizes: Sequence[Sequence[int]] = ((1, 4), (1, 4), (1, 4))
    conv_dropout: float = 0.3
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    gru_units: int = 64
    gru_input_dropout: float = 0.3
    gru_unroll: int = 1
    pooling: str = "mean"
    conv_impl: str = "xla"
    dtype: Any = jnp.float32
    axis_name: str | None = None
    ordered_reductions: bool = False  # see sedjax.system.sharding.device_mean
    # the CPU kernels (sedjax.models.kernels; from_config resolves model.* 'auto'):
    fold_batch_norm: bool = True  # the first block's BatchNorm folded into its conv (training)
    # the first block's conv -> pool -> ReLU computed this many frames at a time (0: whole)
    first_block_chunk_frames: int = conv_pool.DEFAULT_CHUNK_FRAMES
    dropout_masks: str = "hash"  # sedjax.models.dropout.MASKS

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x[..., None].astype(self.dtype)  # one input channel
        for features, pool in zip(self.conv_features, self.pool_sizes):
            x = ConvBlock(features, self.conv_kernel, pool, self.conv_dropout, self.bn_momentum,
                          self.bn_epsilon, self.conv_impl, self.dtype, self.axis_name,
                          self.ordered_reductions, self.fold_batch_norm,
                          self.first_block_chunk_frames, self.dropout_masks)(x, train)
        b, t, f, c = x.shape
        x = x.reshape(b, t, f * c)  # frequency pooled to 1: (B, T', 64)
        # Keras' GRU input dropout: one mask per sequence, shared by all time steps
        x = Dropout(self.gru_input_dropout, broadcast_dims=(1,), deterministic=not train,
                    masks=self.dropout_masks)(x)
        x = BiGRU(self.gru_units, self.gru_unroll, self.dtype)(x)
        logits = nn.Dense(self.num_classes, kernel_init=glorot, dtype=self.dtype)(x)
        frames = nn.sigmoid(logits.astype(jnp.float32))
        weights = None
        if self.pooling == "attention":
            # DCASE2019 baseline: a softmax over classes per frame, clamped away from 0
            scores = nn.Dense(self.num_classes, kernel_init=glorot, dtype=self.dtype,
                              name="attention")(x)
            weights = jnp.clip(nn.softmax(scores.astype(jnp.float32), axis=-1), 1e-7, 1.0)
        return frames, pool_frames(frames, self.pooling, weights)


def from_config(model_config, num_classes: int, axis_name: str | None = None,
                ordered_reductions: bool = False) -> nn.Module:
    """The seed's CRNN of config.model (arch 'crnn') with `num_classes` outputs; axis_name and
    ordered_reductions: how BatchNorm averages batch moments over devices."""
    m = model_config
    return CRNN(num_classes=num_classes, conv_features=tuple(m.conv_features),
                conv_kernel=tuple(m.conv_kernel),
                pool_sizes=tuple(tuple(p) for p in m.pool_sizes), conv_dropout=m.conv_dropout,
                bn_momentum=m.batchnorm_momentum, bn_epsilon=m.batchnorm_epsilon,
                gru_units=m.gru_units, gru_input_dropout=m.gru_input_dropout,
                gru_unroll=m.gru_unroll, pooling=m.pooling, conv_impl=m.conv_impl,
                dtype=jnp.dtype(m.dtype), axis_name=axis_name,
                ordered_reductions=ordered_reductions,
                **kernels.chosen(m))
