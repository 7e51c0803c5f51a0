"""Mean teacher (DCASE2019 baseline / DESED): a student and its EMA teacher on mixed batches.

Each batch mixes weak, unlabeled and (when the dataset has them) strongly labelled clips in the
proportions of config.mean_teacher. The student learns from BCE on the clip output of weak clips,
BCE on the frame outputs of strong clips, and the mean squared difference between its outputs and
the teacher's (frames and clip) on every clip, the weight of that consistency term ramped up
over the first part of training. The teacher is the exponential moving average of the student's
weights, min(1 - 1/(step + 1), decay), and predicts at the end (mean_teacher.predict_with).
Augmentation (mixup, time/frequency masks, time shift) runs on the device inside the step.
The checkpoint is picked on the validation split's event-based F1 when the dataset has one
(nothing is held out of training then), else on clips held out of training (val_fraction).

workdir/mean_teacher/ holds checkpoints/{latest,best} (student, teacher, optimizer) and
result.json; the loop resumes from `latest`. Several runs (config.num_runs) train as one
program: checkpoints stay there, each run's result.json goes to workdir/run{k}/mean_teacher/.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from sedjax import recipes
from sedjax.data import dataset, pipeline, split_roles
from sedjax.metrics import clip_scores
from sedjax.models import time_grid
from sedjax.recipes import common
from sedjax.reporting import outputs, summary
from sedjax.system import sharding
from sedjax.system.cli import ConfigError
from sedjax.system.sharding import AXIS
from sedjax.train import augment, loop, state as state_lib, streams

WEAK, UNLABELED, STRONG = 0, 1, 2  # a clip's kind in a mixed batch
NAME = "mean_teacher"
STEP_TIMINGS = ("sedjax", "desed_task")  # mean_teacher.step_timing


class MeanTeacherState(state_lib.TrainState):
    """The student's train state plus the teacher's weights and BatchNorm statistics."""

    ema_params: Any
    ema_batch_stats: Any

    def teacher(self) -> "MeanTeacherState":
        """This state with the teacher's weights in the student's place (for prediction)."""
        return self.replace(params=self.ema_params, batch_stats=self.ema_batch_stats)


def ema_decay(step: jax.Array, decay: float) -> jax.Array:
    """min(1 - 1/(step + 1), decay): the teacher follows closely while the student is young."""
    return jnp.minimum(1.0 - 1.0 / (step.astype(jnp.float32) + 1.0), decay)


def ema_update(ema, params, decay: jax.Array):
    """decay * ema + (1 - decay) * params, leaf by leaf."""
    return jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def consistency_weight(step: jax.Array, max_weight: float, rampup_steps: int) -> jax.Array:
    """max_weight * exp(-5 (1 - t)^2), t = step / rampup_steps clipped to 1 (Laine & Aila)."""
    if rampup_steps <= 0:
        return jnp.float32(max_weight)
    t = jnp.clip(step.astype(jnp.float32) / rampup_steps, 0.0, 1.0)
    return max_weight * jnp.exp(-5.0 * (1.0 - t) ** 2)


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """The constants of one run's step (hashable: part of the compiled program)."""

    bce_eps: float
    ema_decay: float
    consistency_weight: float
    rampup_steps: int
    mixup_share: float
    mixup_alpha: float
    time_mask: int
    freq_mask: int
    time_shift: int
    time_pooling: int
    ordered: bool = False  # fixed-order averages over devices (sharding.device_mean)
    # mean_teacher.step_timing 'desed_task': update k (from 1) reads the consistency ramp at
    # k, not k - 1, and the teacher averages the student's weights from before the update
    desed_task_timing: bool = False
    mask_teacher: bool = False  # augment.mask_teacher: the teacher's input masked too


