"""JAX's persistent compilation cache, on by default: start-up (compilation) paid once.

runtime.compilation_cache: 'default' (a folder under the user's cache directory:
$SEDJAX_CACHE_DIR, else $XDG_CACHE_HOME/sedjax, else ~/.cache/sedjax; then jax_compilation/),
any other folder, or '' (off). A second run of a config, a seed sweep or the notebook's
systems then load the compiled programs of the first instead of compiling them again (the
run's `timings.compile` says how many came from the cache). Every program is cached, however
fast it compiled: on a CPU most of a run's ~100 programs compile in well under JAX's default
threshold of one second, and together they are most of its start-up.
"""

from __future__ import annotations

import os
import pathlib

import jax
from absl import logging

DEFAULT = "default"
FOLDER = "jax_compilation"


def default_dir() -> pathlib.Path:
    """The folder 'default' stands for (module docstring)."""
    base = os.environ.get("SEDJAX_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "sedjax")
    return pathlib.Path(base) / FOLDER


def folder(setting: str) -> pathlib.Path | None:
    """The cache folder of a runtime.compilation_cache value, None when off."""
    if not setting:
        return None
    return default_dir() if setting == DEFAULT else pathlib.Path(setting).expanduser()


def enable(setting: str) -> pathlib.Path | None:
    """Points JAX's persistent cache at folder(setting) for this process (off: leaves JAX's
    settings as they are); returns the folder, or None when off or not writable."""
    path = folder(setting)
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only home: the run goes on, compiling as before
        logging.warning("runtime.compilation_cache: cannot create %s (%s); compiling without "
                        "the persistent cache", path, e)
        return None
    if jax.config.jax_compilation_cache_dir != str(path):
        jax.config.update("jax_compilation_cache_dir", str(path))
        _forget_earlier_decision()
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


def _forget_earlier_decision() -> None:
    # JAX decides once per process, at its first compilation, whether a cache is used (and
    # opens it once): a process that compiled before this call would otherwise never use it
    try:
        from jax._src import compilation_cache
        compilation_cache.reset_cache()
    except (ImportError, AttributeError):  # another jax: the setting applies where it can
        pass
