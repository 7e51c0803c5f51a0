"""The one epoch loop every recipe shares: epochs, validation scores, early stopping, checkpoints.

The state carries a leading run axis (config.num_runs = K; one run is K = 1, see
sedjax.train.stacked_runs). A recipe gives the loop two functions:
`train_epoch(state, epoch, resume) -> (state, metric sums, (K,) per key)`, which hands `resume` on to run_epoch, and
`validate(state) -> one score per run` (higher is better). Each run stops early on its own, as
the seed's Keras callback did (patience, min_delta, not before a start epoch): once its patience
ran out, later epochs still compute for it (one program) but change neither its best state nor
its record. The loop ends when every run stopped or at num_epochs. `latest` is saved after
every epoch, so a killed run resumes after its last finished epoch; `best` holds each run's
best state. Their meta is {'epoch': the last finished epoch, 'runs': [LoopState of each run]}.

Stopping on purpose (sedjax.system.preemption): a SIGTERM or SIGINT during an epoch ends it
after the current step; `latest` then also records {'partial': {'epoch', 'steps', 'sums'}},
the steps done and their metric sums, and `Preempted` is raised. The rerun restores that state;
fit passes the position to train_epoch as `resume`, and run_epoch skips the epoch's first
`steps` batches (the batch order is a function of seed and epoch), so it ends where an
uninterrupted run ends, bit for bit on one device.

Divergence: a loss that is not finite on any step ends the stage at the end of that epoch with
`Diverged`, naming the epoch and the first bad step; the checkpoints keep the last good epoch.
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
from sedjax.system import cli, preemption, sharding, timings
from sedjax.train import checkpoint

# orbax step of a `latest` checkpoint: STEPS_PER_EPOCH * (epoch + 1) after a finished epoch,
# STEPS_PER_EPOCH * epoch + steps inside one (always increasing, as orbax wants)
STEPS_PER_EPOCH = 1_000_000


class Preempted(cli.UserError):
    """Training stopped on a signal after saving its state; the same command resumes it."""

    exit_code = 143  # 128 + SIGTERM: what schedulers expect of a job that stopped on one


class Diverged(cli.UserError):
    """A training loss was not finite; the checkpoints hold the last good epoch."""

    exit_code = 3


@dataclasses.dataclass
class EpochPosition:
    """How far an interrupted epoch got: steps done and their metric sums ((K,) per key)."""

    epoch: int
    steps: int
    sums: dict

    def to_json(self) -> dict:
        return {"epoch": self.epoch, "steps": self.steps,
                "sums": {k: np.asarray(v).tolist() for k, v in self.sums.items()}}

    @classmethod
    def from_json(cls, meta: dict) -> "EpochPosition":
        # float32 values survive the trip through JSON's float64 exactly
        return cls(int(meta["epoch"]), int(meta["steps"]),
                   {k: np.asarray(v, np.float32) for k, v in meta["sums"].items()})


class _Interrupted(Exception):
    """run_epoch stopped early on a signal (caught by fit, which saves the state)."""

    def __init__(self, state, position: EpochPosition):
        super().__init__("interrupted")
        self.state, self.position = state, position


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


def run_epoch(step_fn, batches: pipeline.Batches, rows: np.ndarray, batch_size: int, state,
              resume: EpochPosition | None):
    """One pass of `step_fn` over rows (K, n) (full batches); (state, metric sums on host).

    resume: the `resume` fit gave train_epoch: None starts the epoch, an EpochPosition goes on
    from an interrupted one (its first steps skipped, its sums carried). Stops after the
    current step when preemption.should_stop(); one call per train_epoch.
    """
    start = resume.steps if resume is not None else 0
    total = resume.sums if resume is not None else None
    first_bad = None  # per run: the first step whose metrics are not finite, else -1
    steps = start
    for args in batches(rows[:, start * batch_size:], batch_size, drop_remainder=True):
        state, metrics = step_fn(state, batches.stats, *args)
        # summed on the device: no host sync inside the epoch
        total, first_bad = _accumulate(total, metrics, first_bad, steps)
        steps += 1
        if preemption.should_stop():
            raise _Interrupted(state, EpochPosition(-1, steps, jax.device_get(total)))
    if total is None:
        return state, {}
    total = jax.device_get(total)
    if first_bad is not None:
        total["first_nonfinite_step"] = np.asarray(jax.device_get(first_bad))
    return state, total


@jax.jit
def _accumulate(total, metrics, first_bad, step):
    """(total + metrics, first non-finite step per run) in one dispatch."""
    bad = jnp.zeros(jax.tree_util.tree_leaves(metrics)[0].shape, bool)
    for v in jax.tree_util.tree_leaves(metrics):
        bad = bad | ~jnp.isfinite(v)
    if first_bad is None:
        first_bad = jnp.full(bad.shape, -1, jnp.int32)
    first_bad = jnp.where((first_bad < 0) & bad, step, first_bad)
    if total is None:
        return metrics, first_bad
    return jax.tree_util.tree_map(lambda a, b: a + b, total, metrics), first_bad


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
    `latest`, also inside an epoch; raises Preempted or Diverged (module docstring).

    train_epoch(state, epoch, resume) -> (state, metric sums): one epoch through run_epoch,
    given `resume` as it is (None, or where an interrupted epoch stopped).

    writer: a sedjax.reporting.tensorboard.SummaryWriter that gets every epoch's metrics,
    validation score and constants[k] (e.g. run k's learning rate) under `<name>/` (one run)
    or `run<k>/<name>/`.
    """
    ckpt = checkpoint.PassCheckpoints(directory)
    state, last, loops, best, position = _restore(ckpt, state, name)

    def meta(partial: EpochPosition | None = None):
        out = {"epoch": last, "runs": [dataclasses.asdict(r) for r in loops]}
        return out if partial is None else {**out, "partial": partial.to_json()}

    def save_partial(state, position: EpochPosition):
        ckpt.save("latest", STEPS_PER_EPOCH * position.epoch + position.steps, state,
                  meta(position))
        ckpt.wait()
    try:  # an exception or Ctrl-C still finishes the checkpoints already started
        done = all(r.stopped for r in loops)
        bar = tqdm(range(last + 1, 0 if done else num_epochs), desc=name, unit="epoch",
                   disable=None, initial=last + 1, total=num_epochs)
        with preemption.deferred_signals():
            for epoch in bar:
                start, compiled = time.time(), timings.compile_seconds()
                state, sums = _epoch(name, train_epoch, state, epoch, position, save_partial,
                                     directory)
                position = None
                _check_finite(name, epoch, sums.pop("first_nonfinite_step", None), last,
                              directory)
                trained = time.time()
                scores = [float(s) for s in validate(state)]
                timings.epoch(name, epoch + 1, trained - start, time.time() - trained,
                              timings.compile_seconds() - compiled)
                improved = _record_epoch(name, loops, stopping, epoch, sums, scores,
                                         round(time.time() - start, 2), writer, constants)
                last = epoch
                if any(improved) or best is None:
                    best = select(jnp.asarray(improved), state, state if best is None else best)
                    ckpt.save("best", epoch, best, meta())
                ckpt.save("latest", STEPS_PER_EPOCH * (epoch + 1), state, meta())
                bar.set_postfix(val=" ".join(f"{s:.4f}" for s in scores))
                logging.info("%s epoch %3d  val scores %s  (best %s)  %.1fs", name, epoch + 1,
                             " ".join(f"{s:.4f}" for s in scores),
                             " ".join(f"{r.best_score:.4f}@{r.best_epoch + 1}" for r in loops),
                             time.time() - start)
                if all(r.stopped for r in loops):
                    break
                if preemption.should_stop():  # a signal during validation: saved already
                    ckpt.wait()
                    raise _preempted(name, f"after epoch {epoch + 1}", directory)
        bar.close()
    finally:
        ckpt.wait()
    return restore_best(ckpt, state, directory, name), loops


