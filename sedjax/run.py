"""The shared stages in order: validate, data, features, statistics, recipe, predict, score, report.

This module keeps the order (as flax's examples keep `train_and_evaluate`); the data stages
are sedjax.data.prepare's, the scoring stages sedjax.recipes.scoring's.

workdir/
  config.json                  the resolved config
  synthetic/                   generated dataset (data.dataset == 'synthetic')
  item_access_error.log.csv    clips listed in the metadata whose audio is missing
  features/                    <split>-<hash>.npy log-mel memmaps, stats-<hash>.npy;
                               embeddings-<split>-<hash>.npy BEATs frame embeddings
                               (model.embeddings.source 'beats'), or with
                               model.beats.trainable beats_fbank-<split>-<hash>.npy (the
                               encoder's input)
  (the recipe's own folders)   e.g. pass1/, pass2/, pseudo_labels.npy for two_pass
  tensorboard/                 per-epoch scalars (losses, validation score, learning rate)
  model/                       the weights that predicted + normalization (sedjax.detect)
  training.json                the recipe's summary, written once its model predicted
  predictions/                 <split>_probs.npy (frame probabilities), <split>_events.csv,
                               <split>_psd_roc.npz (PSD-ROC curves), for validation (when the
                               dataset has it), test and eval
  postprocess.json             the post-processing chosen on validation (postprocess.tune:
                               median-filter lengths or cSEBB parameters per class)
  results.json, results.txt    sed_eval event/segment scores, PSDS1/2 and best collar F1 of
                               the validation and test splits
  class_scores.png, psd_roc.png, training_curves.png, piano_roll.png

Several runs (config.num_runs = K > 1, seeds seed .. seed + K - 1, one program): the recipe's
checkpoints, features and tensorboard/ stay in the workdir; each run's own outputs (config.json,
model/, predictions/, training.json, results.json, ... as above, and the recipe's result.json
files) go to workdir/run{k}/, laid out as a single run's workdir; workdir/results.json holds
each run's headline scores with their mean and sample std, workdir/training.json each run's
training summary.

Every stage is skipped when its output is already there, so a killed run resumes.

Protocol: every choice a run makes (early stopping, the kept checkpoint, thresholds, tuned
post-processing) uses the validation split (or, without one, clips held out of training);
the test split's labels are read only by the scoring stage, once, at the end. Which DESED split
plays which role is data.split_roles' (sedjax.data.split_roles: without a public evaluation set,
DESED_task's: validation = its synthetic validation set, test = its validation split).
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np
from absl import logging

from sedjax import recipes
from sedjax.config import stages, validate
from sedjax.data import pipeline, prepare
from sedjax.recipes import common, scoring
from sedjax.reporting import report_files, summary, tensorboard
from sedjax.system import (compilation_cache, files, preemption, sharding, timings,
                            workdir_lock)
from sedjax.train import checkpoint, loop, stacked_runs

SCORED_SPLITS = ("validation", "test", "eval")  # predicted and scored, in this order


def predict_frames(inputs: common.Inputs, state, name: str) -> list[np.ndarray]:
    """Frame probabilities (N, T', C) of a split, one array per run."""
    b = inputs.run_batches(name)
    rows = np.arange(len(b.arrays))
    return inputs.runs.predict(common.eval_fn("frame", b), state, b, [rows] * inputs.runs.count,
                               inputs.config.runtime.predict_batch_size)


def train_and_evaluate(config, workdir) -> dict:
    """Runs (or resumes) every stage and returns the summary written to results.json; one run
    per workdir at a time (sedjax.system.workdir_lock)."""
    mesh = sharding.make_mesh()
    validate.validate(config, sharding.num_shards(mesh))
    recipe = recipes.get(config.recipe)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # before the run's first compilation (JAX looks for a cache once per process)
    compilation_cache.enable(config.runtime.compilation_cache)
    with workdir_lock.hold(workdir, primary=sharding.is_primary()), timings.recording() as rec:
        summary = _train_and_evaluate(config, workdir, recipe, mesh)
        if summary:  # process 0: the finished timings, also into results.json
            summary = report_files.final_timings(workdir, summary, rec.to_json())
            print(timings.line(summary["timings"]))
        return summary


def _train_and_evaluate(config, workdir: pathlib.Path, recipe, mesh) -> dict:
    splits, arrays = prepare.load_data(config, workdir)
    if sharding.is_primary():  # outputs of other values moved aside; config.json written
        stages.reconcile(config, workdir, recipe.picks_on_events(
            config, common.VALIDATION in splits))
    sharding.sync("config")
    _stop_point("the data and features", workdir)
    with timings.stage("statistics"):
        stats = prepare.normalization_stats(config, splits, arrays, workdir)
    logging.info("devices: %d x %s", sharding.num_shards(mesh), jax.devices()[0].device_kind)
    batches = {name: pipeline.Batches(a, mesh, stats, config.runtime)
               for name, a in arrays.items()}
    inputs = common.Inputs(config, splits, arrays, batches, mesh, stats, workdir)
    scored = [n for n in SCORED_SPLITS if n in splits]
    training = train_and_predict(recipe, inputs, scored)
    sharding.sync("predictions")
    # what is left is each process's own work: from here a SIGTERM ends the process at once;
    # one received before ends every process at this stop point
    preemption.default_sigterm()
    _stop_point("training and prediction", workdir)
    if not sharding.is_primary():  # scoring and reports read the predictions process 0 wrote
        logging.info("process %d: done; process 0 scores and reports", jax.process_index())
        return {}
    dirs, results, curves = inputs.run_dirs, [], []
    for d, t in zip(dirs, training):
        split_results, split_curves, used = scoring.score_run(config, d, recipe, splits,
                                                              arrays, scored)
        results.append(summary.RunResults(split_results, used, t, timings.current().to_json(),
                                          sharding.num_shards(mesh)))
        curves.append(split_curves)
    with timings.stage("reporting"):
        summary_json = report_files.report(workdir, dirs, results, curves,
                                         {n: len(s) for n, s in splits.items()})
    # what each scored split was read from (DESED_task's roles test on validation.tsv)
    return {**summary_json, "split_sources": {n: splits[n].source for n in scored}}


def _stop_point(done: str, workdir: pathlib.Path) -> None:
    """Ends the run with exit status 143 when a stop was asked for (a SIGTERM, to any process of
    a multi-process job) since the last training step or stop point; every process calls it at
    the same places. What is done is saved in the workdir: the same command resumes."""
    if preemption.stop_requested_at_boundary():
        raise loop.Preempted(f"stopped by {preemption.reason()} after {done}; the finished "
                             f"stages are saved in {workdir}. Rerun the same command to "
                             "resume from there.")


def train_and_predict(recipe, inputs: common.Inputs, scored: list
                      ) -> list[summary.TrainingSummary]:
    """Trains the recipe and writes each run's frame probabilities of the scored splits and its
    model; skipped when an earlier program did both. Returns the runs' training summaries."""
    dirs, runs, workdir = inputs.run_dirs, inputs.runs, inputs.workdir
    for d in dirs:
        (d / "predictions").mkdir(parents=True, exist_ok=True)
    training = report_files.read_training(workdir, runs.count, recipe.stages)
    if training is not None and all((d / "predictions" / f"{n}_probs.npy").exists()
                                    for d in dirs for n in scored):
        logging.info("training: done before (recipe %s); reusing %s", recipe.name,
                     " ".join(str(d / "predictions") for d in dirs))
        return training
    primary = sharding.is_primary()
    # scalars per epoch for `tensorboard --logdir WORKDIR`, from process 0 only
    writer = tensorboard.SummaryWriter(workdir / "tensorboard") if primary else None
    with timings.stage("training"):
        try:
            trained = recipe.train(dataclasses.replace(inputs, writer=writer))
        finally:
            if writer is not None:
                writer.close()
    with timings.stage("predict"):
        for name in scored:  # every process predicts (a collective); one writes
            for d, probs in zip(dirs, predict_frames(inputs, trained.state, name)):
                if primary:
                    files.save_npy(d / "predictions" / f"{name}_probs.npy",
                                   probs.astype(np.float32))
    training = runs.label(trained.summaries)
    if primary:
        for k, d in enumerate(dirs):
            checkpoint.save_model(d, stacked_runs.take(trained.state, k), inputs.stats)
        report_files.write_training(workdir, dirs, training, runs.configs)
    return training
