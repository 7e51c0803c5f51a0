"""The seed's steps through the shared data-parallel mapping: equal over device counts, loss,
BatchNorm state, dropout keys, prediction."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import baseline
from sedjax.recipes import common, two_pass
from sedjax.system import sharding
from sedjax.train import parallel, state as state_lib


def _step_fn(mesh, config, clip_level, resident):
    step = functools.partial(two_pass.train_step, bce_eps=config.pass1.bce_eps,
                             output="clip" if clip_level else "frame")
    return parallel.train_step_fn(step, mesh, resident)


def _batch(feats, frames, labels):
    return {"features": feats, "frames": frames, "labels": labels}


def _setup(devices, clip_level, dropout=0.0):
    config = baseline.get_config()
    config.model.conv_dropout = config.model.gru_input_dropout = dropout
    # Adam's early steps are lr * g / (|g| + eps): with Keras' eps 1e-7, a gradient that is
    # float32 noise (~1e-8, e.g. a conv bias right before BatchNorm, whose true gradient is 0)
    # moves by up to lr * 0.1 either way. A larger eps keeps this test about data parallelism.
    config.pass1.adam_eps = 1e-4
    config.features.num_frames = 20
    mesh = sharding.make_mesh(devices)
    return mesh, common.new_state(config, "pass1", mesh), config


def _run(devices, clip_level, resident, num_steps=3):
    mesh, state, config = _setup(devices, clip_level)
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((32, 20, 64)).astype(np.float32)
    labels = (rng.random((32, 10)) < 0.3).astype(np.float32)
    step = _step_fn(mesh, config, clip_level, resident)
    losses = []
    frames = np.full(32, 20, np.int32)
    frames[::3] = 13  # some shorter clips: zero padding after normalization
    stats = sharding.replicate((feats.mean((0, 1)), feats.std((0, 1))), mesh)
    data = sharding.replicate(_batch(feats, frames, labels), mesh)
    for i in range(num_steps):
        index = np.arange(8 * i, 8 * i + 8)
        if resident:
            state, m = step(state, stats, data, sharding.shard_batch(index, mesh))
        else:
            batch = sharding.shard_batch(_batch(feats[index], frames[index], labels[index]), mesh)
            state, m = step(state, stats, batch)
        losses.append(float(m["loss_sum"] / m["count"]))
    return jax.device_get(state), losses


@pytest.mark.parametrize("clip_level,resident", [(True, False), (False, True)])
def test_one_and_four_devices_give_the_same_params(clip_level, resident):
    assert len(jax.devices()) == 4
    one, loss1 = _run(jax.devices()[:1], clip_level, resident)
    four, loss4 = _run(jax.devices(), clip_level, resident)
    np.testing.assert_allclose(loss1, loss4, rtol=1e-5)
    for tree in ("params", "batch_stats"):
        a = jax.tree_util.tree_leaves_with_path(getattr(one, tree))
        b = jax.tree_util.tree_leaves(getattr(four, tree))
        for (path, x), y in zip(a, b):
            np.testing.assert_allclose(x, y, atol=1e-5, err_msg=jax.tree_util.keystr(path))
    # the steps did move the weights and the running statistics
    _, init, _ = _setup(jax.devices()[:1], clip_level)
    moved = {jax.tree_util.keystr(path): np.abs(np.asarray(x) - np.asarray(y)).max()
             for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(init.params),
                                     jax.tree_util.tree_leaves(one.params))}
    # The first block's BatchNorm is folded into its conv in training (model.fold_batch_norm):
    # the conv's bias cancels in the batch mean, so its gradient is exactly 0 and it stays put.
    assert moved.pop("['ConvBlock_0']['Conv_0']['bias']") == 0
    assert min(moved.values()) > 0, moved
    assert int(one.step) == 3


def test_loss_decreases_on_a_learnable_batch():
    _, losses = _run(jax.devices()[:2], clip_level=True, resident=False, num_steps=1)
    mesh, state, config = _setup(jax.devices()[:2], clip_level=True)
    feats = np.random.default_rng(1).standard_normal((8, 20, 64)).astype(np.float32)
    labels = np.zeros((8, 10), np.float32)
    labels[:, 3] = 1.0
    step = _step_fn(mesh, config, clip_level=True, resident=False)
    batch = sharding.shard_batch(_batch(feats, np.full(8, 20, np.int32), labels), mesh)
    stats = sharding.replicate((np.zeros(64, np.float32), np.ones(64, np.float32)), mesh)
    first = None
    for _ in range(15):
        state, m = step(state, stats, batch)
        first = first if first is not None else float(m["loss_sum"] / m["count"])
    assert float(m["loss_sum"] / m["count"]) < 0.5 * first


def test_bce_matches_formula_and_clips():
    p = jnp.array([0.0, 0.25, 1.0])
    t = jnp.array([1.0, 0.0, 1.0])
    out = np.asarray(state_lib.bce(p, t, 1e-7))
    np.testing.assert_allclose(out, [-np.log(1e-7), -np.log(0.75), -np.log1p(-1e-7)],
                               rtol=1e-5, atol=1e-6)


def test_dropout_differs_between_steps_but_not_between_reruns():
    mesh, state, config = _setup(jax.devices()[:1], clip_level=False, dropout=0.3)
    feats = np.ones((4, 20, 64), np.float32)
    labels = np.ones((4, 10), np.float32)
    step = _step_fn(mesh, config, clip_level=False, resident=False)
    batch = sharding.shard_batch(_batch(feats, np.full(4, 20, np.int32), labels), mesh)
    stats = sharding.replicate((np.zeros(64, np.float32), np.ones(64, np.float32)), mesh)
    runs = []
    for _ in range(2):
        s = sharding.replicate(jax.device_get(state), mesh)
        out = []
        for _ in range(2):
            s, m = step(s, stats, batch)
            out.append(float(m["loss_sum"]))
        runs.append(out)
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[0][1]  # a new mask (and new weights) on the second step


def test_eval_step_uses_running_statistics_and_shapes():
    mesh, state, _ = _setup(jax.devices(), clip_level=False)
    feats = np.random.default_rng(2).standard_normal((8, 20, 64)).astype(np.float32)
    stats = sharding.replicate((np.zeros(64, np.float32), np.ones(64, np.float32)), mesh)
    frames, labels = np.full(8, 20, np.int32), np.zeros((8, 10), np.float32)
    predict = parallel.eval_step_fn(common.frame_outputs, mesh, resident=False)
    probs = predict(state, stats, sharding.shard_batch(_batch(feats, frames, labels), mesh))
    assert probs.shape == (8, 20, 10)
    single = predict(state, stats, sharding.shard_batch(
        _batch(np.concatenate([feats[:1]] * 8), frames, labels), mesh))
    # running statistics: a clip's output does not depend on the rest of its batch
    np.testing.assert_allclose(np.asarray(single)[0], np.asarray(probs)[0], atol=1e-5)