def _masked_mean(values: jax.Array, mask: jax.Array, global_count: jax.Array) -> jax.Array:
    """This device's share of the global mean of `values` over the rows where mask is set.

    Scaled by the device count so that averaging gradients over devices (pmean) gives the
    gradient of the global mean, however the kinds are spread over devices.
    """
    devices = jax.lax.psum(1, AXIS)
    return (values * mask).sum() / jnp.maximum(global_count, 1.0) * devices


def augment_batch(key: jax.Array, batch: dict, s: StepSettings):
    """(student input, teacher input, clip targets, frame targets, embeddings or None) after
    augmentation (pre-extracted embeddings are mixed with their clips)."""
    k_shift, k_mix, k_mask = jax.random.split(key, 3)
    x, weak, strong = batch["features"], batch["labels"], batch["strong"].astype(jnp.float32)
    emb = batch.get("embeddings")
    x, strong = augment.time_shift(k_shift, x, strong, s.time_shift, s.time_pooling)
    if s.mixup_share > 0:
        arrays = (x, weak, strong) + (() if emb is None else (emb,))
        mixed, _ = augment.mixup(k_mix, arrays, batch["kind"], s.mixup_alpha, s.mixup_share)
        (x, weak, strong), emb = mixed[:3], (None if emb is None else mixed[3])
    student_x = augment.mask_time_frequency(k_mask, x, s.time_mask, s.freq_mask)
    if s.mask_teacher:  # DESED_task's CRNN masks its input in train mode: the teacher's too
        x = augment.mask_time_frequency(jax.random.fold_in(k_mask, 1), x, s.time_mask,
                                        s.freq_mask)
    return student_x, x, weak, strong, emb


def train_step(state: MeanTeacherState, batch: dict, settings: StepSettings):
    """Per-device step: supervised BCE + ramped consistency with the teacher; EMA update."""
    s = settings
    key = state_lib.step_key(state)
    k_aug, k_student, k_teacher = jax.random.split(key, 3)
    student_x, teacher_x, weak_t, strong_t, emb = augment_batch(k_aug, batch, s)
    kind = batch["kind"]
    is_weak = (kind == WEAK).astype(jnp.float32)
    is_strong = (kind == STRONG).astype(jnp.float32)
    n_weak, n_strong = jax.lax.psum(is_weak.sum(), AXIS), jax.lax.psum(is_strong.sum(), AXIS)
    n_all = jax.lax.psum(jnp.float32(kind.shape[0]), AXIS)

    teacher = state.teacher()
    (t_frames, t_clip), t_stats = state_lib.apply_train(teacher, teacher.params, teacher_x,
                                                        k_teacher, emb)
    t_frames, t_clip = jax.lax.stop_gradient(t_frames), jax.lax.stop_gradient(t_clip)
    # DESED_task: ExponentialWarmup's step_num is 1 at the first update (state.step is 0)
    position = state.step + 1 if s.desed_task_timing else state.step
    weight = consistency_weight(position, s.consistency_weight, s.rampup_steps)

    def loss_fn(params):
        (frames, clip), batch_stats = state_lib.apply_train(state, params, student_x, k_student,
                                                            emb)
        weak_bce = state_lib.bce(clip, weak_t, s.bce_eps).mean(-1)
        strong_bce = state_lib.bce(frames, strong_t, s.bce_eps).mean((-2, -1))
        mse = ((frames - t_frames) ** 2).mean((-2, -1)) + ((clip - t_clip) ** 2).mean(-1)
        losses = {"weak": _masked_mean(weak_bce, is_weak, n_weak),
                  "strong": _masked_mean(strong_bce, is_strong, n_strong),
                  "consistency": _masked_mean(mse, 1.0, n_all)}
        loss = losses["weak"] + losses["strong"] + weight * losses["consistency"]
        return loss, (batch_stats, losses)

    if s.desed_task_timing:  # SEDTask4.on_before_zero_grad: before this step's update
        ema_params = ema_update(state.ema_params, state.params, ema_decay(position, s.ema_decay))
    state, sums = state_lib.gradient_step(state, loss_fn, kind.shape[0], s.ordered)
    if not s.desed_task_timing:  # the weights this step made
        ema_params = ema_update(state.ema_params, state.params, ema_decay(state.step, s.ema_decay))
    state = state.replace(ema_params=ema_params,
                          ema_batch_stats=sharding.device_mean(t_stats, s.ordered))
    sums["consistency_weight_sum"] = weight * sums["count"]
    return state, sums


