"""The CPU kernels' settings (sedjax.models.kernels): 'auto' picks the CPU kernels on the CPU
backend and the plain Flax path on GPU and TPU; explicit values are kept everywhere."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from sedjax.config import stages, validate
from sedjax.models import crnn, desed_crnn, kernels
from sedjax.models.dropout import Dropout

CPU = {"fold_batch_norm": True, "first_block_chunk_frames": 100, "dropout_masks": "hash"}
PLAIN = {"fold_batch_norm": False, "first_block_chunk_frames": 0, "dropout_masks": "threefry"}


@pytest.mark.parametrize("backend, expected", [("cpu", CPU), ("gpu", PLAIN), ("tpu", PLAIN)])
def test_auto_picks_the_cpu_kernels_only_on_the_cpu(backend, expected):
    model = tiny.get_config().model
    assert {f: model[f] for f in kernels.FIELDS} == dict.fromkeys(kernels.FIELDS, "auto")
    assert kernels.chosen(model, backend) == expected
    assert kernels.cpu_kernels() == CPU and kernels.plain() == PLAIN


@pytest.mark.parametrize("backend", ["cpu", "gpu", "tpu"])
def test_an_explicit_setting_is_used_on_every_backend(backend):
    model = tiny.get_config().model
    model.fold_batch_norm, model.first_block_chunk_frames = False, 40
    model.dropout_masks = "hash"
    assert kernels.chosen(model, backend) == {"fold_batch_norm": False,
                                              "first_block_chunk_frames": 40,
                                              "dropout_masks": "hash"}


@pytest.mark.parametrize("backend, expected", [("cpu", CPU), ("gpu", PLAIN)])
def test_the_models_are_built_with_the_backends_choice(monkeypatch, backend, expected):
    monkeypatch.setattr(kernels.jax, "default_backend", lambda: backend)
    config = tiny.get_config()
    model = crnn.from_config(config.model, 10)
    assert {f: getattr(model, f) for f in kernels.FIELDS} == expected
    config.model.arch = "desed_crnn"
    assert desed_crnn.from_config(config.model, 10).dropout_masks == expected["dropout_masks"]


def test_threefry_masks_are_flax_dropouts():
    """masks='threefry' draws what flax.linen.Dropout draws from the same key; 'hash' does not."""
    import flax.linen as nn
    x = jnp.ones((4, 50, 6))
    rngs = {"dropout": jax.random.key(3)}
    ours = Dropout(0.3, broadcast_dims=(1,), masks="threefry").apply({}, x, rngs=rngs)
    flax = nn.Dropout(0.3, broadcast_dims=(1,), deterministic=False).apply({}, x, rngs=rngs)
    np.testing.assert_array_equal(ours, flax)
    hashed = Dropout(0.3, broadcast_dims=(1,), masks="hash").apply({}, x, rngs=rngs)
    assert not np.array_equal(hashed, flax)
    assert np.all((hashed[:, :1] == hashed).all(axis=1))  # one mask per sequence in both
    with pytest.raises(ValueError, match="dropout_masks"):
        Dropout(0.3, masks="philox").apply({}, x, rngs=rngs)


@pytest.mark.parametrize("field, value", [("fold_batch_norm", "yes"), ("fold_batch_norm", 1),
                                          ("first_block_chunk_frames", -1),
                                          ("first_block_chunk_frames", "100"),
                                          ("dropout_masks", "philox")])
def test_bad_kernel_settings_name_the_field(field, value):
    config = tiny.get_config()
    config.model[field] = value
    with pytest.raises(validate.ConfigError, match=f"model.{field}"):
        validate.validate(config)


def test_auto_against_the_value_it_picks_here_is_no_change():
    """A workdir written when the settings were explicit (an older sedjax: True, 100, and no
    dropout_masks) is not redone by 'auto' on the CPU; an explicit other value is a change."""
    new = {"model": dict.fromkeys(kernels.FIELDS, "auto")}
    old = {"model": {"fold_batch_norm": True, "first_block_chunk_frames": 100,
                     "dropout_masks": "hash"}}
    assert jax.default_backend() == "cpu"
    assert stages.changed_values(old, new) == {}
    old["model"]["first_block_chunk_frames"] = 0
    assert stages.changed_values(old, new) == {"model.first_block_chunk_frames": (0, 100)}
