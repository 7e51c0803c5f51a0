"""What a recipe is given and gives back, and the model pieces every recipe builds from."""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any

import jax
import numpy as np
from absl import logging

from sedjax.data import beats_embeddings, dataset, embeddings, pipeline
from sedjax.metrics import detection, sed_eval_scores
from sedjax import models
from sedjax.models import beats, desed_crnn, time_grid
from sedjax.system import sharding
from sedjax.train import parallel, stacked_runs, state as state_lib, streams


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The shared stages' outputs a recipe trains from, complete once built (frozen: another
    value, e.g. the writer, is a dataclasses.replace copy).

    runs: the config's runs (sedjax.train.stacked_runs; config.num_runs); each run writes its own
    results into run_dirs[k] (the workdir itself for one run), shared checkpoints stay in
    the workdir.
    """

    config: Any
    splits: dict[str, dataset.Split]
    arrays: dict[str, pipeline.SplitArrays]
    batches: dict[str, pipeline.Batches]
    mesh: Any
    stats: tuple
    workdir: pathlib.Path
    writer: Any = None  # a sedjax.reporting.tensorboard.SummaryWriter (process 0), or None
    runs: Any = None  # sedjax.train.stacked_runs.StackedRuns; built from config and mesh when None

    def __post_init__(self):
        if self.runs is None:  # derived once, while building (frozen: hence object.__setattr__)
            object.__setattr__(self, "runs", stacked_runs.StackedRuns(self.config, self.mesh))

    @property
    def run_dirs(self) -> list[pathlib.Path]:
        """Where each run's own outputs go: [workdir] for one run, else workdir/run{k}."""
        return stacked_runs.run_dirs(self.workdir, self.runs.count)

    def run_batches(self, name: str, labels: list | None = None) -> pipeline.Batches:
        """Batches of split `name` for the runs; labels: one target array per run replacing
        the split's (e.g. pseudo-labels)."""
        if labels is None:
            return self.batches[name]
        return self.batches[name].with_run_data({"labels": np.stack(labels)})


def detect_and_score(config, split: dataset.Split, probs: np.ndarray, frames: np.ndarray,
                     rows: np.ndarray | None = None) -> tuple[list[dict], dict]:
    """(events, sed_eval results) of a strong split's clips (all, or `rows`) from their frame
    probabilities (N, T', C) and valid input frames (N,): post-processed (config.postprocess)
    and scored with the challenge's metric (config.evaluation)."""
    valid = time_grid.valid_output_frames(frames, config.features.num_frames, config.model)
    names = split.filenames if rows is None else [split.filenames[i] for i in rows]
    events = detection.probabilities_to_events(names, probs, config.postprocess,
                                                 config.data.classes, time_grid.frame_seconds(config),
                                                 valid)
    results = sed_eval_scores.evaluate_events(split.reference_events(rows), events, names,
                                         config.data.classes, config.evaluation)
    return events, results


VALIDATION = "validation"  # the split every choice is made on when the dataset has one


def has_validation_split(inputs: Inputs) -> bool:
    """Whether the dataset has a validation split (DESED's metadata/validation/)."""
    return VALIDATION in inputs.splits


CHECKPOINT_METRICS = ("event_f1", "psds1")  # what a validation split scores checkpoints by


def validation_event_f1(inputs: Inputs, state, batch_size: int) -> list[float]:
    """Per run: the event-based macro F1 of the validation split, post-processed and scored as
    the test is (config.postprocess, config.evaluation); the score that picks checkpoints."""
    return validation_score(inputs, state, batch_size, "event_f1")


