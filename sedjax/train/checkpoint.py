"""Orbax checkpoints of one training pass (`latest` to resume, `best` to keep), and the
exported model a finished run predicted with (for sedjax.detect)."""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from sedjax.system import files


class PassCheckpoints:
    """Two orbax CheckpointManagers in <pass dir>/checkpoints/{latest,best}, one step each.

    Each checkpoint holds the train state (global jax.Arrays, restored with the shardings of
    a template state) and a JSON `meta` (epoch, early-stopping counters, history).
    """

    def __init__(self, directory: pathlib.Path):
        # multi-process: synchronous saves, async ones can hang at orbax's barriers (docs/speed.md)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, enable_async_checkpointing=jax.process_count() == 1)
        self.managers = {kind: ocp.CheckpointManager(directory / "checkpoints" / kind,
                                                     options=options)
                         for kind in ("latest", "best")}

    def save(self, kind: str, step: int, state, meta: dict) -> None:
        """Saves the state and meta under `kind` at `step` (asynchronously in one process)."""
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


MODEL_DIR = "model"  # in a workdir: the weights that predicted, for sedjax.detect


def save_model(workdir: pathlib.Path, state, stats: tuple) -> pathlib.Path:
    """Writes the predicting model's weights and BatchNorm statistics (msgpack) and the log-mel
    normalization (mean, std) to workdir/model/, atomically; returns the folder.

    Recipe-agnostic: whatever state a recipe predicts with (the seed's pass 2, a mean teacher's
    EMA weights) is what `python -m sedjax.detect --workdir` loads.
    """
    out = pathlib.Path(workdir) / MODEL_DIR
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    files.write_bytes(out / "variables.msgpack", serialization.msgpack_serialize(
        jax.tree_util.tree_map(np.asarray, variables)))
    files.save_npy(out / "normalization.npy", np.stack([np.asarray(s) for s in stats]))
    return out


def load_model(workdir: pathlib.Path) -> tuple[dict, np.ndarray]:
    """(variables {'params', 'batch_stats'}, normalization (2, n_mels)) of save_model."""
    folder = pathlib.Path(workdir) / MODEL_DIR
    weights, norm = folder / "variables.msgpack", folder / "normalization.npy"
    if not (weights.is_file() and norm.is_file()):
        raise FileNotFoundError(f"{folder}: no trained model (variables.msgpack and "
                                "normalization.npy are written when a run has trained)")
    return serialization.msgpack_restore(weights.read_bytes()), np.load(norm)
