"""Input pipeline: resident (gather on device) and streamed (memmap + prefetch) give the same."""

import jax
import ml_collections
import numpy as np
import pytest

from configs import baseline
from sedjax.data import pipeline
from sedjax.recipes import common
from sedjax.system import sharding
from sedjax.train import loop, stacked_runs


def _runtime(mode: str, fraction: float = 0.5, prefetch: int = 2):
    return ml_collections.ConfigDict({"features_on_device": mode, "prefetch": prefetch,
                                      "device_memory_fraction": fraction})


def _arrays(tmp_path, n=13, t=20):
    rng = np.random.default_rng(0)
    path = tmp_path / "feats.npy"
    feats = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, t, 64))
    feats[...] = rng.standard_normal((n, t, 64))
    feats.flush()
    frames = rng.integers(5, t + 1, n).astype(np.int32)
    labels = (rng.random((n, 10)) < 0.3).astype(np.float32)
    return pipeline.SplitArrays(np.load(path, mmap_mode="r"), frames, labels)


def test_index_batches_pad_or_drop_and_check_divisibility(tmp_path):
    mesh = sharding.make_mesh(jax.devices())  # 4 fake devices
    b = pipeline.Batches(_arrays(tmp_path), mesh, (np.zeros(64), np.ones(64)), _runtime("never"))
    rows = np.array([5, 3, 8, 1, 0, 12, 7, 2, 9, 4])
    kept = b.index_batches(rows, 4, drop_remainder=False)
    assert [list(x) for x in kept] == [[5, 3, 8, 1], [0, 12, 7, 2], [9, 4, 5, 5]]
    assert len(b.index_batches(rows, 4, drop_remainder=True)) == 2
    with pytest.raises(ValueError, match="not divisible"):
        b.index_batches(rows, 6, drop_remainder=True)


def test_streamed_host_batch_keeps_batch_order(tmp_path):
    arrays = _arrays(tmp_path)
    b = pipeline.Batches(arrays, sharding.make_mesh(jax.devices()[:1]),
                         (np.zeros(64), np.ones(64)), _runtime("never"))
    index = np.array([9, 2, 11, 2], np.int32)  # unsorted, with a repeat (padding)
    batch = b.arrays.rows(index)
    np.testing.assert_array_equal(batch["features"], np.asarray(arrays.features)[index])
    np.testing.assert_array_equal(batch["frames"], arrays.frames[index])
    np.testing.assert_array_equal(batch["labels"], arrays.labels[index])


def test_resident_and_streamed_predictions_are_equal(tmp_path):
    arrays = _arrays(tmp_path)
    mesh = sharding.make_mesh(jax.devices())
    stats = (np.asarray(arrays.features).mean((0, 1)), np.asarray(arrays.features).std((0, 1)))
    config = baseline.get_config()
    config.features.num_frames = 20
    state = sharding.replicate(stacked_runs.stack([common.init_state(config, "pass2")]), mesh)
    rows = np.random.default_rng(1).permutation(len(arrays))
    out = {}
    for mode in ("always", "never"):
        b = pipeline.Batches(arrays, mesh, stats, _runtime(mode, prefetch=1))
        assert b.resident == (mode == "always")
        out[mode] = loop.predict(common.eval_fn("frame", b), state, b, rows[None], 8)[0]
    assert out["always"].shape == (len(rows), 20, 10)
    np.testing.assert_allclose(out["always"], out["never"], atol=1e-6)


def test_auto_mode_keeps_features_on_device_only_when_they_fit():
    assert pipeline.fits_on_device(1 << 20, _runtime("auto"))
    assert not pipeline.fits_on_device(1 << 20, _runtime("auto", fraction=1e-9))
    assert pipeline.fits_on_device(1 << 50, _runtime("always"))
    assert not pipeline.fits_on_device(1, _runtime("never"))
