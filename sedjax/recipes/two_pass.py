"""The seed's recipe (DCASE2018 Task 4 baseline): two passes of the same CRNN.

pass 1: weak clips, BCE on the clip output; per-class thresholds on a held-out 20 %;
        its clip decisions on unlabel_in_domain become pseudo-labels (memmap .npy, atomic).
pass 2: unlabel_in_domain with each clip's pseudo-labels copied to every output frame, BCE on
        the frame outputs, validated on the weak clips (the seed) or, when the dataset has a
        validation split, on its event-based F1 (common.validation_event_f1).

workdir/pass1/ and pass2/ hold checkpoints/{latest,best} and result.json; pseudo_labels.npy.
Each pass resumes from its `latest` checkpoint; pass 1 is skipped once its result.json and the
pseudo-labels exist. Several runs (config.num_runs) train as one program: checkpoints stay in
workdir/pass1, pass2; each run's result.json files and pseudo-labels go to workdir/run{k}/.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Callable

import jax.numpy as jnp
import numpy as np
from absl import logging

from sedjax import recipes
from sedjax.metrics import clip_scores
from sedjax.recipes import common
from sedjax.reporting import outputs, summary
from sedjax.system import files, sharding
from sedjax.train import checkpoint, loop, state as state_lib, streams

RECIPE_NAME = "two_pass"


def train_step(state, batch, bce_eps: float, output: str, ordered: bool = False):
    """Per-device step: BCE of the clip labels against the 'clip' or every 'frame' output."""
    rng = state_lib.step_key(state)

    def loss_fn(params):
        (frames, clip), batch_stats = state_lib.apply_train(state, params, batch["features"], rng,
                                                            batch.get("embeddings"))
        probs = clip if output == "clip" else frames
        labels = batch["labels"]  # (B, C): broadcast to every frame for the frame output
        targets = labels if probs.ndim == labels.ndim else labels[:, None, :]
        loss = state_lib.bce(probs, jnp.broadcast_to(targets, probs.shape), bce_eps).mean()
        return loss, (batch_stats, {})

    return state_lib.gradient_step(state, loss_fn, batch["features"].shape[0], ordered)


def _fit(name: str, inputs: common.Inputs, state, output: str, train, train_rows: list,
         val, val_rows: list, val_target: Callable, validate: Callable | None = None):
    """One pass through the shared loop; validation = macro F1 at the pass's threshold.

    train_rows, val_rows: each run's rows; val_target(k, probs): run k's validation targets;
    validate(state) -> one score per run replaces that macro F1 when given.
    """
    section, runs = inputs.config[name], inputs.runs
    step = functools.partial(train_step, bce_eps=section.bce_eps, output=output,
                             ordered=common.ordered_reductions(inputs.config))
    train_fn = runs.train_step_fn(step, train)
    predict_fn = common.eval_fn(output, val)

    def train_epoch(state, epoch, resume):
        orders = [streams.numpy_rng(c.seed, RECIPE_NAME, name, "order", counter=epoch
                                    ).permutation(rows)
                  for c, rows in zip(runs.configs, train_rows)]
        return runs.run_epoch(train_fn, train, orders, section.batch_size, state, resume)

    def macro_f1(state):
        probs = runs.predict(predict_fn, state, val, val_rows, section.eval_batch_size)
        return [clip_scores.macro_f1(p, val_target(k, p), section.val_threshold)
                for k, p in enumerate(probs)]

    validate = validate or macro_f1
    return loop.fit(name, state, section.num_epochs, loop.EarlyStopping.from_config(section),
                    train_epoch, validate, inputs.workdir / name, inputs.writer,
                    [{"learning_rate": c[name].learning_rate} for c in runs.configs])


def pass1_rows(config, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation rows, training rows) of the n weak clips for config.seed."""
    order = streams.numpy_rng(config.seed, RECIPE_NAME, "pass1", "held_out").permutation(n)
    n_val = int(round(config.pass1.val_fraction * n))
    return np.sort(order[:n_val]), np.sort(order[n_val:])


def run_pass1(inputs: common.Inputs):
    """Clip-level training on the weak clips; per-class thresholds on its validation split.

    Returns (state, [result per run], [thresholds per run])."""
    config, runs = inputs.config, inputs.runs
    weak = inputs.arrays["weak"]
    val_rows, train_rows = zip(*(pass1_rows(c, len(weak)) for c in runs.configs))
    batches = inputs.run_batches("weak")
    state = runs.state(lambda c: common.init_state(c, "pass1"))
    state, progress = _fit("pass1", inputs, state, "clip", batches, train_rows, batches,
                           val_rows, lambda k, probs: weak.labels[val_rows[k]])
    val_probs = runs.predict(common.eval_fn("clip", batches), state, batches, val_rows,
                             config.pass1.eval_batch_size)
    results, thresholds = [], []
    for rows, probs, record in zip(val_rows, val_probs, progress):
        tuned = clip_scores.best_thresholds(probs, weak.labels[rows], config.pass1.threshold_grid)
        result = dataclasses.asdict(record)
        result["thresholds"] = dict(zip(config.data.classes, tuned.tolist()))
        result["val_f1_tuned"] = clip_scores.macro_f1(probs, weak.labels[rows], tuned)
        results.append(result)
        thresholds.append(tuned)
    return state, results, thresholds


