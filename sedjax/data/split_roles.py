"""Which DESED split makes a run's choices and which is its test: sedjax's roles or DESED_task's.

A run makes every choice (checkpoint, tuned post-processing) on its "validation" split and
scores its "test" split once, at the end (sedjax.run). On a DESED-layout folder:
- 'sedjax': validation = metadata/validation/validation.tsv, test = the public evaluation set
  metadata/eval/public.tsv;
- 'desed_task' (DCASE-REPO/DESED_task's recipes/dcase2023_task4_baseline/train_sed.py):
  validation = the synthetic validation set metadata/validation/synthetic21_validation/
  soundscapes.tsv (+ durations.tsv), with data.weak_held_out of the weak clips kept out of
  training (DESED_task validates on those too), test = metadata/validation/validation.tsv;
- 'auto' (data.split_roles' default): 'desed_task' when the folder has no public evaluation set
  (DESED_task's download leaves none), else 'sedjax'.
The DCASE2018 layout has one protocol: 'sedjax'.
"""

from __future__ import annotations

import pathlib

import numpy as np

from sedjax.system import cli

SEDJAX, DESED_TASK = "sedjax", "desed_task"
CHOICES = ("auto", SEDJAX, DESED_TASK)
PUBLIC_EVAL = "metadata/eval/public.tsv"
# DESED_task's synth_val_tsv / synth_val_dur / synth_val_folder(_44k) (confs/default.yaml)
SYNTH_VALIDATION = ("metadata/validation/synthetic21_validation/soundscapes.tsv",
                    "audio/validation/synthetic21_validation/soundscapes", "strong")
SYNTH_VALIDATION_DURATIONS = "metadata/validation/synthetic21_validation/durations.tsv"
DESED_VALIDATION = "metadata/validation/validation.tsv"
GET_IT = ("DCASE-REPO/DESED_task's generate_dcase_task4_2023.py downloads it (or generate one: "
          "python -m sedjax.data.synthetic --layout=desed --num_synth_validation=...)")


class RolesError(cli.UserError, ValueError):
    """A folder without the split its roles need; the message names the file."""


def resolve(requested: str, root: pathlib.Path, layout: str) -> str:
    """The roles in use ('sedjax' or 'desed_task') for data.split_roles `requested` on the
    folder `root` in `layout`; RolesError when the folder lacks a split they need."""
    if requested not in CHOICES:
        raise RolesError(f"data.split_roles: unknown value {requested!r}; choose one of "
                         f"{', '.join(map(repr, CHOICES))}")
    if layout != "desed":
        if requested == DESED_TASK:
            raise RolesError(f"data.split_roles: 'desed_task' needs a DESED-layout dataset, "
                             f"not {layout!r}")
        return SEDJAX
    public = (root / PUBLIC_EVAL).is_file()
    roles = requested if requested != "auto" else (SEDJAX if public else DESED_TASK)
    if roles == SEDJAX and not public:
        raise RolesError(f"{root / PUBLIC_EVAL}: not found; sedjax's roles test on DESED's "
                         f"public evaluation set: add it (metadata/eval/public.tsv + "
                         f"audio/eval/public/), or set --config.data.split_roles=desed_task "
                         f"(or auto) to test on validation as DESED_task does")
    if roles == DESED_TASK:
        for rel, what in ((SYNTH_VALIDATION[0], "the synthetic validation set they choose on"),
                          (DESED_VALIDATION, "the validation split they test on")):
            if not (root / rel).is_file():
                why = "no metadata/eval/public.tsv, so " if requested == "auto" else ""
                raise RolesError(f"{root / rel}: not found; {why}DESED_task's roles are in use "
                                 f"and need {what}: add it ({GET_IT}), or add the public "
                                 f"evaluation set (metadata/eval/public.tsv) for sedjax's roles")
    return roles


def describe(requested: str, roles: str, weak_held_out: float,
             use_validation: bool = True) -> str:
    """The one line that says which roles are in use, and why; weak_held_out: the share of weak
    clips the recipe holds out for its choices (0: none said)."""
    held = f" (+{weak_held_out * 100:g} % of weak held out)" if weak_held_out else ""
    choices = ("choices on clips held out of training (data.use_validation off)"
               if not use_validation else "choices on validation" if roles == SEDJAX
               else f"choices on synthetic21_validation{held}")
    if roles == SEDJAX:
        return (f"splits: {choices}, test = public evaluation set "
                f"(metadata/eval/public.tsv: sedjax's roles)")
    why = ("no metadata/eval/public.tsv" if requested == "auto"
           else "data.split_roles = desed_task")
    return f"splits: {choices}, test = validation ({why}: DESED_task's roles)"


def in_use(splits: dict) -> str:
    """The roles a loaded dataset's splits were read under ({name: sedjax.data.dataset.Split})."""
    validation = splits.get("validation")
    if validation is not None and validation.source == SYNTH_VALIDATION[0]:
        return DESED_TASK
    return SEDJAX


def weak_rows(n: int, held_out: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of n weak clips, sorted: DESED_task's
    weak_df.sample(frac=1 - held_out, random_state=seed) keeps the same rows (pandas draws them
    with numpy's RandomState(seed).choice(n, round(frac * n), replace=False))."""
    keep = np.random.RandomState(seed).choice(n, round((1.0 - held_out) * n), replace=False)
    return np.sort(keep), np.setdiff1d(np.arange(n), keep)
