"""Batches for the data-parallel steps: resident on the device and gathered by index, or streamed.

A split's raw log-mel (memmap), valid-frame counts and targets go to the device once when they
fit; each step then only receives the (runs, global_batch) row indices, and normalization and
padding happen inside the jitted step. Otherwise rows are gathered on the host from the memmap
and sent with a prefetch of `runtime.prefetch` batches. Batches always carry a leading run axis
(config.num_runs; one run is K = 1).
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
from typing import Iterator

import jax
import numpy as np
from absl import logging

from sedjax.system import sharding


@dataclasses.dataclass
class SplitArrays:
    """Host view of a split: raw features (N, T, F) memmap, valid frames (N,), targets (N, C).

    `extra`: more per-row arrays a recipe's step reads (e.g. frame targets, the clip's kind).
    """

    features: np.ndarray
    frames: np.ndarray
    labels: np.ndarray
    extra: dict = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.features)

    def rows(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """The step inputs of rows `index` as a dict (features read in file order)."""
        order = np.argsort(index)  # memmap reads in file order, then back to batch order
        inverse = np.argsort(order)
        return {"features": np.asarray(self.features[index[order]])[inverse],
                "frames": np.asarray(self.frames[index], np.int32),
                "labels": np.asarray(self.labels[index], np.float32),
                **{k: np.asarray(v[index]) for k, v in self.extra.items()}}


class ConcatRows:
    """Several arrays (e.g. the feature memmaps of several splits) read as one, without a copy."""

    def __init__(self, parts):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = (int(self.offsets[-1]), *self.parts[0].shape[1:])
        self.dtype = self.parts[0].dtype
        self.nbytes = sum(p.nbytes for p in self.parts)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        index = np.asarray(index)
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        part = np.searchsorted(self.offsets, index, side="right") - 1
        for k in np.unique(part):
            mask = part == k
            out[mask] = self.parts[k][index[mask] - self.offsets[k]]
        return out

    def __array__(self, dtype=None, copy=None):
        return self[np.arange(len(self))].astype(dtype or self.dtype, copy=False)


class RowSubset:
    """Rows `rows` of an array (a memmap, ConcatRows, ...) read as one array, without a copy.

    Indexed along the first axis like a numpy array: by an int, a slice or an index array.
    """

    def __init__(self, base, rows):
        self.base = base
        self.rows = np.asarray(rows, np.int64).reshape(-1)
        self.shape = (len(self.rows), *base.shape[1:])
        self.dtype = np.dtype(base.dtype)
        self.ndim = len(self.shape)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        rows = self.rows[key]
        if np.ndim(rows) == 0:  # one row, by an int
            return self._read(np.reshape(rows, 1))[0]
        return self._read(rows)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        order = np.argsort(rows, kind="stable")  # the base read in file order
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        out[order] = self.base[rows[order]]
        return out

    def __array__(self, dtype=None, copy=None):
        return self[np.arange(len(self))].astype(dtype or self.dtype, copy=False)


def take_rows(array, rows) -> RowSubset:
    """Rows `rows` of `array` without a copy (a view of a view reads the base directly)."""
    if isinstance(array, RowSubset):
        return RowSubset(array.base, array.rows[np.asarray(rows)])
    return RowSubset(array, rows)


def join_rows(parts) -> RowSubset:
    """Several arrays (e.g. one feature memmap per process share) as one, without a copy."""
    joined = ConcatRows(parts)
    return RowSubset(joined, np.arange(len(joined)))


def fits_on_device(nbytes: int, runtime_config) -> bool:
    """Whether `nbytes` of features may live on every device (runtime.features_on_device)."""
    mode = runtime_config.features_on_device
    if mode in ("always", "never"):
        return mode == "always"
    stats = jax.local_devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    if limit is None:  # CPU: "device" memory is host RAM; stay well below a laptop's
        limit = 8 << 30
    return nbytes <= runtime_config.device_memory_fraction * limit


class Batches:
    """Global batches of one split's rows over a device mesh, for K runs at once (K >= 1).

    Each run draws its own rows: `__call__` takes rows (K, n) and yields steps of (K, B) rows,
    the run axis first (sedjax.train.parallel maps the step over it). run_data: arrays that
    differ per run, (K, N, ...) (e.g. pass-2 pseudo-labels), replacing the split's array of
    that name in each run's batches; the split's own device copy is shared by every run.
    """

    def __init__(self, arrays: SplitArrays, mesh, stats: tuple[np.ndarray, np.ndarray],
                 runtime_config, run_data: dict | None = None, _shared: "Batches" = None):
        self.arrays, self.mesh, self.runtime = arrays, mesh, runtime_config
        self.run_data = dict(run_data or {})
        if _shared is not None:  # with_run_data: the same split, already placed
            self.stats, self.resident = _shared.stats, _shared.resident
            self.device_arrays = _shared.device_arrays
        else:
            self.stats = sharding.replicate(tuple(np.asarray(s, np.float32) for s in stats),
                                            mesh)
            # every per-row array goes to the device: a split's embeddings (or BEATs fbank)
            # may outweigh its features
            nbytes = sum(int(a.nbytes) for a in (arrays.features, *arrays.extra.values())
                         ) * sharding.num_shards(mesh)
            self.resident = fits_on_device(nbytes, runtime_config)
            self.device_arrays = None
            if self.resident:
                self.device_arrays = sharding.replicate(arrays.rows(np.arange(len(arrays))),
                                                        mesh)
            logging.info("%d clips %s", len(arrays), "resident on the device(s)"
                         if self.resident else "streamed from the memmap cache")
        self.device_run_data = (sharding.replicate(
            {k: np.asarray(v, np.float32 if k == "labels" else None)
             for k, v in self.run_data.items()}, mesh) if self.resident else None)

    def with_run_data(self, run_data: dict) -> "Batches":
        """These batches with per-run arrays (K, N, ...) replacing the split's of that name."""
        return Batches(self.arrays, self.mesh, None, self.runtime, run_data, _shared=self)

    def index_batches(self, rows: np.ndarray, batch_size: int, drop_remainder: bool
                      ) -> list[np.ndarray]:
        """Splits `rows` into global batches; the last is padded (with row 0s) unless dropped."""
        shards = sharding.num_shards(self.mesh)
        if batch_size % shards:
            raise ValueError(f"batch size {batch_size} is not divisible by the {shards} devices")
        n = len(rows) // batch_size * batch_size if drop_remainder else len(rows)
        out = []
        for start in range(0, n, batch_size):
            index = rows[start: start + batch_size]
            if len(index) < batch_size:
                index = np.concatenate([index, np.full(batch_size - len(index), rows[0])])
            out.append(np.asarray(index, np.int32))
        return out

    def rows(self, k: int, index: np.ndarray) -> dict:
        """Run k's step inputs of rows `index` (host arrays)."""
        out = self.arrays.rows(index)
        for name, v in self.run_data.items():
            out[name] = np.asarray(v[k][index], out[name].dtype if name in out else None)
        return out

    def __call__(self, rows: np.ndarray, batch_size: int, drop_remainder: bool
                 ) -> Iterator[tuple]:
        """Yields step inputs of rows (K, n): (data, run_data, index (K, B)) when resident,
        else ((K, B, ...) batch dict,) read on the host `runtime.prefetch` batches ahead."""
        per_run = [self.index_batches(r, batch_size, drop_remainder) for r in rows]
        batches = [np.stack(b) for b in zip(*per_run)]
        if self.resident:
            for index in batches:
                yield (self.device_arrays, self.device_run_data,
                       sharding.shard_runs(index, self.mesh))
            return

        def read(index):
            runs = [self.rows(k, i) for k, i in enumerate(index)]
            return {name: np.stack([r[name] for r in runs]) for name in runs[0]}
        ahead_n = self.runtime.prefetch
        with futures.ThreadPoolExecutor(1) as pool:
            ahead = [pool.submit(read, b) for b in batches[:ahead_n]]
            for i in range(len(batches)):
                batch = ahead.pop(0).result()
                if i + ahead_n < len(batches):
                    ahead.append(pool.submit(read, batches[i + ahead_n]))
                yield (sharding.shard_runs(batch, self.mesh),)
