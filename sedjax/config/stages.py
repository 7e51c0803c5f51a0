"""What a rerun in a used workdir redoes: the stages that the changed config values feed.

A workdir's config.json is the config its outputs were made with. Before a run trains, the
new config is compared with it, value by value:

  data, features   keyed by their own caches (the synthetic dataset's marker, the feature cache
                   key: data.* and the feature settings of sedjax.data.features), never moved;
  training         every value but those of SCORING_ONLY and NO_EFFECT (and of `postprocess`
                   and `evaluation`, when the recipe's checkpoint choice does not score
                   events): checkpoints, pseudo-labels, predictions, the model, training.json;
  scoring          every value: results.json / results.txt (scoring itself always reruns).

The outputs of a stage whose values changed are moved to workdir/replaced/<time>/ (nothing is
deleted), and one line says which values changed and what is redone, so nothing is ever
reported under a config that did not produce it.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import shutil
from typing import Any

from absl import logging

from sedjax.config import config_files
from sedjax.models import kernels
from sedjax.system import files

# read only by post-processing choice and scoring
SCORING_ONLY = ("postprocess.tune", "evaluation.psds")
# change nothing a stage computes (speed, logging and pictures)
NO_EFFECT = ("runtime.piano_roll_clips", "runtime.log_every_epochs", "runtime.prefetch",
             "runtime.features_on_device", "runtime.device_memory_fraction",
             "runtime.compilation_cache",
             "data.synthetic.num_workers", "features.num_workers", "features.batch_size",
             "model.beats.batch_size")
# workdir entries that are not training outputs: inputs, caches, this module's own
REPLACED = "replaced"
KEPT = ("config.json", "synthetic", "features", "item_access_error.log.csv", ".sedjax.lock",
        REPLACED)
SCORES = ("results.json", "results.txt")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a.b.c': value} of a nested dict (lists and tuples compared as JSON lists)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.loads(json.dumps(tree, default=str))}


def _under(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _kernels_as_run(config: dict) -> dict:
    """The config with the CPU kernels' settings as they run on this backend ('auto' resolved,
    sedjax.models.kernels): 'auto' against the value it picks here is no change."""
    model = config.get("model")
    if not isinstance(model, dict):
        return config
    model = dict(model)
    for field in kernels.FIELDS:
        if field in model:
            model[field] = kernels.choose(field, model[field])
    return {**config, "model": model}


def changed_values(old: dict, new: dict) -> dict[str, tuple]:
    """{key: (old value, new value)} of every value that differs (absent: None); the CPU
    kernels' settings compared as they run here."""
    a, b = flatten(_kernels_as_run(old)), flatten(_kernels_as_run(new))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def feeds_training(key: str, checkpoint_scores_events: bool) -> bool:
    """Whether a value changes what training computes (its checkpoints and predictions)."""
    if _under(key, SCORING_ONLY + NO_EFFECT):
        return False
    if not checkpoint_scores_events and _under(key, ("postprocess", "evaluation")):
        return False
    return True


def _is_training_output(entry: pathlib.Path) -> bool:
    return (entry.name not in KEPT + SCORES and not entry.name.startswith(".")
            and not entry.name.startswith("audio_")  # resampled copies (data stage)
            and ".partial" not in entry.name)


def reconcile(config, workdir: pathlib.Path, checkpoint_scores_events: bool) -> list[str]:
    """Moves aside the outputs the changed values make stale, logs what is redone and writes
    config.json; returns the stages redone because of a change ([] when nothing changed)."""
    path = workdir / "config.json"
    new = json.loads(config.to_json_best_effort())
    # an older workdir's config.json lacks the fields added since: as their defaults
    old = config_files.upgrade(json.loads(path.read_text())) if path.is_file() else None
    redone = []
    if old is not None:
        changed = changed_values(old, new)
        if changed:
            training = [k for k in changed if feeds_training(k, checkpoint_scores_events)]
            redone = ["training", "scoring"] if training else ["scoring"]
            moved = _move_aside(workdir, _stale(workdir, bool(training)))
            shown = "; ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, (a, b) in changed.items())
            message = (f"{workdir}: the config differs from the one its outputs were made with "
                       f"({shown}); redoing {' and '.join(redone)}"
                       + ("" if training else " (the trained models and predictions are reused)")
                       + (f"; the replaced outputs are in {moved}" if moved else ""))
            logging.warning(message)
            print(message, flush=True)
    files.write_text(path, config.to_json_best_effort(indent=2))
    return redone


def _stale(workdir: pathlib.Path, training: bool) -> list[pathlib.Path]:
    entries = [workdir / name for name in SCORES if (workdir / name).exists()]
    if training:
        entries += [e for e in sorted(workdir.iterdir()) if _is_training_output(e)]
    return entries


def _move_aside(workdir: pathlib.Path, entries: list[pathlib.Path]) -> pathlib.Path | None:
    """Moves entries to workdir/replaced/<UTC time>/; returns that folder (None: nothing)."""
    if not entries:
        return None
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = workdir / REPLACED / stamp
    target.mkdir(parents=True)
    for e in entries:
        shutil.move(str(e), str(target / e.name))
    return target


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