def make_pseudo_labels(inputs: common.Inputs, state, thresholds: list, paths: list
                       ) -> list[np.ndarray]:
    """Each run's pass-1 clip decisions on unlabel_in_domain, written as memmap .npy files
    (atomic), one per run."""
    b = inputs.run_batches("unlabel_in_domain")
    rows = np.arange(len(b.arrays))
    probs = inputs.runs.predict(common.eval_fn("clip", b), state, b, [rows] * len(paths),
                                inputs.config.pass1.eval_batch_size)
    out = []
    for p, t, path in zip(probs, thresholds, paths):
        labels = (p >= t).astype(np.float32)
        if sharding.is_primary():
            files.save_npy(path, labels)
        out.append(labels)
    sharding.sync("pseudo-labels")
    for labels, path in zip(out, paths):
        logging.info("pseudo-labels: %d clips, %.2f labels per clip, written to %s",
                     len(labels), labels.sum(1).mean(), path)
    return out


def run_pass2(inputs: common.Inputs, unl):
    """Frame-level training on the pseudo-labelled clips (`unl`: their batches, each run's
    own labels), validated on the weak clips."""
    config, runs = inputs.config, inputs.runs
    weak = inputs.arrays["weak"]
    state = runs.state(lambda c: common.init_state(c, "pass2"))
    if config.pass2.init_from_pass1:
        state = _warm_start(state, inputs.workdir)
    all_unl, all_weak = np.arange(len(unl.arrays)), np.arange(len(weak))
    def on_validation_split(state):  # events of strongly labelled clips, not frames
        return common.validation_event_f1(inputs, state, config.pass2.eval_batch_size)

    return _fit("pass2", inputs, state, "frame", unl, [all_unl] * runs.count,
                inputs.run_batches("weak"), [all_weak] * runs.count,
                lambda k, probs: np.broadcast_to(weak.labels[:, None, :], probs.shape),
                on_validation_split if common.has_validation_split(inputs) else None)


def _warm_start(state, workdir: pathlib.Path):
    """`state` with the best pass-1 weights and BatchNorm statistics (a fresh optimizer).

    Both passes share one model (pass 1 trains its clip output, pass 2 its frame outputs), so
    the pass-1 tree fits the pass-2 state as it is (with several runs: run by run).
    """
    ckpts = checkpoint.PassCheckpoints(workdir / "pass1")
    restored = ckpts.restore("best", state)  # same tree and shardings as the pass-1 state
    ckpts.close()
    if restored is None:
        raise FileNotFoundError(f"{workdir / 'pass1'}: no best checkpoint to start pass 2 from")
    best = [r["best_epoch"] for r in restored[1]["runs"]]
    logging.info("pass2: starting from the best pass-1 weights (epoch %s)",
                 np.asarray(best) + 1)
    return state.replace(params=restored[0].params, batch_stats=restored[0].batch_stats)


def train(inputs: common.Inputs) -> common.Trained:
    """Both passes (each skipped or resumed as far as its outputs allow); with several runs,
    each run's result.json files and pseudo-labels go to its own folder (inputs.run_dirs)."""
    dirs = inputs.run_dirs
    pseudo_paths = [d / "pseudo_labels.npy" for d in dirs]
    pass1 = [outputs.read_json(d / "pass1" / "result.json") for d in dirs]
    if any(p is None for p in pass1) or not all(p.exists() for p in pseudo_paths):
        state1, pass1, thresholds = run_pass1(inputs)
        make_pseudo_labels(inputs, state1, thresholds, pseudo_paths)
        if sharding.is_primary():
            for d, result in zip(dirs, pass1):
                outputs.write_json(d / "pass1" / "result.json", result)
    else:
        logging.info("pass1: done before (best val F1 %s); reusing %s",
                     " ".join(f"{p['best_score']:.4f}" for p in pass1),
                     " ".join(map(str, pseudo_paths)))
    unl = inputs.run_batches("unlabel_in_domain",
                             labels=[np.load(p, mmap_mode="r") for p in pseudo_paths])
    state2, progress = run_pass2(inputs, unl)
    pass2 = [dataclasses.asdict(record) for record in progress]
    if sharding.is_primary():
        for d, result in zip(dirs, pass2):
            outputs.write_json(d / "pass2" / "result.json", result)
    summaries = [summary.TrainingSummary(RECIPE_NAME, {
        "pass1": summary.StageSummary(p1["best_score"], p1["best_epoch"],
                                      {"thresholds": p1["thresholds"]}),
        "pass2": summary.StageSummary(p2["best_score"], p2["best_epoch"])})
        for p1, p2 in zip(pass1, pass2)]
    return common.Trained(state2, summaries)


def picks_on_events(config, has_validation_split: bool) -> bool:
    """Pass 2 picks its checkpoint on the validation split's events, when there is one;
    else both passes pick theirs on clip F1 at val_threshold."""
    del config
    return has_validation_split


RECIPE = recipes.register(recipes.Recipe(RECIPE_NAME, train, sections=("pass1", "pass2"),
                                         stages=("pass1", "pass2"),
                                         picks_on_events=picks_on_events))
