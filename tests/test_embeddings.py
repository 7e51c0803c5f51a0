"""Pre-extracted frame embeddings (DESED_task's BEATs system) read per split and joined to the
DESED CRNN's features before the GRU."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs.baseline import CLASSES
from sedjax.data import dataset, embeddings, synthetic

ROOT = pathlib.Path(__file__).parents[1]
SIZE, FRAMES = 16, 20  # small stand-ins for BEATs' 768 x 496


def _write(folder, split, names, seed):
    """DESED_task's layout of embeddings: filenames (wav stems) and (N, size, frames)."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((len(names), SIZE, FRAMES)).astype(np.float32)
    np.savez(folder / f"{split}.npz", filenames=np.array([n.removesuffix(".wav") for n in names]),
             frame_embeddings=values)
    return values


def test_rows_follow_the_split_and_frames_come_first(tmp_path):
    names = ["a.wav", "b.wav", "c.wav"]
    values = _write(tmp_path, "weak", names[::-1], 0)  # stored in another order
    got = embeddings.load(tmp_path, "weak", names, FRAMES, SIZE)
    assert got.shape == (3, FRAMES, SIZE)
    np.testing.assert_array_equal(got[0], values[2].T)  # a.wav was stored last
    with pytest.raises(dataset.DatasetError, match="no embeddings for 1 clips.*d.wav"):
        embeddings.load(tmp_path, "weak", names + ["d.wav"], FRAMES, SIZE)
    with pytest.raises(dataset.DatasetError, match=r"expected \(N, 16, 21\)"):
        embeddings.load(tmp_path, "weak", names, 21, SIZE)
    with pytest.raises(dataset.DatasetError, match="no embeddings of split 'test'"):
        embeddings.load(tmp_path, "test", names, FRAMES, SIZE)


def test_a_run_with_embeddings_trains_the_larger_model(tmp_path):
    root = synthetic.generate(tmp_path / "d", num_weak=8, num_unlabeled=8, num_test=8,
                              num_strong=8, num_validation=8, seed=3, sample_rate=16000,
                              clip_seconds=2.0, num_workers=1, layout="desed")
    splits = dataset.load_dataset(root, CLASSES, tmp_path / "scratch", use_strong=True,
                                  layout="desed", sample_rate=16000)
    folder = tmp_path / "emb"
    folder.mkdir()
    for k, (name, split) in enumerate(splits.items()):
        _write(folder, name, split.filenames, k)
    cmd = [sys.executable, "-m", "sedjax.main", "--config=configs/tiny_desed.py",
           f"--workdir={tmp_path / 'w'}", "--config.data.dataset=desed",
           f"--config.data.root={root}", f"--config.model.embeddings.dir={folder}",
           f"--config.model.embeddings.size={SIZE}", f"--config.model.embeddings.frames={FRAMES}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # DESED_task's CRNN plus cat_tf = Linear(128 + 16, 128): 1,112,420 + 18,560
    assert "mean_teacher model: 1130980 parameters" in proc.stderr
    results = json.loads((tmp_path / "w/results.json").read_text())
    assert results["test"]["threshold_independent"]["num_files"] == 8
