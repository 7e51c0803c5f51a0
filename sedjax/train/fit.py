"""One training pass: epochs of data-parallel steps, validation F1, early stopping, checkpoints."""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Callable

import jax
import numpy as np
from absl import logging
from tqdm import tqdm

from sedjax.data import pipeline
from sedjax.train import checkpoint, parallel


def f1_per_class(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """F1 of each class (last axis) over all other axes; 0 where a class has no TP+FP+FN."""
    pred, target = pred.astype(bool), target.astype(bool)
    axes = tuple(range(pred.ndim - 1))
    tp = (pred & target).sum(axes)
    fp = (pred & ~target).sum(axes)
    fn = (~pred & target).sum(axes)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def macro_f1(probs: np.ndarray, target: np.ndarray, threshold) -> float:
    """Macro (class-average) F1 of probs >= threshold (scalar or per class)."""
    return float(f1_per_class(probs >= np.asarray(threshold), target).mean())


def best_thresholds(probs: np.ndarray, target: np.ndarray, grid) -> np.ndarray:
    """Per-class threshold from `grid` maximizing that class's F1 (first best on ties)."""
    scores = np.stack([f1_per_class(probs >= t, target) for t in grid])  # (grid, C)
    return np.asarray(grid, np.float32)[scores.argmax(0)]


@dataclasses.dataclass
class PassData:
    """The rows a pass trains and validates on, with the val targets the F1 is computed on."""

    train: pipeline.Batches
    train_rows: np.ndarray
    val: pipeline.Batches
    val_rows: np.ndarray
    val_target: Callable[[np.ndarray], np.ndarray]  # probs -> targets of the same shape


def predict(state, batches: pipeline.Batches, rows: np.ndarray, batch_size: int,
            eval_fn=None) -> np.ndarray:
    """Probabilities for `rows`, pulled to the host once at the end."""
    eval_fn = eval_fn or parallel.eval_step_fn(batches.mesh, batches.resident)
    outs = [eval_fn(state, batches.stats, *args)
            for args in batches(rows, batch_size, drop_remainder=False)]
    probs = np.concatenate([np.asarray(jax.device_get(o)) for o in outs])
    return probs[: len(rows)]


def fit(name: str, state, pass_config, data: PassData, directory: pathlib.Path, seed: int):
    """Trains `state` for one pass and returns (best state, meta); resumes from `latest`."""
    ckpt = checkpoint.PassCheckpoints(directory)
    meta = {"epoch": -1, "best_f1": -1.0, "best_epoch": -1, "wait": 0, "stopped": False,
            "history": []}
    restored = ckpt.restore("latest", state)
    if restored is not None:
        state, meta = restored
        logging.info("%s: resuming after epoch %d (best val F1 %.4f at epoch %d)", name,
                     meta["epoch"] + 1, meta["best_f1"], meta["best_epoch"] + 1)
    train_fn = parallel.train_step_fn(data.train.mesh, pass_config.bce_eps, data.train.resident)
    eval_fn = parallel.eval_step_fn(data.val.mesh, data.val.resident)
    p = pass_config
    epochs = range(meta["epoch"] + 1, 0 if meta["stopped"] else p.num_epochs)
    bar = tqdm(epochs, desc=name, unit="epoch", disable=None, initial=meta["epoch"] + 1,
               total=p.num_epochs)
    for epoch in bar:
        start = time.time()
        order = np.random.default_rng([seed, epoch]).permutation(data.train_rows)
        total = None
        for args in data.train(order, p.batch_size, drop_remainder=True):
            state, metrics = train_fn(state, data.train.stats, *args)
            # summed on the device: no host sync inside the epoch
            total = metrics if total is None else jax.tree_util.tree_map(
                lambda a, b: a + b, total, metrics)
        total = jax.device_get(total)
        loss = float(total["loss_sum"] / total["count"])
        probs = predict(state, data.val, data.val_rows, p.eval_batch_size, eval_fn)
        f1 = macro_f1(probs, data.val_target(probs), p.val_threshold)
        meta["history"].append({"epoch": epoch + 1, "loss": loss, "val_f1": f1,
                                "seconds": round(time.time() - start, 2)})
        meta["epoch"] = epoch
        if f1 - p.early_stopping_min_delta > meta["best_f1"]:
            meta.update(best_f1=f1, best_epoch=epoch, wait=0)
            ckpt.save("best", epoch, state, meta)
        else:
            meta["wait"] += 1
        meta["stopped"] = (epoch + 1 >= p.early_stopping_start_epoch
                           and meta["wait"] >= p.early_stopping_patience)
        ckpt.save("latest", epoch, state, meta)
        bar.set_postfix(loss=f"{loss:.4f}", val_f1=f"{f1:.4f}", best=f"{meta['best_f1']:.4f}")
        logging.info("%s epoch %3d  loss %.4f  val macro F1 %.4f  (best %.4f @ %d)  %.1fs",
                     name, epoch + 1, loss, f1, meta["best_f1"], meta["best_epoch"] + 1,
                     time.time() - start)
        if meta["stopped"]:
            logging.info("%s: early stop after epoch %d", name, epoch + 1)
            break
    bar.close()
    best = ckpt.restore("best", state)
    ckpt.close()
    if best is None:
        raise RuntimeError(f"{directory}: no best checkpoint after training {name}")
    return best[0], meta
