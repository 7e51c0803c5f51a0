"""Pure per-device train and eval steps (pmap style: collectives over the axis 'batch')."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

AXIS = "batch"


class TrainState(train_state.TrainState):
    """Params, Adam state, BatchNorm running statistics and the dropout key."""

    batch_stats: Any
    dropout_rng: jax.Array


def create_train_state(rng: jax.Array, model: nn.Module, pass_config, input_shape
                       ) -> TrainState:
    """Initializes the model (Keras-like init) and Adam with the pass's settings."""
    init_rng, dropout_rng = jax.random.split(rng)
    variables = model.init({"params": init_rng}, jnp.zeros((1, *input_shape), jnp.float32),
                           train=False)
    tx = optax.adam(pass_config.learning_rate, b1=pass_config.adam_b1, b2=pass_config.adam_b2,
                    eps=pass_config.adam_eps)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables["batch_stats"], dropout_rng=dropout_rng)


def bce(probs: jax.Array, targets: jax.Array, eps: float) -> jax.Array:
    """Per-element binary cross-entropy on probabilities clipped to [eps, 1 - eps] (Keras)."""
    p = jnp.clip(probs, eps, 1.0 - eps)
    return -(targets * jnp.log(p) + (1.0 - targets) * jnp.log1p(-p))


def train_step(state: TrainState, features: jax.Array, labels: jax.Array, bce_eps: float
               ) -> tuple[TrainState, dict]:
    """One Adam step on this device's shard; grads and metrics are averaged over 'batch'.

    features (b, T, F); labels (b, C) clip targets, broadcast to every frame when the model
    outputs frames (pass 2: a clip's pseudo-labels are copied to all its frames).
    """
    # a different dropout mask on every step and device, reproducible from the state
    rng = jax.random.fold_in(jax.random.fold_in(state.dropout_rng, state.step),
                             jax.lax.axis_index(AXIS))

    def loss_fn(params):
        probs, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats},
                                        features, train=True, rngs={"dropout": rng},
                                        mutable=["batch_stats"])
        targets = labels if probs.ndim == labels.ndim else labels[:, None, :]
        loss = bce(probs, jnp.broadcast_to(targets, probs.shape), bce_eps).mean()
        return loss, updates["batch_stats"]

    # Mark the replicated params as per-device values so that grads are this device's own
    # (pmap semantics); differentiating the replicated value would make shard_map psum them.
    params = jax.lax.pcast(state.params, AXIS, to="varying")
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grads = jax.lax.pmean(grads, AXIS)
    # BatchNorm already averages its batch moments over 'batch'; the pmean makes the running
    # statistics provably identical on every device
    batch_stats = jax.lax.pmean(batch_stats, AXIS)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    metrics = {"loss_sum": jax.lax.psum(loss * features.shape[0], AXIS),
               "count": jax.lax.psum(jnp.float32(features.shape[0]), AXIS)}
    return state, metrics


def eval_step(state: TrainState, features: jax.Array) -> jax.Array:
    """Probabilities of this device's shard with running BatchNorm statistics."""
    return state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, features,
                          train=False)
