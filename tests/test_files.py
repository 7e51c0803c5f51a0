"""Atomic writes: the final name appears only with complete content."""

import numpy as np
import pytest

from sedjax.system import files


def test_save_npy_round_trip_and_no_leftovers(tmp_path):
    path = tmp_path / "sub" / "a.npy"
    files.save_npy(path, np.arange(6, dtype=np.int16).reshape(2, 3))
    np.testing.assert_array_equal(np.load(path, mmap_mode="r"), np.arange(6).reshape(2, 3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.npy"]


def test_failed_write_leaves_neither_final_nor_temporary_file(tmp_path):
    path = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with files.atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-way")
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_old_content(tmp_path):
    path = tmp_path / "out.txt"
    files.write_text(path, "old")
    files.write_text(path, "new")
    assert path.read_text() == "new"
