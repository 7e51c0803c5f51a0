"""Random streams named by what draws from them, never by hand-picked numbers.

A stream is (config.seed, a path of stable names such as ('two_pass', 'pass1', 'init')): the
names hash (CRC-32) to a number folded into the key, so two streams never share keys unless
their names are equal, whatever the seeds of the runs beside them (run k's seed is seed + k).
"""

from __future__ import annotations

import zlib

import jax
import numpy as np


def stream_id(*names: str) -> int:
    """A stable non-negative 31-bit number for a path of names (the same on every machine)."""
    return zlib.crc32("/".join(names).encode()) & 0x7FFFFFFF


def key(seed: int, *names: str) -> jax.Array:
    """The JAX key of the stream `names` of `seed`."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), stream_id(*names))


def numpy_rng(seed: int, *names: str, counter: int | None = None) -> np.random.Generator:
    """The numpy generator of the stream `names` of `seed` (counter: e.g. the epoch)."""
    entropy = [seed, stream_id(*names)] + ([] if counter is None else [counter])
    return np.random.default_rng(entropy)
