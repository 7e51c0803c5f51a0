"""Augmentation on the device: same-kind mixup pairs and soft labels, masks, label-true shifts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedjax.train import augment


def test_partners_are_a_permutation_within_each_kind():
    kind = jnp.array([0, 0, 1, 1, 1, 2, 0, 1, 2, 2, 0, 2])
    seen = set()
    for seed in range(20):
        partner = np.asarray(augment.same_kind_partner(jax.random.key(seed), kind))
        assert sorted(partner) == list(range(len(kind)))  # a permutation
        np.testing.assert_array_equal(np.asarray(kind)[partner], kind)  # never across kinds
        assert (partner != np.arange(len(kind))).all()  # every group has >= 2 rows here
        seen.add(tuple(partner))
    assert len(seen) > 5  # random, not a fixed pairing
    single = np.asarray(augment.same_kind_partner(jax.random.key(0), jnp.array([0, 1, 1])))
    assert single[0] == 0  # alone in its kind: mixed with itself (no change)


def test_mixup_mixes_inputs_and_labels_with_the_same_lambda():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((8, 5, 3)), jnp.float32)
    weak = jnp.asarray(rng.random((8, 4)) < 0.5, jnp.float32)
    strong = jnp.asarray(rng.random((8, 5, 4)) < 0.5, jnp.float32)
    kind = jnp.array([0, 0, 0, 0, 2, 2, 2, 2])
    key = jax.random.key(3)
    (mx, mw, ms), lam = augment.mixup(key, (x, weak, strong), kind, alpha=0.2, share=1.0)
    lam = float(lam)
    assert 0.5 <= lam <= 1.0
    partner = np.asarray(augment.same_kind_partner(jax.random.split(key, 3)[2], kind))
    for a, m in ((x, mx), (weak, mw), (strong, ms)):
        a = np.asarray(a)
        np.testing.assert_allclose(m, lam * a + (1 - lam) * a[partner], rtol=1e-6, atol=1e-6)
    assert lam < 1.0 and not np.allclose(mw, weak)  # labels became soft
    (nx, nw, _), off = augment.mixup(key, (x, weak, strong), kind, alpha=0.2, share=0.0)
    assert float(off) == 1.0
    np.testing.assert_array_equal(nx, x)
    np.testing.assert_array_equal(nw, weak)


def test_masks_zero_one_time_span_and_one_band_span_per_clip_inside_jit():
    x = jnp.ones((16, 50, 64))
    masked = np.asarray(jax.jit(augment.mask_time_frequency, static_argnums=(2, 3))(
        jax.random.key(1), x, 10, 8))
    assert masked.shape == x.shape
    for clip in masked:
        dead_frames = np.flatnonzero((clip == 0).all(axis=1))
        dead_bands = np.flatnonzero((clip == 0).all(axis=0))
        for dead, widest in ((dead_frames, 10), (dead_bands, 8)):
            assert len(dead) <= widest
            if len(dead):  # one contiguous span
                assert dead[-1] - dead[0] + 1 == len(dead)
    widths = [len(np.flatnonzero((c == 0).all(axis=1))) for c in masked]
    assert max(widths) > 0 and len(set(widths)) > 1  # masks drawn per clip
    np.testing.assert_array_equal(augment.mask_time_frequency(jax.random.key(1), x, 0, 0), x)


def test_time_shift_moves_frame_targets_with_the_audio():
    pool = 4
    x = jnp.zeros((6, 40, 2)).at[:, 8:12, :].set(1.0)  # an event in input frames 8..11
    targets = jnp.zeros((6, 10, 3)).at[:, 2, 1].set(1.0)  # = output frame 2
    sx, st = augment.time_shift(jax.random.key(5), x, targets, max_shift=12, time_pooling=pool)
    sx, st = np.asarray(sx), np.asarray(st)
    shifts = set()
    for clip_x, clip_t in zip(sx, st):
        out_frame = int(np.flatnonzero(clip_t[:, 1])[0])
        in_frames = np.flatnonzero(clip_x[:, 0])
        assert list(in_frames) == list(range(out_frame * pool, out_frame * pool + pool))
        assert min((out_frame - 2) % 10, (2 - out_frame) % 10) <= 3  # rolled, wrapping
        shifts.add(out_frame)
    assert len(shifts) > 1
    same = augment.time_shift(jax.random.key(5), x, targets, max_shift=3, time_pooling=pool)
    np.testing.assert_array_equal(same[0], x)  # under one output frame: no shift


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_mixup_share_decides_how_often_batches_are_mixed(share):
    x = jnp.arange(8.0).reshape(4, 2)
    kind = jnp.zeros(4, jnp.int32)
    mixed = [float(augment.mixup(jax.random.key(s), (x,), kind, 0.4, share)[1])
             for s in range(30)]
    assert all(m == 1.0 for m in mixed) if share == 0.0 else all(m < 1.0 for m in mixed)
