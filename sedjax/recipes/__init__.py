"""Recipes: how a system is trained, one module per method, chosen by `config.recipe`.

Each recipe module has `train(inputs: common.Inputs) -> common.Trained`: it owns its steps'
losses and its loops (and their resumption), and nothing else. Data, features, statistics,
prediction, post-processing, scoring and reports are the shared stages of sedjax.run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

RECIPES = {
    "two_pass": "sedjax.recipes.two_pass",  # the DCASE2018 baseline (the seed)
    "mean_teacher": "sedjax.recipes.mean_teacher",  # DCASE2019 baseline / DESED
}


def get(name: str) -> ModuleType:
    """The recipe module called `name`."""
    if name not in RECIPES:
        raise ValueError(f"recipe: unknown recipe {name!r}; choose one of {tuple(RECIPES)}")
    return importlib.import_module(RECIPES[name])
