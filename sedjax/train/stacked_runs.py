"""The runs of one program (config.num_runs = K; one run is K = 1), trained as one jitted program.

Run k uses seed + k for everything a single run derives from config.seed (init and dropout
keys, validation rows, data order), so it reproduces the single run of that seed. The train
state carries a leading run axis; the per-device steps are mapped over it
(sedjax.train.parallel) and stay data parallel over the devices. With one run the mapped step
is the single-run program itself, so K = 1 gives the numbers of a plain run bit for bit.
Each run's own outputs go to run_dirs(workdir, K)[k]: the workdir itself for one run.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable, Sequence

import jax
import numpy as np

from sedjax.data import pipeline
from sedjax.system import sharding
from sedjax.train import loop, parallel


def stack(trees: Sequence) -> object:
    """K pytrees of one structure -> one pytree of host arrays with a leading run axis.

    Static fields (e.g. a TrainState's apply_fn and optimizer) are taken from the first tree.
    """
    leaves = [jax.tree_util.tree_leaves(jax.device_get(t)) for t in trees]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(trees[0]),
                                        [np.stack([np.asarray(x) for x in xs])
                                         for xs in zip(*leaves)])


def take(tree, k: int):
    """Run k of a run-axis pytree, as host arrays (every process holds the replicated state)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x))[k], tree)


def shared_batch_size(batch_size: int, num_runs: int, num_devices: int) -> int:
    """Clips per run when `num_runs` runs share a batch of `batch_size`: batch_size //
    num_runs rounded down to a multiple of num_devices, at least num_devices."""
    per_run = batch_size // num_runs // num_devices * num_devices
    return max(per_run, num_devices)


def learning_rate_lists(config) -> dict:
    """{section: its `learning_rates` (one per run)} of the sections that have a non-empty one."""
    return {name: tuple(config[name].learning_rates) for name in config
            if hasattr(config[name], "keys") and config[name].get("learning_rates")}


def run_configs(config) -> list:
    """One config per run: [config] for one run without learning-rate lists, else copies with
    seed + k, num_runs 1 and, in a section with `learning_rates`, learning_rate = its k-th."""
    count, lists = config.num_runs, learning_rate_lists(config)
    if count == 1 and not lists:
        return [config]
    out = []
    for k in range(count):
        c = config.copy_and_resolve_references()
        with c.unlocked():
            c.seed, c.num_runs = config.seed + k, 1
            for name, rates in lists.items():
                c[name].learning_rate = float(rates[k])
        out.append(c)
    return out


def run_dirs(workdir: pathlib.Path, count: int) -> list[pathlib.Path]:
    """Where each run's own outputs go: [workdir] for one run, else [workdir/run0, ...]."""
    workdir = pathlib.Path(workdir)
    return [workdir] if count == 1 else [workdir / f"run{k}" for k in range(count)]


class StackedRuns:
    """The K runs of a config: per-run configs, and the run-axis state, steps, epochs and
    predictions a recipe builds from; it trains them with sedjax.train.loop.fit."""

    def __init__(self, config, mesh):
        self.configs, self.mesh = run_configs(config), mesh

    @property
    def count(self) -> int:
        return len(self.configs)

    def state(self, make: Callable):
        """make(run config) -> a run's host state; returns them stacked on a run axis and
        replicated over the mesh."""
        return sharding.replicate(stack([make(c) for c in self.configs]), self.mesh)

    def train_step_fn(self, step: Callable, batches: pipeline.Batches):
        """The jitted data-parallel step for these batches, mapped over the run axis."""
        return parallel.train_step_fn(step, batches.mesh, batches.resident, runs=True)

    def run_epoch(self, step_fn, batches: pipeline.Batches, orders: Sequence[np.ndarray],
                  batch_size: int, state, resume: loop.EpochPosition | None):
        """One epoch, each run over its own row order; (state, metric sums ((K,) per key)).
        resume: the train_epoch argument of loop.fit (None, or an interrupted epoch's position)."""
        return loop.run_epoch(step_fn, batches, np.stack(orders), batch_size, state, resume)

    def predict(self, eval_fn, state, batches: pipeline.Batches, rows: Sequence[np.ndarray],
                batch_size: int) -> list[np.ndarray]:
        """Each run's outputs on its own rows (rows of one length for every run).

        K runs share one batch of `batch_size` clips (batch_size // K each, rounded down to a
        multiple of the device count): a step's activations grow with K (docs/speed.md).
        """
        per_run = shared_batch_size(batch_size, self.count, sharding.num_shards(self.mesh))
        return list(loop.predict(eval_fn, state, batches, np.stack(rows), per_run))

    def label(self, summaries: list) -> list:
        """The recipe's training summaries (sedjax.reporting.summary.TrainingSummary) with, for
        K > 1 runs, each run's seed and its learning rates (when the config lists them)."""
        if self.count == 1:
            return summaries
        lists = learning_rate_lists(self.configs[0])
        out = []
        for c, s in zip(self.configs, summaries):
            rates = {n: c[n].learning_rate for n in lists} or None
            out.append(dataclasses.replace(s, seed=c.seed, learning_rates=rates))
        return out
