"""What every recipe's per-device step shares: the train state, the loss, the gradient update.

Steps are written pmap style: per-device functions with collectives over the axis 'batch'
(sedjax.system.sharding.AXIS), mapped over the mesh by sedjax.train.parallel.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from sedjax.system import sharding
from sedjax.system.sharding import AXIS


class TrainState(train_state.TrainState):
    """Params, Adam state, BatchNorm running statistics and the dropout key."""

    batch_stats: Any
    dropout_rng: jax.Array


def rampup_factor(step: jax.Array, rampup_steps: int) -> jax.Array:
    """exp(-5 (1 - t)^2), t = step / rampup_steps clipped to 1 (Laine & Aila; DESED_task's
    ExponentialWarmup)."""
    t = jnp.clip(jnp.asarray(step, jnp.float32) / rampup_steps, 0.0, 1.0)
    return jnp.exp(-5.0 * (1.0 - t) ** 2)


class ScaleByRatesState(NamedTuple):
    """Each parameter's learning rate (float32 scalars in a tree like the params)."""

    rates: Any


def scale_by_rates(rates) -> optax.GradientTransformation:
    """-rate * update, parameter by parameter: optax's scale_by_learning_rate with one rate
    per parameter, `rates` a tree like the params. The rates are the optimizer's state (not
    constants of the program), so that runs stacked into one program each keep their own."""

    def init(params):
        del params
        return ScaleByRatesState(jax.tree_util.tree_map(
            lambda r: jnp.asarray(r, jnp.float32), rates))

    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda u, r: -r.astype(u.dtype) * u, updates,
                                      state.rates), state
    return optax.GradientTransformation(init, update)


def _place(params, replace: Mapping[str, Any]):
    """params with the subtrees `replace` names ({top-level key: subtree}) put in place of the
    init's; ValueError when a subtree's structure or shapes differ from the init's."""
    out = dict(params)
    for name, tree in replace.items():
        if name not in out:
            raise ValueError(f"params: the model has no {name!r} to place weights in "
                             f"(it has {sorted(out)})")
        have = jax.tree_util.tree_map(lambda x: (tuple(np.shape(x)), str(np.dtype(x.dtype))),
                                      tree)
        want = jax.tree_util.tree_map(lambda x: (tuple(np.shape(x)), str(np.dtype(x.dtype))),
                                      out[name])
        if have != want:
            raise ValueError(f"params[{name!r}]: the weights to place differ from the model's "
                             "in their names or shapes")
        # copies: the state's buffers are its own (a step donates them; the caller may keep
        # the weights, e.g. in a cache)
        out[name] = jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), tree)
    return out


def create_train_state(rng: jax.Array, model: nn.Module, optim_config, input_shape,
                       rampup_steps: int = 0, embeddings_shape=None,
                       replace_params: Mapping[str, Any] | None = None,
                       subtree_rates: Mapping[str, Any] | None = None) -> TrainState:
    """Initializes the model (Keras-like init) and Adam with the section's settings.

    With a list of learning rates (one per run, `learning_rates`), the rate is part of the
    optimizer state, so that runs stacked into one program each keep their own.
    rampup_steps > 0: the learning rate ramps up over that many steps (rampup_factor);
    optim_config.step_timing 'desed_task' (mean teacher): as DESED_task's scheduler does it.
    embeddings_shape: (frames, size) of the model's second input (`embeddings`), or None.
    replace_params: {top-level params key: weights} put in place of the init's (e.g. a
    pretrained encoder's: the same names and shapes).
    subtree_rates: {top-level params key: a tree like that subtree of learning rates}: those
    parameters train at these rates, the rest at optim_config.learning_rate (Adam, then
    scale_by_rates: each rate in the optimizer state); None: one rate (optax.adam).
    """
    init_rng, dropout_rng = jax.random.split(rng)
    embeddings = None if embeddings_shape is None else jnp.zeros((1, *embeddings_shape))
    variables = model.init({"params": init_rng}, jnp.zeros((1, *input_shape), jnp.float32),
                           train=False, **_embeddings(embeddings))
    params = variables["params"]
    if replace_params:
        params = _place(params, replace_params)
    if subtree_rates:
        base = float(optim_config.learning_rate)
        rates = {k: (subtree_rates[k] if k in subtree_rates
                     else jax.tree_util.tree_map(lambda _: base, v))
                 for k, v in params.items()}
        tx = optax.chain(optax.scale_by_adam(b1=optim_config.adam_b1, b2=optim_config.adam_b2,
                                             eps=optim_config.adam_eps),
                         scale_by_rates(rates))
    else:
        adam = optax.adam
        if optim_config.get("learning_rates"):
            adam = optax.inject_hyperparams(optax.adam,
                                            static_args=("b1", "b2", "eps", "eps_root"))
        tx = adam(optim_config.learning_rate, b1=optim_config.adam_b1,
                  b2=optim_config.adam_b2, eps=optim_config.adam_eps)
    if rampup_steps > 0:
        if optim_config.get("step_timing") == "desed_task":  # mean_teacher's only
            # DESED_task's ExponentialWarmup sets the rate only after the first update (which
            # runs at the optimizer's full rate), then reads step_num = n + 1 at update n + 1
            def schedule(n):
                return jnp.where(n == 0, 1.0, rampup_factor(n + 1, rampup_steps))
        else:  # update n + 1 at rampup_factor(n): the first at exp(-5)
            def schedule(n):
                return rampup_factor(n, rampup_steps)
        tx = optax.chain(tx, optax.scale_by_schedule(schedule))
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                             batch_stats=variables["batch_stats"], dropout_rng=dropout_rng)


