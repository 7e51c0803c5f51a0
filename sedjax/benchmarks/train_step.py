"""The train-step bench: clips/s of sedjax's jitted data-parallel pass-2 step (its parameters,
seconds per step and XLA's flops), beside the same model's PyTorch step on the CPU
(sedjax.benchmarks.torch_models) per batch size."""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import numpy as np

from sedjax import models
from sedjax.benchmarks import environment, timing
from sedjax.config import config_files
from sedjax.recipes import common, two_pass
from sedjax.system import cli, sharding
from sedjax.train import parallel


def desed_config(dtype: str = "float32", num_frames: int = 0):
    """configs/desed_baseline.py (the DESED CRNN, 128 mel bands) with `dtype`; num_frames > 0
    replaces its 626 input frames."""
    c = config_files.load(config_files.default_path("desed_baseline"))
    with c.unlocked():
        c.model.dtype = dtype
        if num_frames:
            c.features.num_frames = num_frames
    return c


def sedjax_train_step(config, batch_size: int, steps: int, warmup: int, repeats: int) -> dict:
    """The jitted data-parallel pass-2 step on a pre-sharded batch: clips/s, params, seconds per
    step and XLA's flops of one step per device (compiled once, before timing)."""
    mesh = sharding.make_mesh()  # all devices (one host: all local ones)
    if batch_size % sharding.num_shards(mesh):
        raise cli.UserError(f"batch size {batch_size} is not divisible by "
                            f"{sharding.num_shards(mesh)} devices")
    t, f, c = config.features.num_frames, config.features.n_mels, len(config.data.classes)
    state = common.new_state(config, "pass2", mesh)
    num_params = models.count_params(state.params)
    rng = np.random.default_rng(0)
    batch = sharding.shard_batch({
        "features": rng.normal(size=(batch_size, t, f)).astype(np.float32),
        "frames": np.full(batch_size, t, np.int32),
        "labels": (rng.random((batch_size, c)) < 0.3).astype(np.float32)}, mesh)
    stats = sharding.replicate((np.zeros(f, np.float32), np.ones(f, np.float32)), mesh)
    step = parallel.train_step_fn(functools.partial(
        two_pass.train_step, bce_eps=config.pass2.bce_eps, output="frame"), mesh, resident=False)
    step = step.lower(state, stats, batch).compile()  # the program timed below: no recompile

    def run(n):
        nonlocal state  # the state is donated: always carry the new one
        for _ in range(n):
            state, _ = step(state, stats, batch)
        jax.block_until_ready(state)

    rate = timing.rate(run, batch_size, steps, warmup, repeats)
    return {"clips_per_s": rate, "params": num_params, "seconds_per_step": batch_size / rate,
            "flops_per_step_per_device": timing.compiled_flops(step),
            "devices": sharding.num_shards(mesh)}


def sedjax_train_throughput(config, batch_size: int, steps: int, warmup: int, repeats: int
                            ) -> tuple[float, int]:
    """(clips/s, params) of sedjax_train_step."""
    r = sedjax_train_step(config, batch_size, steps, warmup, repeats)
    return r["clips_per_s"], r["params"]


def train_bench(config, batch_sizes: Sequence[int], steps: int, warmup: int, repeats: int,
                skip_torch: bool, on_row: Callable | None = None) -> dict:
    """Train clips/s of sedjax and PyTorch per batch size, their ratio and param counts.

    PyTorch runs the twin of config.model.arch (environment.torch_model; none without torch or
    with skip_torch); on_row(batch size, row) as each is measured. Each row also has 'steps'
    (sedjax_train_step's figures: flops, seconds per step)."""
    ref = None if skip_torch else environment.torch_model(config.model.arch)
    t, f, c = config.features.num_frames, config.features.n_mels, len(config.data.classes)
    out = {"clips_per_s": {}, "speedup": {}, "params": {"sedjax": None, "torch": None},
           "steps": {}}
    if ref is not None:
        from sedjax.benchmarks.torch_models import training

        out["params"]["torch"] = training.count_params(ref.build_model(n_mels=f, num_classes=c))
    for b in batch_sizes:
        ours = sedjax_train_step(config, b, steps, warmup, repeats)
        out["params"]["sedjax"], out["steps"][str(b)] = ours["params"], ours
        theirs = None if ref is None else training.measure_train_throughput(
            ref.build_model, ref.frame_probs, b, steps, warmup, repeats, t, f, c)
        out["clips_per_s"][str(b)] = {"sedjax": ours["clips_per_s"], "torch": theirs}
        out["speedup"][str(b)] = None if theirs is None else ours["clips_per_s"] / theirs
        if on_row:
            on_row(b, out)
    return out
