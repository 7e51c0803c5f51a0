"""sedjax: sound event detection in JAX/Flax."""

from sedjax.system import xla_flags as _xla_flags

# before jax starts a backend (importing sedjax imports no jax): see the module's docstring
_xla_flags.apply()

__version__ = "0.1.0"
