"""Many runs per program (config.num_runs = K): K replicas of a recipe in one jitted program.

Run k uses seed + k for everything a single run derives from config.seed (init and dropout
keys, validation split, data order), so it reproduces the single run of that seed. The train
state carries a leading run axis; the per-device steps are vmapped over it
(sedjax.train.parallel, runs=True) and stay data parallel over the devices as before.

A recipe trains through `Runs`, written once over lists of K per-run values (rows, orders,
scores). With one run, `Runs` calls exactly the single-run functions of sedjax.train.loop and
.parallel (the same program and numbers as without this module); with K > 1 it uses the
run-axis versions here: `RunBatches` ((K, B) batches), `predict` ((K, N, ...) outputs) and
`fit` (early stopping per run, the `best` checkpoint holding each run's best state).
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import pathlib
import time
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from sedjax.runtime import sharding
from sedjax.data import pipeline
from sedjax.train import checkpoint, loop, parallel


# -------------------------------------------------------------------------- run-axis trees
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


@jax.jit
def select(mask: jax.Array, new, old):
    """Run by run, `new` where mask (K,) is set and `old` elsewhere."""
    def pick(n, o):
        return jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)
    return jax.tree_util.tree_map(pick, new, old)


def shard_runs(tree, mesh):
    """(K, B, ...) arrays (the same on every process) -> sharded over devices on axis 1."""
    spec = NamedSharding(mesh, P(None, sharding.AXIS))
    count, index = jax.process_count(), jax.process_index()

    def put(x):
        x = np.asarray(x)
        local = x.shape[1] // count
        return jax.make_array_from_process_local_data(
            spec, x[:, index * local: (index + 1) * local], x.shape)
    return jax.tree_util.tree_map(put, tree)


# ---------------------------------------------------------------------------------- batches
class RunBatches:
    """Batches of one split for K runs: each run its own rows, (K, B) per step.

    base: the split's single-run Batches (its device copy is shared by every run);
    run_data: arrays that differ per run, (K, N, ...) (e.g. pass-2 pseudo-labels), replacing
    the split's array of that name in each run's batches.
    """

    def __init__(self, base: pipeline.Batches, run_data: dict | None = None):
        self.base, self.run_data = base, dict(run_data or {})
        self.arrays, self.mesh, self.stats = base.arrays, base.mesh, base.stats
        self.resident = base.resident
        self.device_run_data = (sharding.replicate(
            {k: np.asarray(v, np.float32 if k == "labels" else None)
             for k, v in self.run_data.items()}, self.mesh) if self.resident else None)

    def rows(self, k: int, index: np.ndarray) -> dict:
        """Run k's step inputs of rows `index` (host arrays)."""
        out = self.arrays.rows(index)
        for name, v in self.run_data.items():
            out[name] = np.asarray(v[k][index], out[name].dtype if name in out else None)
        return out

    def __call__(self, rows: np.ndarray, batch_size: int, drop_remainder: bool
                 ) -> Iterator[tuple]:
        """Yields step inputs of rows (K, n): (data, run_data, index (K, B)) when resident,
        else ((K, B, ...) batch dict,)."""
        per_run = [self.base.index_batches(r, batch_size, drop_remainder) for r in rows]
        batches = [np.stack(b) for b in zip(*per_run)]
        if self.resident:
            for index in batches:
                yield self.base.device_arrays, self.device_run_data, shard_runs(index, self.mesh)
            return

        def read(index):
            runs = [self.rows(k, i) for k, i in enumerate(index)]
            return {name: np.stack([r[name] for r in runs]) for name in runs[0]}
        ahead_n = self.base.runtime.prefetch
        with futures.ThreadPoolExecutor(1) as pool:
            ahead = [pool.submit(read, b) for b in batches[:ahead_n]]
            for i in range(len(batches)):
                batch = ahead.pop(0).result()
                if i + ahead_n < len(batches):
                    ahead.append(pool.submit(read, batches[i + ahead_n]))
                yield (shard_runs(batch, self.mesh),)


def predict(eval_fn, state, batches: RunBatches, rows: np.ndarray, batch_size: int
            ) -> np.ndarray:
    """eval_fn's outputs (K, n, ...) for rows (K, n), pulled to the host once at the end."""
    outs = [eval_fn(state, batches.stats, *args)
            for args in batches(rows, batch_size, drop_remainder=False)]
    out = np.concatenate([sharding.to_host(o) for o in outs], axis=1)
    return out[:, : rows.shape[1]]


