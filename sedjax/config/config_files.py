"""Loads an ml_collections config file (configs/*.py) by path, for the command-line tools, and
upgrades a config read back from a workdir's config.json.

The library itself never imports the top-level `configs` package: settings reach it through a
config object or arguments. Tools that need a config read one from a file with `load`.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import pathlib
import sys

import ml_collections

import sedjax


class ConfigFileError(Exception):
    """A config file that is missing, fails to run, or has no usable get_config()."""


def repo_root() -> pathlib.Path:
    """The folder holding the installed `sedjax` package and, next to it, `configs/`."""
    return pathlib.Path(sedjax.__file__).resolve().parents[1]


def default_path(name: str) -> pathlib.Path:
    """The path of the repository's configs/<name>.py (e.g. 'baseline'), next to `sedjax`."""
    return repo_root() / "configs" / f"{name}.py"


def _ensure_on_sys_path(folder: pathlib.Path) -> None:
    # Config files import their base (`from configs import baseline`): the folder holding
    # configs/ must be importable.
    for entry in sys.path:
        try:
            if pathlib.Path(entry or os.curdir).resolve() == folder:
                return
        except (OSError, RuntimeError):
            continue
    sys.path.insert(0, str(folder))


def load(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """Runs the config file at `path` and returns its get_config().

    Raises ConfigFileError, naming the file, when it is missing, raises while it runs, has no
    get_config() or get_config() does not return a ConfigDict.
    """
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise ConfigFileError(f"config file not found: {path}")
    _ensure_on_sys_path(repo_root())
    spec = importlib.util.spec_from_file_location(f"_sedjax_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigFileError(f"cannot load config file {path} (not a Python file?)")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # whatever the file does wrong, the message names the file
        raise ConfigFileError(f"config file {path} failed to load: {type(e).__name__}: {e}"
                              ) from e
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigFileError(f"config file {path} has no get_config() function")
    try:
        config = get_config()
    except Exception as e:
        raise ConfigFileError(f"get_config() of config file {path} failed: "
                              f"{type(e).__name__}: {e}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigFileError(f"get_config() of config file {path} returned "
                              f"{type(config).__name__}, not an ml_collections.ConfigDict")
    return config


def upgrade(config: dict) -> dict:
    """A config as a workdir's config.json holds it (JSON: lists where the run had tuples),
    with every field it lacks (one sedjax added after the workdir's run) set to
    configs/baseline.py's value; the fields it has are kept. The one place an older
    config.json is brought up to date: every reader of config.json calls it, and the library
    reads each field without a default of its own."""
    if not isinstance(config, dict):
        raise TypeError(f"a config is a JSON object, not {type(config).__name__}")
    defaults = json.loads(load(default_path("baseline")).to_json_best_effort())
    return _filled(config, defaults)


def _filled(config: dict, defaults: dict) -> dict:
    out = dict(config)
    for key, value in defaults.items():
        if key not in out:
            out[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _filled(out[key], value)
    return out
