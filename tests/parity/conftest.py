"""Parity tests against DESED_task's own code, given a checkout of it.

    SEDJAX_DESED_TASK=/path/to/DESED_task python -m pytest tests/parity -q -s

needs torch, torchaudio and DESED_task's dependencies (pip install -e '.[reference]'); without
them, or with the variable unset, every test here skips with one line saying so.

For the tests of this folder:
- `import_desed_task()` puts `<checkout>` and `<checkout>/recipes/dcase2023_task4_baseline` first
  on sys.path (so `desed_task` and `local.*` import from the checkout), imports torch,
  torchaudio and desed_task and returns the `desed_task` package, or skips the calling test;
- the `desed_task_root` fixture: the checkout (pathlib.Path), after import_desed_task();
- a test module calls `import_desed_task()` at its top, before importing torch or
  desed_task (`from .conftest import import_desed_task`): without DESED_task the whole module
  skips, and pytest folds every module's skip into one line (they are raised here).
"""

from __future__ import annotations

import importlib
import os
import pathlib
import sys
import types

import pytest

ENV = "SEDJAX_DESED_TASK"
RECIPE = pathlib.Path("recipes") / "dcase2023_task4_baseline"
HOW = (f"set {ENV}=/path/to/DESED_task (and pip install -e '.[reference]') to run the "
       "DESED_task parity tests")


def _skip_reason() -> str | None:
    """Why the parity tests cannot run here (None: they can); imports once per session."""
    root = os.environ.get(ENV)
    if not root:
        return HOW
    path = pathlib.Path(root).expanduser().resolve()
    if not (path / "desed_task").is_dir() or not (path / RECIPE).is_dir():
        return f"{ENV}={root}: not a DESED_task checkout (no desed_task/ and {RECIPE}/)"
    for entry in (str(path / RECIPE), str(path)):  # the checkout first: it wins over installs
        if entry not in sys.path:
            sys.path.insert(0, entry)
    for module in ("torch", "torchaudio", "desed_task", "desed_task.nnet.CRNN"):
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 (any failure means: cannot run here)
            return (f"{ENV}={root}: cannot import {module} ({type(e).__name__}: {e}); "
                    "pip install -e '.[reference]'")
    return None


_REASON: list[str | None] = []  # computed once


def import_desed_task() -> types.ModuleType:
    """The checkout's `desed_task` package (sys.path set up, torch importable), else skips."""
    if not _REASON:
        _REASON.append(_skip_reason())
    if _REASON[0] is not None:
        # raised here, whether at a module's top or in a test: pytest reports one line
        pytest.skip(_REASON[0], allow_module_level=True)
    import desed_task

    return desed_task


@pytest.fixture(scope="session")
def desed_task_root() -> pathlib.Path:
    """The DESED_task checkout of SEDJAX_DESED_TASK (skips when unusable)."""
    import_desed_task()
    return pathlib.Path(os.environ[ENV]).expanduser().resolve()