# ------------------------------------------------------------------------------------ data
@dataclasses.dataclass
class Training:
    """The mixed training set (weak, unlabeled, strong rows in one array) and validation rows."""

    arrays: pipeline.SplitArrays
    parts: dict  # kind -> (rows into `arrays`, clips of that kind per batch)
    val_weak: np.ndarray  # rows of the weak split held out
    val_strong: np.ndarray | None  # rows of the strong split held out (None: no strong split)
    strong_targets: np.ndarray | None  # (N_strong, T', C) frame targets of the strong split


def _split_rows(n: int, fraction: float, seed: int, part: str) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of a part's n clips (stream (NAME, part, 'held_out'))."""
    order = streams.numpy_rng(seed, NAME, part, "held_out").permutation(n)
    n_val = int(round(fraction * n))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def build_training(inputs: common.Inputs, config=None) -> Training:
    """Concatenates weak, unlabeled and strong clips (memmaps stay on disk) with their kinds;
    validation rows drawn with `config`'s seed (a run's config; inputs.config when None)."""
    config = inputs.config if config is None else config
    mt = config.mean_teacher
    t_out = time_grid.output_frames(config.features.num_frames, config.model)
    use_strong = "synthetic" in inputs.arrays and mt.batch_strong > 0
    names = ["weak", "unlabel_in_domain"] + (["synthetic"] if use_strong else [])
    kinds = [WEAK, UNLABELED, STRONG][:len(names)]
    parts_arrays = [inputs.arrays[n] for n in names]
    sizes = [len(a) for a in parts_arrays]
    offsets = np.cumsum([0] + sizes)
    c = len(config.data.classes)
    strong = np.zeros((offsets[-1], t_out, c), np.uint8)
    strong_targets = None
    if use_strong:
        f = config.features  # data.frame_labels: which frames an event makes active
        strong_targets = dataset.strong_labels(
            inputs.splits["synthetic"].events, config.data.classes, t_out,
            time_grid.frame_seconds(config),
            rule=config.data.get("frame_labels", dataset.DEFAULT_FRAME_LABELS),
            rate=(int(f.sample_rate), int(f.hop_length), time_grid.time_pooling(config.model)))
        strong[offsets[2]:] = strong_targets
    arrays = pipeline.SplitArrays(
        pipeline.ConcatRows([a.features for a in parts_arrays]),
        np.concatenate([np.asarray(a.frames) for a in parts_arrays]),
        np.concatenate([np.asarray(a.labels, np.float32) if k != UNLABELED
                        else np.zeros((len(a), c), np.float32)
                        for a, k in zip(parts_arrays, kinds)]),
        {"kind": np.concatenate([np.full(n, k, np.int32) for n, k in zip(sizes, kinds)]),
         "strong": strong,
         **({"embeddings": pipeline.ConcatRows([a.extra["embeddings"] for a in parts_arrays])}
            if "embeddings" in parts_arrays[0].extra else {})})
    # a validation split in the dataset picks the checkpoint; none: hold out training clips.
    # DESED_task's roles (its synthetic validation set is the validation split) also keep
    # data.weak_held_out of the weak clips out of training, the rows DESED_task holds out
    held_out = 0.0 if common.has_validation_split(inputs) else mt.val_fraction
    desed_task = split_roles.in_use(inputs.splits) == split_roles.DESED_TASK
    if desed_task:
        train_weak, val_weak = split_roles.weak_rows(sizes[0], config.data.weak_held_out,
                                                     config.seed)
    else:
        train_weak, val_weak = _split_rows(sizes[0], held_out, config.seed, "weak")
    # without a strong split its share of the batch goes to weak clips: the batch keeps its
    # configured size (and its divisibility by the device count)
    parts = {WEAK: (train_weak, mt.batch_weak + (0 if use_strong else mt.batch_strong)),
             UNLABELED: (offsets[1] + np.arange(sizes[1]), mt.batch_unlabeled)}
    val_strong = None
    if use_strong:
        train_strong, val_strong = _split_rows(sizes[2], held_out, config.seed, "strong")
        parts[STRONG] = (offsets[2] + train_strong, mt.batch_strong)
    parts = {k: v for k, v in parts.items() if v[1] > 0 and len(v[0])}
    logging.info("mean teacher: %s clips per batch; %d weak and %s strong clips held out%s",
                 {["weak", "unlabeled", "strong"][k]: n for k, (_, n) in parts.items()},
                 len(val_weak), "no" if val_strong is None else len(val_strong),
                 " (DESED_task's roles: synthetic21_validation is the validation split)"
                 if desed_task else
                 " (the validation split picks the checkpoint)" if not held_out else "")
    return Training(arrays, parts, val_weak, val_strong, strong_targets)


