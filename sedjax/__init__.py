"""sedjax: sound event detection in JAX/Flax."""

__version__ = "0.1.0"
