"""The one epoch loop every recipe shares: epochs, validation scores, early stopping, checkpoints.

The state carries a leading run axis (config.num_runs = K; one run is K = 1, see
sedjax.train.runs). A recipe gives the loop two functions: `train_epoch(state, epoch) ->
(state, metric sums, (K,) per key)` and `validate(state) -> one score per run` (higher is
better). Each run stops early on its own, as the seed's Keras callback did (patience,
min_delta, not before a start epoch): once its patience ran out, later epochs still compute for
it (one program) but change neither its best state nor its record. The loop ends when every run
stopped or at num_epochs. `latest` is saved after every epoch, so a killed run resumes after
its last finished epoch; `best` holds each run's best state. Their meta is
{'epoch': the last finished epoch, 'runs': [LoopState of each run]}.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm import tqdm

from sedjax.data import pipeline
from sedjax.runtime import sharding
from sedjax.train import checkpoint


@dataclasses.dataclass
class LoopState:
    """Where one run's loop stands; saved as JSON beside every checkpoint."""

    epoch: int = -1  # last finished epoch (0-based)
    best_score: float = -1.0
    best_epoch: int = -1
    wait: int = 0  # epochs since the last improvement
    stopped: bool = False
    history: list = dataclasses.field(default_factory=list)  # one dict per epoch

    @classmethod
    def from_json(cls, meta: dict) -> "LoopState":
        """Reads a saved loop state; unknown keys are an error (a checkpoint of another kind)."""
        return cls(**meta)


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop after `patience` epochs without a gain of more than min_delta, not before start."""

    patience: int
    min_delta: float
    start_epoch: int

    @classmethod
    def from_config(cls, section) -> "EarlyStopping":
        return cls(section.early_stopping_patience, section.early_stopping_min_delta,
                   section.early_stopping_start_epoch)

    def update(self, loop: LoopState, epoch: int, score: float) -> bool:
        """Records the epoch's score in `loop`; True when it is the new best."""
        loop.epoch = epoch
        improved = score - self.min_delta > loop.best_score
        if improved:
            loop.best_score, loop.best_epoch, loop.wait = score, epoch, 0
        else:
            loop.wait += 1
        loop.stopped = epoch + 1 >= self.start_epoch and loop.wait >= self.patience
        return improved


def run_epoch(step_fn, batches: pipeline.Batches, rows: np.ndarray, batch_size: int, state):
    """One pass of `step_fn` over rows (K, n) (full batches); (state, metric sums on host)."""
    total = None
    for args in batches(rows, batch_size, drop_remainder=True):
        state, metrics = step_fn(state, batches.stats, *args)
        # summed on the device: no host sync inside the epoch
        total = metrics if total is None else jax.tree_util.tree_map(
            lambda a, b: a + b, total, metrics)
    return state, jax.device_get(total) if total is not None else {}


def means(sums: dict) -> dict:
    """Per-clip means of one run's metric sums ({'loss_sum': ..., 'count': n})."""
    count = float(sums.get("count", 0)) or 1.0
    return {k[: -len("_sum")]: float(v) / count for k, v in sums.items() if k.endswith("_sum")}


def predict(eval_fn, state, batches: pipeline.Batches, rows: np.ndarray, batch_size: int
            ) -> np.ndarray:
    """eval_fn's outputs (K, n, ...) for rows (K, n), pulled to the host once at the end."""
    outs = [eval_fn(state, batches.stats, *args)
            for args in batches(rows, batch_size, drop_remainder=False)]
    out = np.concatenate([sharding.to_host(o) for o in outs], axis=1)
    return out[:, : rows.shape[1]]


@jax.jit
def select(mask: jax.Array, new, old):
    """Run by run, `new` where mask (K,) is set and `old` elsewhere."""
    def pick(n, o):
        return jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)
    return jax.tree_util.tree_map(pick, new, old)


def fit(name: str, state, num_epochs: int, stopping: EarlyStopping, train_epoch: Callable,
        validate: Callable, directory: pathlib.Path, writer=None,
        constants: Sequence[dict] | None = None) -> tuple:
    """Trains the run-axis `state`; returns (best state, [LoopState per run]). Resumes from
    `latest` (module docstring).

    writer: a sedjax.reporting.tensorboard.SummaryWriter that gets every epoch's metrics,
    validation score and constants[k] (e.g. run k's learning rate) under `<name>/` (one run)
    or `run<k>/<name>/`.
    """
    num_runs = len(jax.tree_util.tree_leaves(state)[0])
    ckpt = checkpoint.PassCheckpoints(directory)
    loops, last, best = [LoopState() for _ in range(num_runs)], -1, None
    restored = ckpt.restore("latest", state)
    if restored is not None:
        state, meta = restored
        last, loops = meta["epoch"], [LoopState.from_json(m) for m in meta["runs"]]
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
            improved = _record_epoch(name, loops, stopping, epoch, sums, scores,
                                     round(time.time() - start, 2), writer, constants)
            last = epoch
            if any(improved) or best is None:
                best = select(jnp.asarray(improved), state, state if best is None else best)
                ckpt.save("best", epoch, best, meta())
            ckpt.save("latest", epoch, state, meta())
            bar.set_postfix(val=" ".join(f"{s:.4f}" for s in scores))
            logging.info("%s epoch %3d  val scores %s  (best %s)  %.1fs", name, epoch + 1,
                         " ".join(f"{s:.4f}" for s in scores),
                         " ".join(f"{r.best_score:.4f}@{r.best_epoch + 1}" for r in loops),
                         time.time() - start)
            if all(r.stopped for r in loops):
                break
        bar.close()
    finally:
        ckpt.wait()
    return restore_best(ckpt, state, directory, name), loops


def _record_epoch(name: str, loops: list, stopping: EarlyStopping, epoch: int, sums: dict,
                  scores: list, seconds: float, writer, constants) -> list[bool]:
    """Adds the epoch to each running run's record (and TensorBoard); [improved per run]."""
    improved = []
    for k, record in enumerate(loops):
        if record.stopped:  # frozen: its best and its history stay as they were
            improved.append(False)
            continue
        metrics = means({key: v[k] for key, v in sums.items()})
        record.history.append({"epoch": epoch + 1, **metrics, "val_score": scores[k],
                               "seconds": seconds})
        if writer is not None:
            prefix = f"{name}/" if len(loops) == 1 else f"run{k}/{name}/"
            writer.scalars({**metrics, "val_score": scores[k],
                            **(constants[k] if constants else {})}, step=epoch + 1,
                           prefix=prefix)
        improved.append(stopping.update(record, epoch, scores[k]))
        logging.info("%s run %d epoch %d  %s", name, k, epoch + 1,
                     "  ".join(f"{key} {v:.4f}" for key, v in metrics.items()))
        if record.stopped:
            logging.info("%s run %d: early stop after epoch %d", name, k, epoch + 1)
    if writer is not None:
        writer.flush()
    return improved


def restore_best(ckpt: checkpoint.PassCheckpoints, state, directory: pathlib.Path, name: str):
    """The `best` checkpoint's state once training ended (the checkpoints are then closed)."""
    best = ckpt.restore("best", state)
    ckpt.close()
    if best is None:
        raise RuntimeError(f"{directory}: no best checkpoint after training {name}")
    return best[0]
