"""The device check's measuring sections (sedjax.benchmarks.device_report runs them in order):
the train step of both CRNNs per dtype, kernel path and batch size; K runs per program; log-mel
on the device; the BEATs encoder per dtype; and the sizes each measures (FULL, TINY)."""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

from sedjax.benchmarks import (beats_encoder, environment, logmel, runs_per_program,
                               train_step)
from sedjax.benchmarks.output import fmt, say
from sedjax.config import config_files
from sedjax.models import kernels


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What each section measures."""

    batch_sizes: Sequence[int]
    dtypes: Sequence[str]
    steps: int
    warmup: int
    repeats: int
    run_counts: Sequence[int]
    runs_batch_size: int
    logmel_clips: int
    beats: dict  # size, clips per call and seconds per clip of the BEATs section
    epochs: int  # of every training stage of the pipeline runs
    num_frames: dict  # model arch -> input frames of the train-step section (0: the config's)
    pipeline_configs: dict  # recipe -> config file name (configs/<name>.py)
    budgets_s: dict  # section -> seconds


FULL = Sizes(batch_sizes=(24, 64, 128, 256, 512), dtypes=("float32", "bfloat16"), steps=10,
             warmup=2, repeats=3, run_counts=(1, 8, 32, 64), runs_batch_size=24,
             logmel_clips=128, beats={"size": "base", "clips": 16, "seconds": 10.0}, epochs=2,
             num_frames={"crnn": 0, "desed_crnn": 0},
             pipeline_configs={"two_pass": "dcase_scale_synthetic", "mean_teacher": "mean_teacher"},
             budgets_s={"train_step": 130, "runs_per_program": 60, "logmel": 40, "beats": 40,
                        "pipeline": 200})
TINY = Sizes(batch_sizes=(4,), dtypes=("float32", "bfloat16"), steps=1, warmup=1, repeats=1,
             run_counts=(1, 2), runs_batch_size=4, logmel_clips=2,
             beats={"size": "tiny", "clips": 2, "seconds": 2.0}, epochs=1,
             num_frames={"crnn": 64, "desed_crnn": 32},
             pipeline_configs={"two_pass": "tiny", "mean_teacher": "tiny_mean_teacher"},
             budgets_s={"train_step": 60, "runs_per_program": 30, "logmel": 30, "beats": 30,
                        "pipeline": 120})


def model_config(arch: str, dtype: str, num_frames: int = 0):
    """The train-step section's config of `arch` ('crnn': configs/baseline.py, 'desed_crnn':
    configs/desed_baseline.py) with compute dtype `dtype` (num_frames > 0: its input frames)."""
    if arch == "desed_crnn":
        return train_step.desed_config(dtype, num_frames)
    c = config_files.load(config_files.default_path("baseline"))
    c.model.dtype = dtype
    if num_frames:
        c.features.num_frames = num_frames
    return c


def train_section(sizes: Sizes, batch_sizes: Sequence[int], deadline: float) -> dict:
    """Clips/s per (model, dtype, kernels, batch size): each model with the plain Flax path
    (what model.*'s 'auto' picks off the CPU) and with the CPU kernels (sedjax.models.kernels),
    so the table shows whether the CPU kernels pay on this device; what the deadline leaves
    out is 'skipped'."""
    rows, skipped = [], []
    variants = (("plain", kernels.plain()), ("cpu kernels", kernels.cpu_kernels()))
    for arch in ("crnn", "desed_crnn"):
        for dtype in sizes.dtypes:
            for kind, settings in variants:
                config = model_config(arch, dtype, sizes.num_frames[arch])
                config.model.update(settings)
                for b in batch_sizes:
                    name = f"{arch} {dtype} {kind} b{b}"
                    if time.monotonic() > deadline:
                        skipped.append(name)
                        continue
                    row = {"model": arch, "dtype": dtype, "kernels": kind, "batch_size": b,
                           "num_frames": config.features.num_frames}
                    try:
                        r = train_step.sedjax_train_step(config, b, sizes.steps,
                                                         sizes.warmup, sizes.repeats)
                        flops = r["flops_per_step_per_device"]
                        row.update(clips_per_s=r["clips_per_s"], params=r["params"],
                                   seconds_per_step=r["seconds_per_step"],
                                   gflops_per_device=flops and flops / r["seconds_per_step"] / 1e9)
                        say(f" {name:<40} {r['clips_per_s']:>10.1f} clips/s  "
                            f"{fmt(row['gflops_per_device'])} GFLOP/s")
                    except Exception as e:  # noqa: BLE001  (e.g. out of memory at the largest)
                        row["error"] = f"{type(e).__name__}: {e}"[:2000]
                        say(f" {name:<40} failed: {row['error'][:200]}")
                    rows.append(row)
    return {"rows": rows, "skipped": skipped, "memory": environment.peak_memory()}


def runs_section(sizes: Sizes, deadline: float, train: dict | None = None) -> dict:
    """runs_per_program.runs_bench on the seed CRNN (float32); the one-run program's clips/s is
    the train-step section's when it measured the same batch size."""
    config = model_config("crnn", "float32", sizes.num_frames["crnn"])
    # the train-step row of the kernels that 'auto' runs here
    kind = "plain" if kernels.chosen(config.model) == kernels.plain() else "cpu kernels"
    separate = next((r["clips_per_s"] for r in (train or {}).get("rows", [])
                     if (r["model"], r["dtype"], r.get("kernels"), r["batch_size"]) == (
                         "crnn", "float32", kind, sizes.runs_batch_size)
                     and "clips_per_s" in r), None)

    def row(k, rate, ratio):
        say(f" one-run program {rate:>10.1f} clips/s" if k is None else
            f" K={k:<3} one program {rate:>10.1f} clips/s  {ratio:.2f}x K programs")
    return runs_per_program.runs_bench(config, sizes.runs_batch_size, sizes.run_counts,
                                       sizes.steps, sizes.warmup, sizes.repeats, on_row=row,
                                       deadline=deadline, separate=separate)


def logmel_section(sizes: Sizes, deadline: float) -> dict:
    """logmel.logmel_bench on the seed's features, librosa on every host core."""
    config = config_files.load(config_files.default_path("baseline")).features
    return logmel.logmel_bench(sizes.logmel_clips, config, sizes.repeats,
                               on_rate=lambda k, r: say(f" {k:<20} {r:>10.1f} clips/s"))


def beats_section(sizes: Sizes, deadline: float) -> dict:
    """beats_encoder.beats_bench per dtype (float32, bfloat16): the JAX encoder alone, random
    weights of sizes.beats['size'] ('base': AS2M's 12 layers x 768); what the deadline leaves
    out is 'skipped'."""
    b = sizes.beats
    rows, skipped = [], []
    for dtype in sizes.dtypes:
        name = f"BEATs {b['size']} {dtype}"
        if time.monotonic() > deadline:
            skipped.append(name)
            continue
        r = beats_encoder.beats_bench(b["clips"], b["seconds"], b["size"], dtype,
                                      sizes.warmup, sizes.repeats, reference=False)
        rows.append({k: r[k] for k in ("size", "dtype", "layers", "width", "params", "clips",
                                       "seconds", "tokens")}
                    | {"clips_per_s": r["clips_per_s"]["sedjax"]})
        say(f" {name:<24} {r['clips_per_s']['sedjax']:>10.2f} clips/s ({b['clips']} clips of "
            f"{b['seconds']:g} s a call)")
    return {"rows": rows, "skipped": skipped, "memory": environment.peak_memory()}
