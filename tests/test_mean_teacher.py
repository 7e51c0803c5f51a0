"""The mean-teacher recipe: EMA teacher, consistency ramp-up, batch mix, data-parallel step."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny_mean_teacher
from sedjax.data import dataset
from sedjax.models import time_grid
from sedjax.recipes import mean_teacher as mt
from sedjax.system import sharding
from sedjax.train import parallel


def test_ema_decay_starts_low_and_caps_at_the_configured_decay():
    steps = jnp.array([0, 1, 9, 99, 10_000])
    np.testing.assert_allclose(mt.ema_decay(steps, 0.999), [0.0, 0.5, 0.9, 0.99, 0.999],
                               rtol=1e-6)


def test_ema_update_is_the_weighted_average_leaf_by_leaf():
    ema = {"a": jnp.array([1.0, 2.0]), "b": {"c": jnp.array(4.0)}}
    new = {"a": jnp.array([3.0, 6.0]), "b": {"c": jnp.array(0.0)}}
    out = mt.ema_update(ema, new, jnp.float32(0.75))
    np.testing.assert_allclose(out["a"], [1.5, 3.0])
    np.testing.assert_allclose(out["b"]["c"], 3.0)


def test_consistency_weight_ramps_up_as_a_sigmoid_then_holds():
    w = [float(mt.consistency_weight(jnp.array(s), 2.0, 100)) for s in (0, 50, 100, 500)]
    np.testing.assert_allclose(w, [2 * np.exp(-5.0), 2 * np.exp(-1.25), 2.0, 2.0], rtol=1e-6)
    assert float(mt.consistency_weight(jnp.array(0), 2.0, 0)) == 2.0  # no ramp-up


def test_mixed_batches_hold_each_kind_in_its_configured_count():
    parts = {mt.WEAK: (np.arange(0, 10), 3), mt.UNLABELED: (np.arange(10, 17), 4),
             mt.STRONG: (np.arange(17, 22), 1)}
    order = mt.mixed_order(np.random.default_rng(0), parts, steps=6).reshape(6, 8)
    assert ((order[:, :3] < 10)).all()
    assert ((order[:, 3:7] >= 10) & (order[:, 3:7] < 17)).all()
    assert (order[:, 7] >= 17).all()
    # every clip of a part is drawn once before any is drawn twice
    weak = order[:, :3].reshape(-1)
    assert sorted(weak[:10]) == list(range(10)) and len(set(weak[:10])) == 10
    unl = order[:, 3:7].reshape(-1)
    assert sorted(unl[:7]) == list(range(10, 17))
    assert mt.mixed_order(np.random.default_rng(0), parts, 6).tolist() == order.reshape(
        -1).tolist()  # reproducible


def _state_and_batch(devices, num_classes=10):
    config = tiny_mean_teacher.get_config()
    config.features.num_frames = 40
    config.model.conv_dropout = config.model.gru_input_dropout = 0.0
    config.mean_teacher.adam_eps = 1e-4  # see test_two_pass_steps: float noise vs Adam's eps
    mesh = sharding.make_mesh(devices)
    state = mt.new_state(config, mesh)
    rng = np.random.default_rng(0)
    b, t_out = 8, 10
    # the kinds are spread unevenly: device 0 of 4 holds only weak clips
    kind = np.array([0, 0, 1, 1, 2, 0, 1, 2], np.int32)
    batch = {"features": rng.standard_normal((b, 40, 64)).astype(np.float32),
             "frames": np.full(b, 40, np.int32),
             "labels": (rng.random((b, num_classes)) < 0.3).astype(np.float32),
             "kind": kind,
             "strong": (rng.random((b, t_out, num_classes)) < 0.3).astype(np.uint8)}
    settings = mt.StepSettings(bce_eps=1e-7, ema_decay=0.9, consistency_weight=2.0,
                               rampup_steps=4, mixup_share=0.0, mixup_alpha=0.2, time_mask=0,
                               freq_mask=0, time_shift=0, time_pooling=4)
    return mesh, state, batch, settings


def _steps(devices, n=3):
    mesh, state, batch, settings = _state_and_batch(devices)
    step = parallel.train_step_fn(functools.partial(mt.train_step, settings=settings), mesh,
                                  resident=False)
    stats = sharding.replicate((np.zeros(64, np.float32), np.ones(64, np.float32)), mesh)
    history = []
    for _ in range(n):
        before = jax.device_get(state)
        state, sums = step(state, stats, sharding.shard_batch(batch, mesh))
        history.append((before, jax.device_get(state), jax.device_get(sums)))
    return history


def test_one_and_four_devices_give_the_same_student_and_teacher():
    one, four = _steps(jax.devices()[:1]), _steps(jax.devices())
    for (_, a, sa), (_, b, sb) in zip(one, four):
        for tree in ("params", "ema_params", "batch_stats", "ema_batch_stats"):
            for x, y in zip(jax.tree_util.tree_leaves(getattr(a, tree)),
                            jax.tree_util.tree_leaves(getattr(b, tree))):
                np.testing.assert_allclose(x, y, atol=2e-5, err_msg=tree)
        for key in ("loss_sum", "weak_sum", "strong_sum", "consistency_sum"):
            # atol: the first step's consistency is float32 noise (~1e-14): student == teacher
            np.testing.assert_allclose(sa[key] / sa["count"], sb[key] / sb["count"], rtol=1e-4,
                                       atol=1e-9)


def test_the_teacher_follows_the_student_by_ema_and_the_losses_are_reported():
    history = _steps(jax.devices()[:1], n=3)
    for before, after, sums in history:
        decay = float(mt.ema_decay(jnp.array(after.step), 0.9))
        for e0, p1, e1 in zip(jax.tree_util.tree_leaves(before.ema_params),
                              jax.tree_util.tree_leaves(after.params),
                              jax.tree_util.tree_leaves(after.ema_params)):
            np.testing.assert_allclose(e1, decay * e0 + (1 - decay) * p1, rtol=1e-5, atol=1e-6)
        means = {k[:-4]: v / sums["count"] for k, v in sums.items() if k.endswith("_sum")}
        weight = float(mt.consistency_weight(jnp.array(before.step), 2.0, 4))
        assert means["consistency_weight"] == pytest.approx(weight, rel=1e-5)
        assert means["loss"] == pytest.approx(
            means["weak"] + means["strong"] + weight * means["consistency"], rel=1e-4)
        assert means["weak"] > 0 and means["strong"] > 0
    first_before, first_after, _ = history[0]
    # step 1: decay min(1 - 1/2, 0.9) = 0.5, so the teacher moved halfway to the student
    assert int(first_after.step) == 1
    moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(
        jax.tree_util.tree_leaves(first_before.ema_params),
        jax.tree_util.tree_leaves(first_after.ema_params))]
    assert max(moved) > 0


def test_predicting_with_the_teacher_swaps_in_its_weights():
    mesh, state, _, _ = _state_and_batch(jax.devices()[:1])
    state = state.replace(ema_params=jax.tree_util.tree_map(lambda x: x + 1, state.ema_params))
    teacher = state.teacher()
    for x, y in zip(jax.tree_util.tree_leaves(teacher.params),
                    jax.tree_util.tree_leaves(state.ema_params)):
        np.testing.assert_array_equal(x, y)
    assert dataclasses.fields(teacher) == dataclasses.fields(state)


def test_held_out_strong_clips_are_scored_on_events_after_post_processing():
    config = tiny_mean_teacher.get_config()
    config.data.classes = ("Cat", "Dog")
    events = [[(1.0, 3.0, "Cat"), (5.0, 8.0, "Dog")], [(2.0, 4.0, "Cat"), (6.0, 9.0, "Dog")],
              [(0.5, 2.5, "Dog")]]
    split = dataset.Split("synthetic", ["a.wav", "b.wav", "c.wav"], [], None, events)
    seconds = time_grid.frame_seconds(config)
    probs = dataset.strong_labels(events, config.data.classes, 125, seconds) * 0.9
    frames = np.full(3, config.features.num_frames)
    rows = np.arange(3)
    assert mt.strong_event_f1(config, split, rows, probs, frames) == pytest.approx(1.0)
    # clip b's Cat predicted 1.5 s late: outside the 0.2 s onset collar -> a miss plus an
    # insertion; Cat P = R = 1/2, Dog intact: macro F1 0.75
    late = probs.copy()
    late[1] = dataset.strong_labels([[(3.5, 5.5, "Cat"), (6.0, 9.0, "Dog")]],
                                    config.data.classes, 125, seconds)[0]
    assert mt.strong_event_f1(config, split, rows, late, frames) == pytest.approx(0.75)
    # a 3-frame blip below the median filter's 7 frames is removed, as on the test split
    blip = probs.copy()
    blip[2, 100:103, 0] = 1.0
    assert mt.strong_event_f1(config, split, rows, blip, frames) == pytest.approx(1.0)
    # only the given rows count (their probabilities in the rows' order)
    assert mt.strong_event_f1(config, split, np.array([1]), late[1:2], frames[:1]
                              ) == pytest.approx(0.5)  # Cat 0, Dog 1
    # below the post-processing threshold nothing is detected
    assert mt.strong_event_f1(config, split, rows, probs * 0.5, frames) == pytest.approx(0.0)


def test_mask_teacher_masks_the_teachers_input_with_masks_of_its_own():
    """mean_teacher.augment.mask_teacher (DESED_task's CRNN masks in train mode, teacher too)."""
    x = np.ones((6, 40, 64), np.float32)
    batch = {"features": x, "labels": np.zeros((6, 10), np.float32),
             "kind": np.zeros(6, np.int32), "strong": np.zeros((6, 10, 10), np.uint8)}
    s = mt.StepSettings(bce_eps=1e-7, ema_decay=0.9, consistency_weight=2.0, rampup_steps=4,
                        mixup_share=0.0, mixup_alpha=0.2, time_mask=4, freq_mask=9,
                        time_shift=0, time_pooling=4)
    key = jax.random.PRNGKey(1)
    student, teacher = mt.augment_batch(key, batch, s)[:2]
    assert (np.asarray(student) == 0).any() and (np.asarray(teacher) == 1).all()
    student2, teacher2 = mt.augment_batch(key, batch, dataclasses.replace(s, mask_teacher=True))[:2]
    np.testing.assert_array_equal(student2, student)  # the student's masks do not change
    assert (np.asarray(teacher2) == 0).any() and (np.asarray(teacher2) != np.asarray(student)).any()