def steps_per_epoch(training: Training, configured: int) -> int:
    """config value, or (0) the steps of one pass over the largest part of the mix."""
    if configured > 0:
        return configured
    return max(math.ceil(len(rows) / n) for rows, n in training.parts.values())


def mixed_order(rng: np.random.Generator, parts: dict, steps: int) -> np.ndarray:
    """Row order of `steps` batches, each [weak..., unlabeled..., strong...] in the mix's counts.

    Each part is drawn from consecutive reshuffles of its rows, so every clip of a part is seen
    once before any is seen twice.
    """
    blocks = []
    for rows, n in parts.values():
        need = steps * n
        draws = np.concatenate([rng.permutation(rows) for _ in range(-(-need // len(rows)))])
        blocks.append(draws[:need].reshape(steps, n))
    return np.concatenate(blocks, axis=1).reshape(-1)


# ------------------------------------------------------------------------------ training
def init_state(config, rampup_steps: int = 0) -> MeanTeacherState:
    """Student and teacher start equal (the teacher is an average of the student's past);
    the learning rate ramps up over rampup_steps (mean_teacher.learning_rate_rampup)."""
    base = common.init_state(config, NAME, rampup_steps=rampup_steps)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    copy = functools.partial(jax.tree_util.tree_map, np.array)  # own buffers: donation-safe
    return MeanTeacherState(**fields, ema_params=copy(base.params),
                            ema_batch_stats=copy(base.batch_stats))


def new_state(config, mesh) -> MeanTeacherState:
    """init_state, replicated over the mesh."""
    return sharding.replicate(init_state(config), mesh)


def step_settings(config, total_steps: int) -> StepSettings:
    """The step's constants from config.mean_teacher (its `augment` section included)."""
    mt, a = config.mean_teacher, config.mean_teacher.augment
    return StepSettings(
        bce_eps=mt.bce_eps, ema_decay=mt.ema_decay, consistency_weight=mt.consistency_weight,
        rampup_steps=int(round(mt.consistency_rampup * total_steps)),
        mixup_share=a.mixup_share, mixup_alpha=a.mixup_alpha, time_mask=a.time_mask,
        freq_mask=a.freq_mask, time_shift=a.time_shift,
        time_pooling=time_grid.time_pooling(config.model), ordered=common.ordered_reductions(config),
        desed_task_timing=mt.step_timing == "desed_task",
        mask_teacher=bool(a.mask_teacher))


def validation_score(inputs: common.Inputs, trainings: list[Training], state) -> list[float]:
    """Per run: with a validation split, its score by mean_teacher.checkpoint_metric (event-based
    macro F1 or PSDS1, common.validation_score), plus, under DESED_task's split roles, the clip
    macro F1 of the weak clips held out (DESED_task's objective: synthetic validation score +
    weak F1); without one, the clip macro F1 of the held-out weak clips (at
    mean_teacher.val_threshold), averaged, when there are strong clips, with the event-based macro F1 of the held-out
    strong clips (strong_event_f1)."""
    mt, runs = inputs.config.mean_teacher, inputs.runs

    def held_out_f1() -> list[float]:
        weak = inputs.run_batches("weak")
        probs = runs.predict(common.eval_fn("clip", weak), state, weak,
                             [t.val_weak for t in trainings], mt.eval_batch_size)
        return [clip_scores.macro_f1(p, inputs.arrays["weak"].labels[t.val_weak],
                                     mt.val_threshold) for p, t in zip(probs, trainings)]

    if common.has_validation_split(inputs):
        scores = common.validation_score(inputs, state, mt.eval_batch_size,
                                         mt.checkpoint_metric)
        if len(trainings[0].val_weak):  # DESED_task's roles: its objective adds the two
            scores = [s + f for s, f in zip(scores, held_out_f1())]
        return scores
    values = [[f] for f in held_out_f1()]
    if trainings[0].val_strong is not None and len(trainings[0].val_strong):
        b = inputs.run_batches("synthetic")
        frames = runs.predict(common.eval_fn("frame", b), state, b,
                              [t.val_strong for t in trainings], mt.eval_batch_size)
        for v, f, t in zip(values, frames, trainings):
            v.append(strong_event_f1(inputs.config, inputs.splits["synthetic"], t.val_strong, f,
                                     inputs.arrays["synthetic"].frames[t.val_strong]))
    return [float(np.mean(v)) for v in values]


def strong_event_f1(config, split: dataset.Split, rows: np.ndarray, probs: np.ndarray,
                    frames: np.ndarray) -> float:
    """Event-based macro F1 (config.evaluation, the test's metric) of the clips `rows` of a
    strong split from their frame probabilities (N, T', C), post-processed as the test is.

    Why events and not frames: on the demo's 2019 setting the frame F1 (at 0.5) of held-out
    strong clips stopped rising after ~16 of 30 epochs while the events kept improving; the
    checkpoints it picked scored 4-7 points of test event F1 below the last ones, and the
    held-out event F1 ranked those checkpoints as the test did.
    """
    _, results = common.detect_and_score(config, split, probs, frames, rows)
    return results["event_based"]["f_measure_macro"]


def train(inputs: common.Inputs) -> common.Trained:
    """Trains (or resumes) the student and teacher; returns the state that predicts.

    Several runs: each its own validation rows and batch order (its seed), one program."""
    config, mt, runs = inputs.config, inputs.config.mean_teacher, inputs.runs
    # the runs differ only in which rows they hold out and in what order they draw them: the
    # mixed arrays (and their device copy) are the same for all
    trainings = [build_training(inputs, c) for c in runs.configs]
    training = trainings[0]
    batches = pipeline.Batches(training.arrays, inputs.mesh, inputs.stats, config.runtime)
    steps = steps_per_epoch(training, mt.steps_per_epoch)
    batch_size = sum(n for _, n in training.parts.values())
    settings = step_settings(config, steps * mt.num_epochs)
    train_fn = runs.train_step_fn(functools.partial(train_step, settings=settings), batches)
    logging.info("mean teacher: %d steps of %d clips per epoch, consistency ramp-up over %d "
                 "steps", steps, batch_size, settings.rampup_steps)
    predict_with = mt.predict_with

    def train_epoch(state, epoch, resume):
        orders = [mixed_order(streams.numpy_rng(c.seed, NAME, "order", counter=epoch), t.parts,
                              steps)
                  for c, t in zip(runs.configs, trainings)]
        return runs.run_epoch(train_fn, batches, orders, batch_size, state, resume)

    def validate(state):
        return validation_score(inputs, trainings, _predictor(state, predict_with))

    # DESED_task ramps the learning rate up as the consistency weight (share of all steps)
    lr_rampup = int(round(mt.learning_rate_rampup * steps * mt.num_epochs))
    state = runs.state(functools.partial(init_state, rampup_steps=lr_rampup))
    state, progress = loop.fit(NAME, state, mt.num_epochs, loop.EarlyStopping.from_config(mt),
                               train_epoch, validate, inputs.workdir / NAME, inputs.writer,
                               [{"learning_rate": c.mean_teacher.learning_rate}
                                for c in runs.configs])
    summaries = []
    for d, record in zip(inputs.run_dirs, progress):
        if sharding.is_primary():
            outputs.write_json(d / NAME / "result.json", dataclasses.asdict(record))
        summaries.append(summary.TrainingSummary(
            NAME, {NAME: summary.StageSummary(record.best_score, record.best_epoch)},
            {"predict_with": predict_with}))
    return common.Trained(_predictor(state, predict_with), summaries)


def _predictor(state: MeanTeacherState, predict_with: str):
    return state.teacher() if predict_with == "teacher" else state


def check(config, num_devices: int) -> None:
    """The mean_teacher section's values that cannot work (ConfigError)."""
    if "mean_teacher" not in config:
        raise ConfigError("mean_teacher: recipe 'mean_teacher' needs a mean_teacher section "
                          "(see configs/mean_teacher.py)")
    mt = config.mean_teacher
    metric = mt.checkpoint_metric
    if metric not in common.CHECKPOINT_METRICS:
        raise ConfigError(f"mean_teacher.checkpoint_metric: unknown value {metric!r}; choose one "
                          f"of {', '.join(repr(m) for m in common.CHECKPOINT_METRICS)}")
    timing = mt.step_timing
    if timing not in STEP_TIMINGS:
        raise ConfigError(f"mean_teacher.step_timing: unknown value {timing!r}; choose one of "
                          f"{', '.join(map(repr, STEP_TIMINGS))}")
    if mt.predict_with not in ("teacher", "student"):
        raise ConfigError(f"mean_teacher.predict_with: unknown value {mt.predict_with!r}; "
                          "choose one of 'teacher', 'student'")
    parts = {k: mt[k] for k in ("batch_weak", "batch_unlabeled", "batch_strong")}
    for name, value in parts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"mean_teacher.{name}: expected an integer >= 0, got {value!r}")
    if parts["batch_weak"] == 0 and parts["batch_strong"] == 0:
        raise ConfigError("mean_teacher.batch_weak: no labelled clip in a batch (weak and "
                          "strong are both 0)")
    total = sum(parts.values())  # without a strong split, its share goes to weak clips
    if total % num_devices:
        raise ConfigError(f"mean_teacher.batch_weak + batch_unlabeled + batch_strong: "
                          f"{total} clips per batch is not divisible by the {num_devices} "
                          f"devices the batch is split over")
    if not 0.0 <= mt.ema_decay < 1.0:
        raise ConfigError(f"mean_teacher.ema_decay: expected 0 <= decay < 1, got {mt.ema_decay}")
    a = mt.augment
    if not 0.0 <= a.mixup_share <= 1.0:
        raise ConfigError(f"mean_teacher.augment.mixup_share: expected a share in [0, 1], "
                          f"got {a.mixup_share}")
    if not isinstance(a.mask_teacher, bool):
        raise ConfigError(f"mean_teacher.augment.mask_teacher: expected True or False, got "
                          f"{a.mask_teacher!r}")
    for name in ("time_mask", "freq_mask", "time_shift"):
        if isinstance(a[name], bool) or not isinstance(a[name], int) or a[name] < 0:
            raise ConfigError(f"mean_teacher.augment.{name}: expected an integer >= 0, "
                              f"got {a[name]!r}")


RECIPE = recipes.register(recipes.Recipe(NAME, train, sections=(NAME,), stages=(NAME,),
                                         check=check))