# ------------------------------------------------------------------------------------ loop
def fit(name: str, state, num_epochs: int, stopping: loop.EarlyStopping,
        train_epoch: Callable, validate: Callable, directory: pathlib.Path, writer=None,
        constants: Sequence[dict] | None = None) -> tuple:
    """loop.fit for a run-axis state: returns (best state, [LoopState per run]).

    constants: per run, what else its tensorboard scalars hold (e.g. its learning rate).

    validate(state) gives one score per run and each run stops early on its own: once its
    patience ran out, later epochs still compute for it (one program) but change neither its
    best state nor its record. The loop ends when every run stopped or at num_epochs. Both
    checkpoints hold the run-axis state (`best`: each run's best); their meta is
    {'epoch': the last finished epoch, 'runs': [LoopState of each run]}. Resumes from `latest`.
    """
    num_runs = len(jax.tree_util.tree_leaves(state)[0])
    ckpt = checkpoint.PassCheckpoints(directory)
    loops, last, best = [loop.LoopState() for _ in range(num_runs)], -1, None
    restored = ckpt.restore("latest", state)
    if restored is not None:
        state, meta = restored
        last, loops = meta["epoch"], [loop.LoopState.from_json(m) for m in meta["runs"]]
        kept = ckpt.restore("best", state)
        best = kept[0] if kept is not None else None
        logging.info("%s: resuming after epoch %d (best val scores %s)", name, last + 1,
                     " ".join(f"{r.best_score:.4f}" for r in loops))

    def meta():
        return {"epoch": last, "runs": [dataclasses.asdict(r) for r in loops]}
    try:  # an exception or Ctrl-C still finishes the checkpoints already started
        done = all(r.stopped for r in loops)
        bar = tqdm(range(last + 1, 0 if done else num_epochs), desc=name, unit="epoch",
                   disable=None, initial=last + 1, total=num_epochs)
        for epoch in bar:
            start = time.time()
            state, sums = train_epoch(state, epoch)
            scores = [float(s) for s in validate(state)]
            seconds = round(time.time() - start, 2)
            improved = []
            for k, record in enumerate(loops):
                if record.stopped:  # frozen: its best and its history stay as they were
                    improved.append(False)
                    continue
                metrics = loop.means({key: v[k] for key, v in sums.items()})
                record.history.append({"epoch": epoch + 1, **metrics, "val_score": scores[k],
                                       "seconds": seconds})
                if writer is not None:
                    writer.scalars({**metrics, "val_score": scores[k],
                                    **(constants[k] if constants else {})},
                                   step=epoch + 1, prefix=f"run{k}/{name}/")
                improved.append(stopping.update(record, epoch, scores[k]))
                if record.stopped:
                    logging.info("%s run %d: early stop after epoch %d", name, k, epoch + 1)
            if writer is not None:
                writer.flush()
            last = epoch
            if any(improved) or best is None:
                best = select(jnp.asarray(improved), state, state if best is None else best)
                ckpt.save("best", epoch, best, meta())
            ckpt.save("latest", epoch, state, meta())
            bar.set_postfix(val=" ".join(f"{s:.3f}" for s in scores))
            logging.info("%s epoch %3d  val scores %s  (best %s)  %.1fs", name, epoch + 1,
                         " ".join(f"{s:.4f}" for s in scores),
                         " ".join(f"{r.best_score:.4f}@{r.best_epoch + 1}" for r in loops),
                         time.time() - start)
            if all(r.stopped for r in loops):
                break
        bar.close()
    finally:
        ckpt.wait()
    return loop.restore_best(ckpt, state, directory, name), loops


# ------------------------------------------------------------------------------------ runs
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
    count, lists = config.get("num_runs", 1), learning_rate_lists(config)
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


class Runs:
    """The K runs of a config: per-run configs, and the calls a recipe trains through."""

    def __init__(self, config, mesh):
        self.configs, self.mesh = run_configs(config), mesh

    @property
    def count(self) -> int:
        return len(self.configs)

    @property
    def single(self) -> bool:
        """One run: every call below is the single-run code path, unchanged."""
        return self.count == 1

    @property
    def seeds(self) -> list[int]:
        return [c.seed for c in self.configs]

    def state(self, make: Callable):
        """make(run config) -> a run's host state; returns them (stacked when K > 1)
        replicated over the mesh."""
        if self.single:
            return sharding.replicate(make(self.configs[0]), self.mesh)
        return sharding.replicate(stack([make(c) for c in self.configs]), self.mesh)

    def batches(self, base: pipeline.Batches, run_data: dict | None = None):
        """`base` itself for one run (without run_data), else its RunBatches."""
        if self.single and not run_data:
            return base
        if self.single:
            raise ValueError("one run: give the split's own arrays, not run_data")
        return RunBatches(base, run_data)

    def train_step_fn(self, step: Callable, batches):
        """The jitted data-parallel step for these batches (vmapped over runs when K > 1)."""
        return parallel.train_step_fn(step, batches.mesh, batches.resident,
                                      runs=not self.single)

    def run_epoch(self, step_fn, batches, orders: Sequence[np.ndarray], batch_size: int,
                  state):
        """One epoch, each run over its own row order; (state, metric sums ((K,) per key))."""
        rows = orders[0] if self.single else np.stack(orders)
        return loop.run_epoch(step_fn, batches, rows, batch_size, state)

    def predict(self, eval_fn, state, batches, rows: Sequence[np.ndarray], batch_size: int
                ) -> list[np.ndarray]:
        """Each run's outputs on its own rows (rows of one length for every run).

        K runs share one batch of `batch_size` clips (batch_size // K each, rounded down to a
        multiple of the device count): a step's activations grow with K, and the demo's
        pass-1 prediction (128 clips) of 3 runs at 128 each needed 14 GB on a CPU.
        """
        if self.single:
            return [loop.predict(eval_fn, state, batches, rows[0], batch_size)]
        per_run = shared_batch_size(batch_size, self.count, sharding.num_shards(self.mesh))
        return list(predict(eval_fn, state, batches, np.stack(rows), per_run))

    def fit(self, name: str, state, num_epochs: int, stopping: loop.EarlyStopping,
            train_epoch: Callable, validate: Callable, directory: pathlib.Path, writer=None,
            constants: Sequence[dict] | None = None) -> tuple:
        """(best state, [LoopState per run]); validate(state) -> one score per run;
        constants: per run, the tensorboard constants (loop.fit)."""
        if self.single:
            state, record = loop.fit(name, state, num_epochs, stopping, train_epoch,
                                     lambda s: validate(s)[0], directory, writer,
                                     constants[0] if constants else None)
            return state, [record]
        return fit(name, state, num_epochs, stopping, train_epoch, validate, directory,
                   writer, constants)

    def take(self, state, k: int):
        """Run k's state (the state itself for one run)."""
        return state if self.single else take(state, k)
