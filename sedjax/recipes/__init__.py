"""Recipes: how a system is trained, one module per method, chosen by `config.recipe`.

A recipe module declares one `Recipe` and registers it (`register`): its name, its config
section(s), its checks (called by sedjax.config.validate), the stage folders it writes under
each run's folder (each with a result.json) and its `train(inputs: common.Inputs) ->
common.Trained`. It owns its steps' losses and its loops (and their resumption), and nothing
else: data, features, statistics, prediction, post-processing, scoring and reports are the
shared stages of sedjax.run. Its random streams come from its name (sedjax.train.streams).

A module `sedjax/recipes/<name>.py` is the recipe `<name>`: it is imported (and registers
itself) the first time a config names it, so a new recipe is that one module plus its config.
Code elsewhere registers a recipe by calling `register` (tests/test_recipes.py builds one in
the test file).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Callable

SHARED = ("common",)  # modules of this package that are not recipes


def _no_checks(config, num_devices: int) -> None:
    del config, num_devices


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A training method.

    sections: the config sections it reads (each with the optimizer fields of
    sedjax.train.state.create_train_state when the recipe builds its state with
    common.init_state: learning_rate, adam_b1, adam_b2, adam_eps; learning_rates optional);
    stages: its folders under each run's folder, in training order, each holding
    checkpoints/ and result.json (and one StageSummary in its training summary);
    check(config, num_devices): raises sedjax.system.cli.ConfigError for a value of its
    sections that cannot work.
    picks_on_events(config, has_validation_split) -> bool: whether its checkpoint choice
    scores events (so reads `postprocess` and `evaluation`; sedjax.config.stages retrains when
    they change). True unless the recipe says otherwise: retraining is the safe error.
    """

    name: str
    train: Callable
    sections: tuple[str, ...]
    stages: tuple[str, ...]
    check: Callable = _no_checks
    picks_on_events: Callable = lambda config, has_validation_split: True


_REGISTERED: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Makes `recipe` selectable as config.recipe = recipe.name; returns it."""
    _REGISTERED[recipe.name] = recipe
    return recipe


def _modules() -> list[str]:
    """The recipe modules of this package (two_pass: the seed's; mean_teacher; ...)."""
    return [m.name for m in pkgutil.iter_modules(__path__) if m.name not in SHARED]


def names() -> tuple[str, ...]:
    """Every recipe a config may name: this package's modules and those registered since."""
    return tuple(dict.fromkeys([*_modules(), *_REGISTERED]))


def get(name: str) -> Recipe:
    """The recipe called `name` (its module is imported, and so registers it, here)."""
    if name not in _REGISTERED and name in _modules():
        importlib.import_module(f"{__name__}.{name}")
    if name not in _REGISTERED:
        raise ValueError(f"recipe: unknown recipe {name!r}; choose one of {names()}")
    return _REGISTERED[name]
