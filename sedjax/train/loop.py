"""The epoch loop every recipe shares: epochs, a validation score, early stopping, checkpoints.

A recipe gives the loop two functions: `train_epoch(state, epoch) -> (state, metric sums)` and
`validate(state) -> score` (higher is better). The loop keeps the best state, stops early as
the seed's Keras callback did (patience, min_delta, not before a start epoch), and saves
`latest` after every epoch so that a killed run resumes after its last finished epoch.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Callable

import jax
import numpy as np
from absl import logging
from tqdm import tqdm

from sedjax.runtime import sharding
from sedjax.data import pipeline
from sedjax.train import checkpoint


@dataclasses.dataclass
class LoopState:
    """Where the loop stands; saved as JSON beside every checkpoint."""

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
    """One pass of `step_fn` over `rows` (full batches); returns (state, metric sums on host)."""
    total = None
    for args in batches(rows, batch_size, drop_remainder=True):
        state, metrics = step_fn(state, batches.stats, *args)
        # summed on the device: no host sync inside the epoch
        total = metrics if total is None else jax.tree_util.tree_map(
            lambda a, b: a + b, total, metrics)
    return state, jax.device_get(total) if total is not None else {}


def means(sums: dict) -> dict:
    """Per-clip means of the metric sums of run_epoch ({'loss_sum': ..., 'count': n})."""
    count = float(sums.get("count", 0)) or 1.0
    return {k[: -len("_sum")]: float(v) / count for k, v in sums.items() if k.endswith("_sum")}


def predict(eval_fn, state, batches: pipeline.Batches, rows: np.ndarray, batch_size: int
            ) -> np.ndarray:
    """eval_fn's outputs for `rows`, pulled to the host once at the end."""
    outs = [eval_fn(state, batches.stats, *args)
            for args in batches(rows, batch_size, drop_remainder=False)]
    out = np.concatenate([sharding.to_host(o) for o in outs])
    return out[: len(rows)]


def fit(name: str, state, num_epochs: int, stopping: EarlyStopping,
        train_epoch: Callable, validate: Callable[..., float], directory: pathlib.Path,
        writer=None, constants: dict | None = None):
    """Trains `state` and returns (best state, LoopState); resumes from `latest`.

    writer: a sedjax.reporting.tensorboard.SummaryWriter that gets every epoch's metrics, validation score
    and `constants` (e.g. the learning rate) under `<name>/`.
    """
    ckpt = checkpoint.PassCheckpoints(directory)
    loop = LoopState()
    restored = ckpt.restore("latest", state)
    if restored is not None:
        state, loop = restored[0], LoopState.from_json(restored[1])
        logging.info("%s: resuming after epoch %d (best val score %.4f at epoch %d)", name,
                     loop.epoch + 1, loop.best_score, loop.best_epoch + 1)
    try:  # an exception or Ctrl-C still finishes the checkpoints already started
        epochs = range(loop.epoch + 1, 0 if loop.stopped else num_epochs)
        bar = tqdm(epochs, desc=name, unit="epoch", disable=None, initial=loop.epoch + 1,
                   total=num_epochs)
        for epoch in bar:
            start = time.time()
            state, sums = train_epoch(state, epoch)
            metrics = means(sums)
            score = float(validate(state))
            loop.history.append({"epoch": epoch + 1, **metrics, "val_score": score,
                                 "seconds": round(time.time() - start, 2)})
            if writer is not None:
                writer.scalars({**metrics, "val_score": score, **(constants or {})},
                               step=epoch + 1, prefix=f"{name}/")
                writer.flush()
            if stopping.update(loop, epoch, score):
                ckpt.save("best", epoch, state, dataclasses.asdict(loop))
            ckpt.save("latest", epoch, state, dataclasses.asdict(loop))
            bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}", val=f"{score:.4f}",
                            best=f"{loop.best_score:.4f}")
            logging.info("%s epoch %3d  %s  val score %.4f  (best %.4f @ %d)  %.1fs", name,
                         epoch + 1, "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()), score,
                         loop.best_score, loop.best_epoch + 1, time.time() - start)
            if loop.stopped:
                logging.info("%s: early stop after epoch %d", name, epoch + 1)
                break
        bar.close()
    finally:
        ckpt.wait()
    return restore_best(ckpt, state, directory, name), loop


def restore_best(ckpt: checkpoint.PassCheckpoints, state, directory: pathlib.Path, name: str):
    """The `best` checkpoint's state once training ended (the checkpoints are then closed)."""
    best = ckpt.restore("best", state)
    ckpt.close()
    if best is None:
        raise RuntimeError(f"{directory}: no best checkpoint after training {name}")
    return best[0]
