"""The seed's recipe (DCASE2018 Task 4 baseline): two passes of the same CRNN.

pass 1: weak clips, BCE on the clip output; per-class thresholds on a held-out 20 %;
        its clip decisions on unlabel_in_domain become pseudo-labels (memmap .npy, atomic).
pass 2: unlabel_in_domain with each clip's pseudo-labels copied to every output frame, BCE on
        the frame outputs, validated on the weak clips.

workdir/pass1/ and pass2/ hold checkpoints/{latest,best} and result.json; pseudo_labels.npy.
Each pass resumes from its `latest` checkpoint; pass 1 is skipped once its result.json and the
pseudo-labels exist.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax.numpy as jnp
import numpy as np
from absl import logging

from sedjax import files, report, sharding
from sedjax.data import pipeline
from sedjax.recipes import common
from sedjax.train import checkpoint, loop, parallel, scores, state as state_lib


def train_step(state, batch, bce_eps: float, output: str):
    """Per-device step: BCE of the clip labels against the 'clip' or every 'frame' output."""
    rng = state_lib.step_key(state)

    def loss_fn(params):
        (frames, clip), batch_stats = state_lib.apply_train(state, params, batch["features"], rng)
        probs = clip if output == "clip" else frames
        labels = batch["labels"]  # (B, C): broadcast to every frame for the frame output
        targets = labels if probs.ndim == labels.ndim else labels[:, None, :]
        loss = state_lib.bce(probs, jnp.broadcast_to(targets, probs.shape), bce_eps).mean()
        return loss, (batch_stats, {})

    return state_lib.gradient_step(state, loss_fn, batch["features"].shape[0])


def _fit(name: str, inputs: common.Inputs, state, output: str, train: pipeline.Batches,
         train_rows: np.ndarray, val: pipeline.Batches, val_rows: np.ndarray, val_target):
    """One pass through the shared loop; validation = macro F1 at the pass's threshold."""
    section = inputs.config[name]
    step = functools.partial(train_step, bce_eps=section.bce_eps, output=output)
    train_fn = parallel.train_step_fn(step, train.mesh, train.resident)
    predict_fn = common.eval_fn(output, val)
    seed = inputs.config.seed + {"pass1": 1, "pass2": 2}[name]

    def train_epoch(state, epoch):
        order = np.random.default_rng([seed, epoch]).permutation(train_rows)
        return loop.run_epoch(train_fn, train, order, section.batch_size, state)

    def validate(state):
        probs = loop.predict(predict_fn, state, val, val_rows, section.eval_batch_size)
        return scores.macro_f1(probs, val_target(probs), section.val_threshold)

    return loop.fit(name, state, section.num_epochs, loop.EarlyStopping.from_config(section),
                    train_epoch, validate, inputs.workdir / name, inputs.writer,
                    {"learning_rate": section.learning_rate})


def run_pass1(inputs: common.Inputs):
    """Clip-level training on the weak clips; per-class thresholds on its validation split."""
    config = inputs.config
    weak = inputs.arrays["weak"]
    n = len(weak)
    order = np.random.default_rng([config.seed, 101]).permutation(n)
    n_val = int(round(config.pass1.val_fraction * n))
    val_rows, train_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
    batches = inputs.batches["weak"]
    state = common.new_state(config, "pass1", 1, inputs.mesh)
    state, progress = _fit("pass1", inputs, state, "clip", batches, train_rows, batches,
                           val_rows, lambda probs: weak.labels[val_rows])
    val_probs = loop.predict(common.eval_fn("clip", batches), state, batches, val_rows,
                             config.pass1.eval_batch_size)
    thresholds = scores.best_thresholds(val_probs, weak.labels[val_rows],
                                        config.pass1.threshold_grid)
    result = dataclasses.asdict(progress)
    result["thresholds"] = dict(zip(config.data.classes, thresholds.tolist()))
    result["val_f1_tuned"] = scores.macro_f1(val_probs, weak.labels[val_rows], thresholds)
    return state, result, thresholds


def make_pseudo_labels(inputs: common.Inputs, state, thresholds, path: pathlib.Path
                       ) -> np.ndarray:
    """Pass-1 clip decisions on unlabel_in_domain, written as a memmap .npy (atomic)."""
    b = inputs.batches["unlabel_in_domain"]
    probs = loop.predict(common.eval_fn("clip", b), state, b, np.arange(len(b.arrays)),
                         inputs.config.pass1.eval_batch_size)
    labels = (probs >= thresholds).astype(np.float32)
    if sharding.is_primary():
        files.save_npy(path, labels)
    sharding.sync("pseudo-labels")
    logging.info("pseudo-labels: %d clips, %.2f labels per clip, written to %s",
                 len(labels), labels.sum(1).mean(), path)
    return labels


def run_pass2(inputs: common.Inputs):
    """Frame-level training on the pseudo-labelled clips, validated on the weak clips."""
    config = inputs.config
    weak = inputs.arrays["weak"]
    unl = inputs.batches["unlabel_in_domain"]
    state = common.new_state(config, "pass2", 2, inputs.mesh)
    if config.pass2.init_from_pass1:
        state = _warm_start(state, inputs.workdir)
    return _fit("pass2", inputs, state, "frame", unl, np.arange(len(unl.arrays)),
                inputs.batches["weak"], np.arange(len(weak)),
                lambda probs: np.broadcast_to(weak.labels[:, None, :], probs.shape))


def _warm_start(state, workdir: pathlib.Path):
    """`state` with the best pass-1 weights and BatchNorm statistics (a fresh optimizer).

    Both passes share one model (pass 1 trains its clip output, pass 2 its frame outputs), so
    the pass-1 tree fits the pass-2 state as it is.
    """
    ckpts = checkpoint.PassCheckpoints(workdir / "pass1")
    restored = ckpts.restore("best", state)  # same tree and shardings as the pass-1 state
    ckpts.close()
    if restored is None:
        raise FileNotFoundError(f"{workdir / 'pass1'}: no best checkpoint to start pass 2 from")
    logging.info("pass2: starting from the best pass-1 weights (epoch %d)",
                 restored[1]["best_epoch"] + 1)
    return state.replace(params=restored[0].params, batch_stats=restored[0].batch_stats)


def train(inputs: common.Inputs) -> common.Trained:
    """Both passes (each skipped or resumed as far as its outputs allow)."""
    workdir = inputs.workdir
    pseudo_path = workdir / "pseudo_labels.npy"
    pass1 = report.read_json(workdir / "pass1" / "result.json")
    if pass1 is None or not pseudo_path.exists():
        state1, pass1, thresholds = run_pass1(inputs)
        make_pseudo_labels(inputs, state1, thresholds, pseudo_path)
        if sharding.is_primary():
            report.write_json(workdir / "pass1" / "result.json", pass1)
    else:
        logging.info("pass1: done before (best val F1 %.4f); reusing %s", pass1["best_score"],
                     pseudo_path)
    unl = inputs.arrays["unlabel_in_domain"]
    inputs.batches_of("unlabel_in_domain", dataclasses.replace(
        unl, labels=np.load(pseudo_path, mmap_mode="r")))
    state2, progress = run_pass2(inputs)
    pass2 = dataclasses.asdict(progress)
    if sharding.is_primary():
        report.write_json(workdir / "pass2" / "result.json", pass2)
    summary = {"pass1": {k: pass1[k] for k in ("best_score", "best_epoch", "thresholds")},
               "pass2": {k: pass2[k] for k in ("best_score", "best_epoch")}}
    return common.Trained(state2, summary)
