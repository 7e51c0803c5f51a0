"""Pre-extracted per-clip frame embeddings (DESED_task's BEATs system), read per split.

`model.embeddings.dir` holds one file per split, named after sedjax's split (weak,
unlabel_in_domain, synthetic, validation, test, eval): `<split>.hdf5` as DESED_task's
`extract_embeddings.py` writes it (datasets `filenames` and `frame_embeddings` (N, D, T)),
or `<split>.npz` with the same two arrays. Rows are matched to the split's clips by file name
without extension (DESED_task stores the wav stem); DESED_task's names map as weak_train ->
weak, unlabeled_train -> unlabel_in_domain, synth_train -> synthetic, devtest -> validation.
`python -m sedjax.embed` writes such files from sedjax's own BEATs.

With `model.embeddings.source = 'beats'` a run computes the embeddings itself instead
(sedjax.data.beats_embeddings); `used` says whether a model reads embeddings at all.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np

from sedjax.data.dataset import AUDIO_EXTENSIONS, DatasetError


def used(model_config) -> bool:
    """Whether config.model reads frame embeddings: computed by sedjax's BEATs
    (embeddings.source 'beats') or read from files (source 'files' and a dir)."""
    e = model_config.embeddings
    return e.source == "beats" or bool(e.dir)


def stem(name: str) -> str:
    """A clip's name without its audio extension ('Y1_0.000_10.000.wav' -> 'Y1_0.000_10.000')."""
    path = pathlib.Path(name)
    return path.stem if path.suffix.lower() in AUDIO_EXTENSIONS else path.name


def _read(path: pathlib.Path) -> tuple[list[str], np.ndarray]:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            return [str(n) for n in f["filenames"]], f["frame_embeddings"]
    try:
        import h5py
    except ImportError:
        raise DatasetError(f"{path}: reading hdf5 embeddings needs h5py (pip install h5py), "
                           "or save them as .npz") from None
    with h5py.File(path, "r") as f:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["filenames"][:]]
        return names, f["frame_embeddings"][:]


def load(folder, split: str, filenames: Sequence[str], frames: int, size: int) -> np.ndarray:
    """(N, frames, size) float32 embeddings of a split's clips, in `filenames`' order;
    DatasetError naming the file when it is missing, misshapen or lacks a clip."""
    folder = pathlib.Path(folder).expanduser()
    found = [folder / f"{split}{ext}" for ext in (".hdf5", ".h5", ".npz")]
    path = next((p for p in found if p.is_file()), None)
    if path is None:
        raise DatasetError(f"{folder}: no embeddings of split {split!r} "
                           f"({split}.hdf5 or {split}.npz)")
    try:
        names, values = _read(path)
    except (OSError, KeyError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read embeddings ({e})") from None
    if values.ndim != 3 or values.shape[1:] != (size, frames) or len(values) != len(names):
        raise DatasetError(f"{path}: frame_embeddings of shape {values.shape} for "
                           f"{len(names)} filenames; expected (N, {size}, {frames}) "
                           "(model.embeddings.size, model.embeddings.frames)")
    row = {stem(n): i for i, n in enumerate(names)}
    missing = [f for f in filenames if stem(f) not in row]
    if missing:
        raise DatasetError(f"{path}: no embeddings for {len(missing)} clips of split "
                           f"{split!r}, e.g. {missing[0]}")
    index = [row[stem(f)] for f in filenames]
    out = np.ascontiguousarray(np.asarray(values[index], np.float32).transpose(0, 2, 1))
    bad = np.flatnonzero(~np.isfinite(out).all(axis=(1, 2)))
    if len(bad):  # a NaN would reach every weight through the GRU
        raise DatasetError(f"{path}: the embeddings of {len(bad)} clips of split {split!r} "
                           f"are not finite (NaN or inf), e.g. {filenames[bad[0]]}")
    return out
