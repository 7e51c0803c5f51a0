"""The models, found by `model.arch`: one module per architecture, each with a
`from_config(model_config, num_classes, axis_name, ordered_reductions)`.

A new architecture is one module here plus its name in ARCHS. Not an architecture: beats.py,
the BEATs encoder (frame embeddings for a CRNN), built by `beats.encoder_from_config`, or
trained inside desed_crnn's model (model.beats.trainable)."""

from __future__ import annotations

import importlib

import flax.linen as nn
import jax

# model.arch -> the module that builds it
ARCHS = {"crnn": "sedjax.models.crnn", "desed_crnn": "sedjax.models.desed_crnn"}


def from_config(model_config, num_classes: int, axis_name: str | None = None,
                ordered_reductions: bool = False) -> nn.Module:
    """The model of config.model (its `arch`) with `num_classes` outputs
    (len(config.data.classes)); axis_name and ordered_reductions: how BatchNorm averages batch
    moments over devices."""
    module = importlib.import_module(ARCHS[model_config.arch])
    return module.from_config(model_config, num_classes, axis_name, ordered_reductions)


def count_params(params) -> int:
    """Number of scalars in a parameter tree."""
    return sum(x.size for x in jax.tree_util.tree_leaves(params))
