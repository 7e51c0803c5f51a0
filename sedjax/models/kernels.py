"""Which training kernels a backend gets: the CPU kernels only where they were measured faster.

Three paths of the seed CRNN were written for, and timed on, a 2-core CPU (docs/speed.md):
the first conv block computed in chunks with a gradient of its own
(`model.first_block_chunk_frames`), that block's BatchNorm folded into its conv
(`model.fold_batch_norm`) and dropout masks drawn from a counter hash (`model.dropout_masks`).
Each setting takes 'auto': the CPU kernel on the CPU backend, the plain Flax path (whole
conv, BatchNorm as a layer, flax's threefry masks) on GPU and TPU until
`launch/device_check.sh`, which times both, shows the CPU kernel faster there. An explicit
value is used everywhere.
"""

from __future__ import annotations

from typing import Any

import jax

from sedjax.models import conv_pool

AUTO = "auto"
# backends where the CPU kernels were measured faster than the plain path
MEASURED_FASTER_ON = ("cpu",)
DROPOUT_MASKS = ("hash", "threefry")
# what 'auto' picks: (on a backend of MEASURED_FASTER_ON, elsewhere)
_CHOICES = {"fold_batch_norm": (True, False),
            "first_block_chunk_frames": (conv_pool.DEFAULT_CHUNK_FRAMES, 0),
            "dropout_masks": ("hash", "threefry")}
FIELDS = tuple(_CHOICES)


def _measured(backend: str | None) -> bool:
    return (backend or jax.default_backend()) in MEASURED_FASTER_ON


def choose(field: str, setting: Any, backend: str | None = None) -> Any:
    """The value of model.<field> that runs: `setting` itself unless it is 'auto', then the
    CPU kernel's value on a backend of MEASURED_FASTER_ON and the plain path's elsewhere
    (backend: jax's platform name, 'cpu', 'gpu', 'tpu'; None: jax's default backend)."""
    if setting != AUTO:
        return setting
    cpu, plain = _CHOICES[field]
    return cpu if _measured(backend) else plain


def chosen(model_config, backend: str | None = None) -> dict[str, Any]:
    """{field: the value that runs} of the three kernel settings of config.model."""
    return {f: choose(f, model_config[f], backend) for f in FIELDS}


def plain() -> dict[str, Any]:
    """The plain Flax path's settings (what 'auto' picks off the CPU)."""
    return {f: v for f, (_, v) in _CHOICES.items()}


def cpu_kernels() -> dict[str, Any]:
    """The CPU kernels' settings (what 'auto' picks on the CPU)."""
    return {f: v for f, (v, _) in _CHOICES.items()}
