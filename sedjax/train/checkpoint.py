"""Orbax checkpoints of one training pass: `latest` (to resume) and `best` (to keep)."""

from __future__ import annotations

import pathlib
from typing import Any

import orbax.checkpoint as ocp


class PassCheckpoints:
    """Two orbax CheckpointManagers in <pass dir>/checkpoints/{latest,best}, one step each.

    Each checkpoint holds the train state (global jax.Arrays, restored with the shardings of
    a template state) and a JSON `meta` (epoch, early-stopping counters, history).
    """

    def __init__(self, directory: pathlib.Path):
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
        self.managers = {kind: ocp.CheckpointManager(directory / "checkpoints" / kind,
                                                     options=options)
                         for kind in ("latest", "best")}

    def save(self, kind: str, step: int, state, meta: dict) -> None:
        """Saves (asynchronously) the state and meta under `kind` at `step`."""
        self.managers[kind].save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

    def restore(self, kind: str, template) -> tuple[Any, dict] | None:
        """(state, meta) of the newest `kind` checkpoint, or None when there is none."""
        manager = self.managers[kind]
        manager.wait_until_finished()
        step = manager.latest_step()
        if step is None:
            return None
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore()))
        return restored["state"], dict(restored["meta"])

    def wait(self) -> None:
        """Blocks until pending saves are on disk."""
        for manager in self.managers.values():
            manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the managers."""
        for manager in self.managers.values():
            manager.close()