def _restore(ckpt: checkpoint.PassCheckpoints, state, name: str) -> tuple:
    """(state, last finished epoch, [LoopState], best state or None, EpochPosition or None):
    from `latest` and `best` when they exist, else the start."""
    loops = [LoopState() for _ in range(len(jax.tree_util.tree_leaves(state)[0]))]
    restored = ckpt.restore("latest", state)
    if restored is None:
        return state, -1, loops, None, None
    state, meta = restored
    last, loops = meta["epoch"], [LoopState.from_json(m) for m in meta["runs"]]
    position = EpochPosition.from_json(meta["partial"]) if meta.get("partial") else None
    kept = ckpt.restore("best", state)
    logging.info("%s: resuming %s (best val scores %s)", name,
                 f"after epoch {last + 1}" if position is None else
                 f"epoch {position.epoch + 1} after step {position.steps}",
                 " ".join(f"{r.best_score:.4f}" for r in loops))
    return state, last, loops, (kept[0] if kept is not None else None), position


def _epoch(name: str, train_epoch: Callable, state, epoch: int, position, save_partial,
           directory: pathlib.Path) -> tuple:
    """train_epoch(state, epoch, position), resuming `position` (None: from its start);
    stopped by a signal, it saves how far it got (save_partial) and raises Preempted."""
    try:
        return train_epoch(state, epoch, position)
    except _Interrupted as stop:
        stop.position.epoch = epoch
        save_partial(stop.state, stop.position)
        raise _preempted(name, f"at epoch {epoch + 1}, step {stop.position.steps}",
                         directory) from None


def _preempted(name: str, where: str, directory: pathlib.Path) -> Preempted:
    return Preempted(f"{name}: stopped by {preemption.reason()} {where}; its state is saved in "
                     f"{directory}/checkpoints/latest. Rerun the same command to resume from "
                     "there.")


def _check_finite(name: str, epoch: int, first_bad, last_good: int,
                  directory: pathlib.Path) -> None:
    """Raises Diverged when a run's loss was not finite on a step of this epoch."""
    if first_bad is None or not np.any(np.asarray(first_bad) >= 0):
        return
    bad = [(k, int(s)) for k, s in enumerate(np.asarray(first_bad)) if s >= 0]
    which = ", ".join(f"run {k} at step {s + 1}" if len(first_bad) > 1 else f"step {s + 1}"
                      for k, s in bad)
    kept = (f"the last good state (epoch {last_good + 1}) is kept in {directory}/checkpoints"
            if last_good >= 0 else "no epoch finished before it")
    raise Diverged(f"{name} diverged: the training loss is not finite in epoch {epoch + 1}, "
                   f"{which}; {kept}. Lower the learning rate of {name} (or check the inputs) "
                   "and rerun.")


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