def validation_score(inputs: Inputs, state, batch_size: int, metric: str) -> list[float]:
    """Per run: the validation split's score that picks checkpoints, from its frame
    probabilities: 'event_f1' (event-based macro F1 post-processed and scored as the test is:
    config.postprocess, config.evaluation) or 'psds1' (sed_scores_eval's PSDS1 of the
    probabilities median-filtered by postprocess.median_filter, config.evaluation.psds).

    Why PSDS1 exists: event F1 at one threshold rewards an untrained model that marks every
    class active (DESED demo: 11.5 % after epoch 1, 0-7 % later while PSDS1 rose); PSDS1 ranks
    the scores over all thresholds, as DESED's field reports them."""
    if metric not in CHECKPOINT_METRICS:
        raise ValueError(f"unknown checkpoint metric {metric!r}; known: {CHECKPOINT_METRICS}")
    b = inputs.run_batches(VALIDATION)
    rows = np.arange(len(b.arrays))
    probs = inputs.runs.predict(eval_fn("frame", b), state, b, [rows] * inputs.runs.count,
                                batch_size)
    config = inputs.config
    split, frames = inputs.splits[VALIDATION], inputs.arrays[VALIDATION].frames
    if metric == "psds1":
        from sedjax.metrics import psds  # sed_scores_eval: imported when used
        valid = time_grid.valid_output_frames(frames, config.features.num_frames, config.model)
        settings = psds.Settings.from_mapping(config.evaluation.psds)
        settings = dataclasses.replace(settings, psds={"psds1": settings.psds["psds1"]})
        values = [psds.threshold_independent(
            p, split.filenames, time_grid.frame_seconds(config), config.data.classes,
            split.reference_events(), num_valid_frames=valid,
            median_filter=config.postprocess.median_filter, settings=settings,
            collar=False)[0]["psds1"] for p in probs]
    else:
        values = [detect_and_score(config, split, p, frames)[1]["event_based"]["f_measure_macro"]
                  for p in probs]
    return [0.0 if v is None else float(v) for v in values]  # None: no class scored at all


@dataclasses.dataclass
class Trained:
    """A recipe's result: the state that predicts the test frames (with a leading run axis
    when there are several runs), and what to report, one summary per run."""

    state: state_lib.TrainState
    summaries: list[dict]


def ordered_reductions(config) -> bool:
    """Whether steps average over devices in one fixed order (runtime.ordered_reductions,
    sedjax.system.sharding.device_mean). Never on one device: there is no order to fix there, and
    the plain all-reduce keeps one-device runs bit for bit what they were before the option."""
    return bool(config.runtime.ordered_reductions) and jax.device_count() > 1


def init_state(config, section: str, *, rampup_steps: int = 0) -> state_lib.TrainState:
    """A fresh model + Adam (settings of config[section]; its learning rate ramped up over
    rampup_steps when > 0) on the host's default device. Its random stream (init and dropout
    keys) is named by the recipe and the section: (config.recipe, section, 'init').

    With model.beats.trainable the BEATs encoder's weights (params['beats']) start as
    model.beats' (its checkpoint, or the random init of its size and seed: those the frozen
    stage encodes with) and train at model.beats.learning_rate with layer-wise decay
    model.beats.layer_decay (sedjax.models.beats.layer_learning_rates); the rest at the
    section's rate."""
    model = models.from_config(config.model, len(config.data.classes), axis_name=sharding.AXIS,
                             ordered_reductions=ordered_reductions(config))
    rng = streams.key(config.seed, config.recipe, section, "init")
    embeddings_shape = (beats_embeddings.model_input_shape(config)
                        if embeddings.used(config.model) else None)
    replace = rates = None
    if beats_embeddings.trainable(config):  # the encoder starts from model.beats' weights
        b = config.model.beats
        arch, weights = beats_embeddings.encoder_weights(config)
        model = model.clone(beats=arch)  # the encoder inside the CRNN, trained with it
        replace = {desed_crnn.ENCODER: weights}
        rates = {desed_crnn.ENCODER: beats.layer_learning_rates(
            weights, arch, b.learning_rate, b.layer_decay)}
    state = state_lib.create_train_state(rng, model, config[section],
                                         (config.features.num_frames, config.features.n_mels),
                                         rampup_steps, embeddings_shape, replace, rates)
    logging.info("%s model: %d parameters", section, models.count_params(state.params))
    return state


def new_state(config, section: str, mesh) -> state_lib.TrainState:
    """init_state, replicated over the mesh (without a run axis: for a step used on its own)."""
    return sharding.replicate(init_state(config, section), mesh)


def frame_outputs(state, batch):
    """Per-device eval step: frame probabilities (B, T', C)."""
    return state_lib.apply_eval(state, batch["features"], batch.get("embeddings"))[0]


def clip_outputs(state, batch):
    """Per-device eval step: clip probabilities (B, C)."""
    return state_lib.apply_eval(state, batch["features"], batch.get("embeddings"))[1]


def eval_fn(output: str, batches: pipeline.Batches):
    """The jitted data-parallel predictor of 'frame' or 'clip' outputs (K, B, ...) for these
    batches."""
    return _eval_fn(output, batches.mesh, batches.resident)


@functools.lru_cache(maxsize=None)  # one compiled program per kind, not one per call
def _eval_fn(output: str, mesh, resident: bool):
    step = {"frame": frame_outputs, "clip": clip_outputs}[output]
    return parallel.eval_step_fn(step, mesh, resident, runs=True)