def bce(probs: jax.Array, targets: jax.Array, eps: float) -> jax.Array:
    """Per-element binary cross-entropy on probabilities clipped to [eps, 1 - eps] (Keras)."""
    p = jnp.clip(probs, eps, 1.0 - eps)
    return -(targets * jnp.log(p) + (1.0 - targets) * jnp.log1p(-p))


def step_key(state: TrainState) -> jax.Array:
    """A different key on every step and device, reproducible from the state (dropout, masks)."""
    return jax.random.fold_in(jax.random.fold_in(state.dropout_rng, state.step),
                              jax.lax.axis_index(AXIS))


def _embeddings(embeddings) -> dict:
    """The model's keyword for pre-extracted embeddings, only when there are some (the seed's
    CRNN takes none)."""
    return {} if embeddings is None else {"embeddings": embeddings}


def apply_train(state: TrainState, params, features: jax.Array, rng: jax.Array,
                embeddings: jax.Array | None = None):
    """Training-mode forward pass: ((frames, clip), new BatchNorm statistics)."""
    outputs, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats},
                                      features, train=True, rngs={"dropout": rng},
                                      mutable=["batch_stats"], **_embeddings(embeddings))
    return outputs, updates["batch_stats"]


def apply_eval(state: TrainState, features: jax.Array, embeddings: jax.Array | None = None):
    """Inference-mode forward pass (running BatchNorm statistics): (frames, clip)."""
    return state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, features,
                          train=False, **_embeddings(embeddings))


def gradient_step(state: TrainState, loss_fn: Callable, batch_size: int, ordered: bool = False
                  ) -> tuple[TrainState, dict]:
    """One data-parallel update; loss_fn(params) -> (loss, (batch_stats, metrics dict)).

    Gradients and BatchNorm statistics are averaged over devices (ordered: added in device
    order, bitwise the same however the devices are split among processes; see
    sedjax.system.sharding.device_mean); `metrics` (per-device means) come back summed over the
    global batch, with `count`, so that epochs can add them up.
    """
    mean = functools.partial(sharding.device_mean, ordered=ordered)
    # Mark the replicated params as per-device values so that grads are this device's own
    # (pmap semantics); differentiating the replicated value would make shard_map psum them.
    params = jax.lax.pcast(state.params, AXIS, to="varying")
    (loss, (batch_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grads = mean(grads)
    # BatchNorm already averages its batch moments over 'batch'; this makes the running
    # statistics provably identical on every device
    batch_stats = mean(batch_stats)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    devices = jax.lax.psum(1, AXIS)
    sums = {f"{k}_sum": mean(v) * devices * batch_size
            for k, v in {"loss": loss, **metrics}.items()}
    sums["count"] = jnp.float32(devices * batch_size)
    return state, sums
