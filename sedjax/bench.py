"""Speed bench (python -m sedjax.bench): train step vs PyTorch, roofline, runs per program, log-mel
vs librosa, stages; with --beats, the BEATs encoder against the reference PyTorch BEATs.

The default (no flags) is sized to finish in a few minutes on a 2-core CPU: one small batch
size, the seed CRNN against PyTorch, the roofline line, log-mel on a few clips. `--full` gives
the larger figures (batch sizes 32 and 128, more steps, runs per program 1/4/8, the DESED CRNN
against PyTorch, the pipeline timing); any flag given explicitly wins over both. Every line is
printed as soon as it is measured.
"""

from __future__ import annotations

from sedjax.runtime import host

if __name__ == "__main__":  # before the heavy imports; both models then share the allocator
    host.reexec_with_huge_pages("sedjax.bench")

import concurrent.futures as futures
import dataclasses
import functools
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from typing import Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import librosa
import numpy as np
from absl import flags
from ml_collections import config_flags

from sedjax.data import features
from sedjax import models
from sedjax import run as run_lib
from sedjax.config import config_files
from sedjax.runtime import cli, files, sharding
from sedjax.recipes import common, two_pass
from sedjax.train import parallel, runs as runs_lib

_DEFAULT_CONFIG = str(config_files.default_path("tiny"))


# (default, --full) of the flags that --full changes; an explicitly given flag wins over both
PROFILES = {
    "batch_sizes": (["16"], ["32", "128"]),
    "steps": (3, 10),
    "warmup": (1, 2),
    "repeats": (2, 3),
    "runs": ([], ["1", "4", "8"]),
    "runs_batch_size": (8, 16),
    "logmel_clips": (16, 64),
    "pipeline": (False, True),
    "desed": (False, True),
    "desed_batch_sizes": (["8"], ["8", "24"]),
}


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """Registers the flags (called by __main__ only, so sedjax.main's --config never clashes)."""
    d = {k: v[0] for k, v in PROFILES.items()}
    flags.DEFINE_bool("full", False, "The larger figures: " + ", ".join(
        f"--{k}={','.join(v[1]) if isinstance(v[1], list) else v[1]}"
        for k, v in PROFILES.items()) + " (flags given explicitly win).", flag_values=fv)
    flags.DEFINE_list("batch_sizes", d["batch_sizes"], "Global train batch sizes.",
                      flag_values=fv)
    flags.DEFINE_integer("steps", d["steps"], "Timed train steps per repeat.", flag_values=fv)
    flags.DEFINE_integer("warmup", d["warmup"], "Untimed steps first (at least 1: compiles).",
                         flag_values=fv)
    flags.DEFINE_integer("repeats", d["repeats"], "Timed repeats; the median is reported.",
                         flag_values=fv)
    flags.DEFINE_list("runs", d["runs"], "Runs per program (config.num_runs) of the "
                      "runs-per-program line, e.g. 1,4,8; empty: skip it.", flag_values=fv)
    flags.DEFINE_integer("runs_batch_size", d["runs_batch_size"],
                         "Clips per run and step of that line.", flag_values=fv)
    flags.DEFINE_integer("logmel_clips", d["logmel_clips"],
                         "Synthetic 10 s clips of the log-mel bench.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_list("matmul_sizes", ["1024", "2048"], "n of the n x n matmuls whose best "
                      "GFLOP/s is the roofline line's peak; empty: no roofline line.",
                      flag_values=fv)
    flags.DEFINE_bool("desed", d["desed"], "The DESED CRNN's train step (model.arch "
                      "'desed_crnn', configs/desed_baseline.py) against the same CRNN in PyTorch.",
                      flag_values=fv)
    flags.DEFINE_list("desed_batch_sizes", d["desed_batch_sizes"],
                      "Global batch sizes of the DESED line.", flag_values=fv)
    flags.DEFINE_integer("desed_num_frames", 0, "Input frames of the DESED line (0: the "
                         "config's 626, 10 s clips).", flag_values=fv)
    config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Config of the pipeline timing.",
                                    flag_values=fv, lock_config=True)
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                      "sedjax compute dtype (config.model.dtype); PyTorch stays float32.",
                      flag_values=fv)
    flags.DEFINE_string("json", None, "Writes all figures to this JSON file.", flag_values=fv)
    flags.DEFINE_bool("skip_torch", False, "No PyTorch reference.", flag_values=fv)
    flags.DEFINE_bool("pipeline", d["pipeline"], "The end-to-end pipeline timing on --config.",
                      flag_values=fv)
    flags.DEFINE_bool("skip_pipeline", False, "No pipeline timing, even with --full.",
                      flag_values=fv)
    flags.DEFINE_bool("beats", False, "Only the BEATs encoder: embeddings/s of sedjax's JAX "
                      "BEATs against the reference PyTorch BEATs module (DESED_task's "
                      "local/beats, from --desed_task) with the same random weights, float32, "
                      "after checking that both give the same embeddings.", flag_values=fv)
    flags.DEFINE_integer("beats_clips", 4, "Clips per encoder call of --beats.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_float("beats_seconds", 10.0, "Seconds per clip of --beats.", lower_bound=0.2,
                       flag_values=fv)
    flags.DEFINE_enum("beats_size", "base", list(BEATS_SIZES), "--beats' architecture: 'base' "
                      "(BEATs AS2M's: 12 layers x 768) or 'tiny' (2 layers x 32: tests).",
                      flag_values=fv)
    flags.DEFINE_integer("beats_repeats", 5, "Timed calls of --beats per encoder; the median "
                         "is reported (after --warmup untimed calls).", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_string("desed_task", None, "A DESED_task checkout, whose recipes/"
                        "dcase2023_task4_baseline/local/beats is --beats' reference (default: "
                        "$SEDJAX_DESED_TASK).", flag_values=fv)


def _torch_reference():
    """sedjax.models.torch_reference, or None when torch cannot be imported."""
    try:
        import torch  # noqa: F401  (checked first: the module may be cached from before)
        from sedjax.models import torch_reference
    except ImportError:
        return None
    return torch_reference


def environment() -> dict:
    """Backend, devices, library versions and CPU count."""
    devices, ref = jax.devices(), _torch_reference()
    return {"backend": jax.default_backend(), "device_kind": devices[0].device_kind,
            "device_count": len(devices), "local_device_count": jax.local_device_count(),
            "cpu_count": os.cpu_count(), "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
            "versions": {"jax": jax.__version__, "flax": flax.__version__,
                         "torch": ref and ref.torch.__version__, "librosa": librosa.__version__}}


def _rate(run: Callable[[int], None], clips_per_call: int, calls: int, warmup: int,
          repeats: int) -> float:
    """Median clips/s of run(calls) over repeats, after run(max(warmup, 1)) (compilation)."""
    run(max(warmup, 1))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(calls)
        times.append(time.perf_counter() - start)
    return clips_per_call * calls / statistics.median(times)


def compiled_flops(compiled) -> float | None:
    """Floating-point operations of one call of a compiled XLA program, from XLA's cost analysis
    (per device for a sharded program; a loop's body, e.g. a scan's, is counted once)."""
    costs = compiled.cost_analysis()
    if isinstance(costs, (list, tuple)):  # older jax: one dict per program
        costs = costs[0] if costs else None
    flops = (costs or {}).get("flops")
    return None if flops is None or flops < 0 else float(flops)


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

    rate = _rate(run, batch_size, steps, warmup, repeats)
    return {"clips_per_s": rate, "params": num_params, "seconds_per_step": batch_size / rate,
            "flops_per_step_per_device": compiled_flops(step),
            "devices": sharding.num_shards(mesh)}


def sedjax_train_throughput(config, batch_size: int, steps: int, warmup: int, repeats: int
                            ) -> tuple[float, int]:
    """(clips/s, params) of sedjax_train_step."""
    r = sedjax_train_step(config, batch_size, steps, warmup, repeats)
    return r["clips_per_s"], r["params"]


def matmul_gflops(n: int, dtype: str = "float32", min_seconds: float = 0.2,
                  repeats: int = 3) -> float:
    """Best GFLOP/s of a jitted n x n x n matmul on the default device (2 n^3 flops a call),
    over `repeats` timings of as many calls as take about min_seconds."""
    keys = jax.random.split(jax.random.PRNGKey(0))
    a, b = (jax.random.normal(k, (n, n), jnp.dtype(dtype)) for k in keys)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    start = time.perf_counter()
    f(a, b).block_until_ready()
    calls = max(1, int(min_seconds / max(time.perf_counter() - start, 1e-6)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = [f(a, b) for _ in range(calls)]
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / calls)
    return 2.0 * n ** 3 / best / 1e9


def roofline(train: dict, matmul: dict) -> dict:
    """The train step's achieved GFLOP/s per device (XLA's flops / measured step time) beside
    the best matmul GFLOP/s ({n: GFLOP/s}) and their ratio."""
    flops = train["flops_per_step_per_device"]
    achieved = None if flops is None else flops / train["seconds_per_step"] / 1e9
    peak = max(matmul.values()) if matmul else None
    return {"train_step_flops_per_device": flops, "seconds_per_step": train["seconds_per_step"],
            "train_step_gflops_per_device": achieved, "matmul_gflops": matmul,
            "peak_matmul_gflops": peak,
            "ratio": None if achieved is None or not peak else achieved / peak,
            "flops_source": "XLA cost_analysis of the compiled step (scan bodies counted once)"}


def runs_train_throughput(config, batch_size: int, num_runs: int, steps: int, warmup: int,
                          repeats: int) -> float:
    """Clips/s of the pass-2 step with num_runs runs in one program (run-axis state, vmapped;
    seeds seed .. seed + num_runs - 1), each run its own pre-sharded batch of batch_size."""
    mesh = sharding.make_mesh()
    if batch_size % sharding.num_shards(mesh):
        raise cli.UserError(f"runs batch size {batch_size} is not divisible by "
                            f"{sharding.num_shards(mesh)} devices")
    t, f, c = config.features.num_frames, config.features.n_mels, len(config.data.classes)
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.num_runs = num_runs
    configs = runs_lib.run_configs(config) if num_runs > 1 else [config]
    state = sharding.replicate(runs_lib.stack(
        [common.init_state(rc, "pass2") for rc in configs]), mesh)
    rng = np.random.default_rng(0)
    shape = (num_runs, batch_size)
    batch = sharding.shard_runs({
        "features": rng.normal(size=(*shape, t, f)).astype(np.float32),
        "frames": np.full(shape, t, np.int32),
        "labels": (rng.random((*shape, c)) < 0.3).astype(np.float32)}, mesh)
    stats = sharding.replicate((np.zeros(f, np.float32), np.ones(f, np.float32)), mesh)
    step = parallel.train_step_fn(functools.partial(
        two_pass.train_step, bce_eps=config.pass2.bce_eps, output="frame"), mesh,
        resident=False, runs=True)

    def run(n):
        nonlocal state  # donated
        for _ in range(n):
            state, _ = step(state, stats, batch)
        jax.block_until_ready(state)

    return _rate(run, num_runs * batch_size, steps, warmup, repeats)


def runs_bench(config, batch_size: int, run_counts: Sequence[int], steps: int, warmup: int,
               repeats: int, on_row: Callable | None = None, deadline: float | None = None,
               separate: float | None = None) -> dict:
    """Train clips/s of K runs per program against K separate one-run programs (which, run one
    after another, train at the one-run program's clips/s), and their ratio, per K.

    on_row(k, clips/s, ratio) is called as each K is measured (on_row(None, separate, None)
    first); K values not started by `deadline` (time.monotonic()) are listed in 'skipped'.
    separate: the one-run program's clips/s when already measured (same config and batch)."""
    if separate is None:
        separate = sedjax_train_throughput(config, batch_size, steps, warmup, repeats)[0]
    out = {"batch_size_per_run": batch_size, "separate_clips_per_s": separate,
           "clips_per_s": {}, "speedup_vs_separate": {}, "skipped": []}
    if on_row:
        on_row(None, separate, None)
    for k in run_counts:
        if deadline is not None and time.monotonic() > deadline:
            out["skipped"].append(str(k))
            continue
        rate = runs_train_throughput(config, batch_size, k, steps, warmup, repeats)
        out["clips_per_s"][str(k)] = rate
        out["speedup_vs_separate"][str(k)] = rate / separate
        if on_row:
            on_row(k, rate, rate / separate)
    return out


def train_bench(config, batch_sizes: Sequence[int], steps: int, warmup: int, repeats: int,
                skip_torch: bool, reference=None, on_row: Callable | None = None) -> dict:
    """Train clips/s of sedjax and PyTorch per batch size, their ratio and param counts.

    reference: the PyTorch module (build_model, count_params, measure_train_throughput;
    sedjax.models.torch_reference when None); on_row(batch size, row) as each is measured.
    Each row also has 'steps' (sedjax_train_step's figures: flops, seconds per step)."""
    ref = None if skip_torch else (reference or _torch_reference())
    t, f, c = config.features.num_frames, config.features.n_mels, len(config.data.classes)
    out = {"clips_per_s": {}, "speedup": {}, "params": {"sedjax": None, "torch": None},
           "steps": {}}
    if ref is not None:
        out["params"]["torch"] = ref.count_params(ref.build_model(n_mels=f, num_classes=c))
    for b in batch_sizes:
        ours = sedjax_train_step(config, b, steps, warmup, repeats)
        out["params"]["sedjax"], out["steps"][str(b)] = ours["params"], ours
        theirs = None if ref is None else ref.measure_train_throughput(
            b, steps, warmup, repeats, t, f, c)
        out["clips_per_s"][str(b)] = {"sedjax": ours["clips_per_s"], "torch": theirs}
        out["speedup"][str(b)] = None if theirs is None else ours["clips_per_s"] / theirs
        if on_row:
            on_row(b, out)
    return out


def desed_config(dtype: str = "float32", num_frames: int = 0):
    """configs/desed_baseline.py (the DESED CRNN, 128 mel bands) with `dtype`; num_frames > 0
    replaces its 626 input frames."""
    c = config_files.load(config_files.default_path("desed_baseline"))
    with c.unlocked():
        c.model.dtype = dtype
        if num_frames:
            c.features.num_frames = num_frames
    return c


def _torch_desed_reference():
    """sedjax.models.torch_desed_reference, or None when torch cannot be imported."""
    if _torch_reference() is None:
        return None
    from sedjax.models import torch_desed_reference
    return torch_desed_reference


def synthetic_clips(n: int, sample_rate: int, seconds: float = 10.0, seed: int = 0
                    ) -> list[np.ndarray]:
    """n clips of noise plus three random tones, float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    clips = []
    for _ in range(n):
        y = 0.05 * rng.standard_normal(len(t))
        for freq in rng.uniform(100.0, 8000.0, 3):
            y += rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6.3))
        clips.append(y.astype(np.float32))
    return clips


def logmel_bench(n: int, config, repeats: int, on_rate: Callable | None = None,
                 workers: int | None = None) -> dict:
    """Log-mel clips/s: jitted jnp frontend vs librosa serially and over all cores (or
    `workers` processes); on_rate(key, clips/s) as each is measured."""
    on_rate = on_rate or (lambda key, rate: None)
    sr, size = config.sample_rate, features.buffer_samples(config)
    clips = synthetic_clips(n, sr)
    bs = min(n, config.batch_size)
    chunks = []  # host batches, the last one padded: one compiled shape
    for start in range(0, n, bs):
        waves, lens = np.zeros((bs, size), np.float32), np.full(bs, size, np.int32)
        for j, y in enumerate(clips[start: start + bs]):
            waves[j, : min(len(y), size)], lens[j] = y[:size], len(y)
        chunks.append((waves, lens))
    frontend = features.make_jax_frontend(config)
    outputs = []

    def run_jax(_):
        pending = [frontend(w, l) for w, l in chunks]  # async dispatch, then fetch to host
        outputs[:] = [np.concatenate([np.asarray(p) for p in pending])[:n]]

    jax_rate = _rate(run_jax, n, 1, 1, repeats)
    on_rate("jax", jax_rate)
    features.log_mel(clips[0], sr, config)  # warm-up: librosa's first call is slow
    start = time.perf_counter()
    reference = np.stack([features.log_mel(y, sr, config) for y in clips])
    serial_rate = n / (time.perf_counter() - start)
    on_rate("librosa_serial", serial_rate)
    workers = workers or os.cpu_count() or 1
    # spawn, not fork: this process runs JAX's threads
    with futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")
                                     ) as pool:
        warm = clips[:1] * 2 * workers  # starts every worker and imports librosa there
        list(pool.map(features.log_mel, warm, [sr] * len(warm), [config] * len(warm)))
        start = time.perf_counter()
        list(pool.map(features.log_mel, clips, [sr] * n, [config] * n))
        pool_rate = n / (time.perf_counter() - start)
    on_rate("librosa_all_cores", pool_rate)
    return {"clips": n, "batch_size": bs, "workers": workers,
            "clips_per_s": {"jax": jax_rate, "librosa_serial": serial_rate,
                            "librosa_all_cores": pool_rate},
            "max_abs_diff": float(np.abs(outputs[0] - reference).max())}


def pipeline_bench(config) -> dict:
    """Wall time of each trainer stage on `config`, in a temporary workdir, and the test F1."""
    with tempfile.TemporaryDirectory(prefix="sedjax-bench-") as workdir:
        summary = run_lib.train_and_evaluate(config, workdir)
    return {"timings_s": summary["timings"]["stages_s"],
            "compile_s": summary["timings"]["compile_s"], "devices": summary["devices"],
            "test_event_f1_macro": summary["test"]["event_based"]["f_measure_macro"]}


# ---------------------------------------------------------------------------- BEATs
# |sedjax - reference| of the bench's embeddings, float32: 99.9 % of the values within
# BEATS_TOL, every value within BEATS_TOL_MAX. Both are float32 computations of the same
# function; now and then a value goes further than 1e-4 apart (up to ~3e-4, |embedding| up to
# ~4), where either one's rounding is as far from a float64 computation (measured with torch in
# float64). A wrong weight or layer moves most values by far more.
BEATS_TOL, BEATS_TOL_MAX = 1e-4, 1e-3
BEATS_SIZES = ("base", "tiny")  # AS2M's architecture (12 layers x 768) or BeatsConfig.tiny
BEATS_RECIPE_DIR = os.path.join("recipes", "dcase2023_task4_baseline", "local", "beats")


class BeatsMismatchError(RuntimeError):
    """sedjax's BEATs and the reference give different embeddings: the bench would time two
    different models."""


def beats_architecture(size: str, dtype: str = "float32"):
    """sedjax.models.beats.BeatsConfig of `size` ('base': AS2M's, 'tiny') with `dtype`."""
    from sedjax.models import beats

    if size not in BEATS_SIZES:
        raise cli.UserError(f"BEATs size {size!r}: use one of {BEATS_SIZES}")
    config = beats.BeatsConfig() if size == "base" else beats.BeatsConfig.tiny()
    return dataclasses.replace(config, dtype=dtype)


def beats_params(config, seed: int = 0):
    """Random parameters of sedjax's Beats(config), drawn from `seed` (shapes do not depend on
    the input's length: a 20-frame input draws them)."""
    from sedjax.models import beats

    dummy = np.zeros((1, beats.FRAME_LENGTH + 19 * beats.FRAME_SHIFT), np.float32)
    return jax.jit(beats.Beats(config).init)(jax.random.PRNGKey(seed), dummy)["params"]


def noise_clips(n: int, samples: int, seed: int = 0) -> np.ndarray:
    """(n, samples) float32 Gaussian noise, each clip at its own level (std 0.05-0.2). The
    encoders' cost does not depend on what the clips hold; on noise, unlike on pure tones, no
    fbank band lies 50-60 dB below its frame's peak, where float32 FFT rounding differs."""
    rng = np.random.default_rng(seed)
    levels = rng.uniform(0.05, 0.2, (n, 1))
    return (rng.standard_normal((n, samples)) * levels).astype(np.float32)


def beats_reference(root: str | None = None):
    """(the reference's `BEATs` module, None) from DESED_task's local/beats (root: a DESED_task
    checkout, default $SEDJAX_DESED_TASK), or (None, why not)."""
    root = root or os.environ.get("SEDJAX_DESED_TASK")
    if not root:
        return None, ("SEDJAX_DESED_TASK is not set (a DESED_task checkout holds the reference "
                      "BEATs module)")
    folder = os.path.join(os.path.expanduser(root), BEATS_RECIPE_DIR)
    if not os.path.isfile(os.path.join(folder, "BEATs.py")):
        return None, f"{root}: no {os.path.join(BEATS_RECIPE_DIR, 'BEATs.py')}"
    if _torch_reference() is None:
        return None, "torch is not installed (pip install -e '.[reference]')"
    import importlib
    import importlib.util
    import sys

    # the checkout's local/beats as a package of its own name: nothing on sys.path changes
    name = "_sedjax_reference_beats"
    try:
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(
                name, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder])
            package = importlib.util.module_from_spec(spec)
            sys.modules[name] = package
            spec.loader.exec_module(package)
        return importlib.import_module(f"{name}.BEATs"), None
    except Exception as e:  # noqa: BLE001  (torchaudio missing, ...: the JAX side still runs)
        sys.modules.pop(name, None)
        return None, f"cannot import {folder}/BEATs.py ({type(e).__name__}: {e})"


def torch_beats(module, config, params):
    """The reference BEATs(BEATsConfig(cfg)) of `config` with sedjax's `params` (converted by
    sedjax.interop.beats_checkpoint, loaded strictly), in eval mode."""
    import torch

    from sedjax.interop import beats_checkpoint

    import logging as std_logging
    import warnings

    cfg = {**config.beats_cfg(), "finetuned_model": False}
    std_logging.getLogger(module.__name__).setLevel(std_logging.WARNING)  # its config dump
    with warnings.catch_warnings():  # torch.nn.utils.weight_norm's deprecation
        warnings.simplefilter("ignore", FutureWarning)
        model = module.BEATs(module.BEATsConfig(cfg)).eval()
    state = beats_checkpoint.state_dict_from_params(params, cfg)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return model


def beats_bench(clips: int = 4, seconds: float = 10.0, size: str = "base",
                dtype: str = "float32", warmup: int = 1, repeats: int = 5, seed: int = 0,
                reference: bool | str = True, desed_task: str | None = None,
                on_line: Callable | None = None) -> dict:
    """Embeddings/s (clips/s) of sedjax's jitted BEATs encoder and of the reference PyTorch
    BEATs module (DESED_task's local/beats: BEATs.extract_features, as its
    extract_embeddings.py calls it, in torch.inference_mode) on one batch of `clips` noise
    clips (noise_clips) of `seconds` at 16 kHz, with the same random weights (sedjax's init
    from `seed`, converted); each after `warmup` untimed calls, the median of `repeats` timed
    calls.

    Before timing, both encoders' embeddings of the batch must agree (float32: 99.9 % of the
    values within BEATS_TOL, all within BEATS_TOL_MAX; BeatsMismatchError otherwise). Without
    the reference (`reference` False or a string saying why, no torch, no checkout at
    desed_task / $SEDJAX_DESED_TASK, or dtype bfloat16): the JAX side alone, and
    'reference_note' says why. on_line(text) gets each printed line."""
    from sedjax.models import beats

    say_line = on_line or (lambda text: None)
    config = beats_architecture(size, dtype)
    params = beats_params(config, seed)
    waves = noise_clips(clips, int(round(seconds * beats.SAMPLE_RATE)), seed)
    module, note = (beats_reference(desed_task) if reference is True else
                    (None, reference or "not asked for"))
    if module is not None and dtype != "float32":
        module, note = None, f"the reference runs float32 only (sedjax {dtype})"
    tokens = beats.num_tokens(waves.shape[1], config.input_patch_size)
    out = {"size": size, "layers": config.encoder_layers, "width": config.encoder_embed_dim,
           "heads": config.encoder_attention_heads, "params": models.count_params(params),
           "clips": clips, "seconds": seconds, "tokens": tokens, "dtype": dtype, "seed": seed,
           "warmup": warmup, "repeats": repeats, "clips_per_s": {"sedjax": None, "torch": None},
           "speedup": None, "max_abs_diff": None, "abs_diff_999": None,
           "tolerance": {"abs_diff_999": BEATS_TOL, "max_abs_diff": BEATS_TOL_MAX},
           "reference": None, "reference_note": note, "torch_threads": None}
    encode = jax.jit(lambda p, x: beats.Beats(config).apply({"params": p}, x)[0]
                     .astype(jnp.float32))
    x = jnp.asarray(waves)
    ours = np.asarray(encode(params, x))  # also compiles: never timed
    say_line(f" BEATs {size}: {config.encoder_layers} layers x {config.encoder_embed_dim} "
             f"({out['params']:,} parameters, random weights, seed {seed}), {clips} clips of "
             f"{seconds:g} s ({tokens} tokens each), {dtype}")
    if module is not None:
        import torch

        model = torch_beats(module, config, params)
        source = torch.from_numpy(waves)

        def torch_encode():
            with torch.inference_mode():
                return model.extract_features(source)[0]
        theirs = torch_encode().numpy()
        if theirs.shape != ours.shape:
            raise BeatsMismatchError(f"BEATs bench: sedjax's embeddings are {ours.shape}, the "
                                     f"reference's {theirs.shape}: nothing timed")
        diff = np.abs(ours.astype(np.float64) - theirs)
        out.update(max_abs_diff=float(diff.max()),
                   abs_diff_999=float(np.percentile(diff, 99.9)),
                   reference=os.path.dirname(module.__file__),
                   torch_threads=torch.get_num_threads())
        say_line(f" reference: {out['reference']}/BEATs.py (torch {torch.__version__}, "
                 f"{out['torch_threads']} threads)\n"
                 f" |sedjax - reference| over the batch's embeddings (up to "
                 f"{np.abs(theirs).max():.1f}): max {out['max_abs_diff']:.2e}, 99.9th "
                 f"percentile {out['abs_diff_999']:.2e}")
        if not (out["abs_diff_999"] <= BEATS_TOL and out["max_abs_diff"] <= BEATS_TOL_MAX):
            raise BeatsMismatchError(
                f"BEATs bench: sedjax's and the reference's embeddings differ (99.9th "
                f"percentile {out['abs_diff_999']:.2e}, max {out['max_abs_diff']:.2e}; "
                f"allowed {BEATS_TOL:g}, {BEATS_TOL_MAX:g}): not the same model, nothing timed")
    else:
        say_line(f" reference: none, {note}: sedjax alone")

    def run_jax(n):
        for _ in range(n):
            y = encode(params, x)
        y.block_until_ready()

    out["clips_per_s"]["sedjax"] = _rate(run_jax, clips, 1, warmup, repeats)
    rate = out["clips_per_s"]["sedjax"]
    say_line(f" {'sedjax (jax.jit)':<24} {rate:>9.2f} clips/s  ({clips / rate:.2f} s a batch)")
    if module is not None:
        def run_torch(n):
            for _ in range(n):
                torch_encode()

        theirs_rate = _rate(run_torch, clips, 1, warmup, repeats)
        out["clips_per_s"]["torch"] = theirs_rate
        out["speedup"] = rate / theirs_rate
        say_line(f" {'reference (torch)':<24} {theirs_rate:>9.2f} clips/s  "
                 f"({clips / theirs_rate:.2f} s a batch)\n"
                 f" sedjax/torch {out['speedup']:.2f}x")
    return out


def run_beats(clips: int = 4, seconds: float = 10.0, size: str = "base", warmup: int = 1,
              repeats: int = 5, json_path: str | None = None, skip_torch: bool = False,
              desed_task: str | None = None) -> dict:
    """`--beats`: the environment and beats_bench (float32), printed; returns (and optionally
    writes) the figures."""
    started = time.monotonic()
    env = environment()
    v = env["versions"]
    say(f"== environment\n backend {env['backend']}: {env['device_count']} x "
        f"{env['device_kind']} | jax {v['jax']}  flax {v['flax']}  "
        f"torch {v['torch'] or 'not installed'} | {env['cpu_count']} CPUs")
    say(f"== BEATs encoder, embeddings of {clips} clips of {seconds:g} s a call, clips/s "
        f"(median of {repeats} calls after {max(warmup, 1)} untimed)")
    result = {**env, "beats": beats_bench(clips, seconds, size, "float32", warmup, repeats,
                                          reference=not skip_torch or "skipped (--skip_torch)",
                                          desed_task=desed_task,
                                          on_line=say)}
    result["beats_speedup_vs_torch"] = result["beats"]["speedup"]
    return _finished(result, started, json_path)


def _finished(result: dict, started: float, json_path) -> dict:
    """result with its wall time, said and written to json_path (when given)."""
    result["wall_s"] = round(time.monotonic() - started, 1)
    say(f"== {result['wall_s']:.0f} s in all")
    if json_path:
        files.write_text(json_path, json.dumps(result, indent=2))
        say(f"-> {json_path}")
    return result


def _fmt(x, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


say = functools.partial(print, flush=True)  # every line out as soon as it is measured


def _print_train_row(b, train):
    r = train["clips_per_s"][str(b)]
    say(f" {b:>6} {r['sedjax']:>10.1f} {_fmt(r['torch']):>10} "
        f"{_fmt(train['speedup'][str(b)], '.2f') + 'x':>13}")


def _params_line(p, note: str) -> str:
    return (f" params: sedjax {p['sedjax']:,} | torch "
            + (note if p["torch"] is None else
               f"{p['torch']:,} ({100 * (p['torch'] / p['sedjax'] - 1):+.2f} %)"))


def _train_header() -> str:
    return f" {'batch':>6} {'sedjax':>10} {'torch cpu':>10} {'sedjax/torch':>13}"


def run(batch_sizes: Sequence[int] = (16,), steps: int = 3, warmup: int = 1,
        repeats: int = 2, logmel_clips: int = 16, config=None, dtype: str = "float32",
        json_path: str | None = None, skip_torch: bool = False, pipeline: bool = False,
        run_counts: Sequence[int] = (), runs_batch_size: int = 8,
        matmul_sizes: Sequence[int] = (1024, 2048), desed: bool = False,
        desed_batch_sizes: Sequence[int] = (8,), desed_num_frames: int = 0) -> dict:
    """Runs the chosen sections, printing each line as it is measured; returns (and optionally
    writes) all figures.

    config: the pipeline section's config (configs/tiny.py when None); the train-step section
    always uses configs/baseline.py's model, with `dtype` as its compute dtype, as do the
    roofline line (the first batch size's step against n x n matmuls of matmul_sizes; empty:
    skipped) and the runs-per-program section (run_counts; empty: skipped). desed: the DESED
    CRNN (configs/desed_baseline.py, desed_num_frames input frames when > 0) against PyTorch.
    """
    started = time.monotonic()
    env = environment()
    v = env["versions"]
    say(f"== environment\n backend {env['backend']}: {env['device_count']} x "
        f"{env['device_kind']} | jax {v['jax']}  flax {v['flax']}  "
        f"torch {v['torch'] or 'not installed'}  librosa {v['librosa']} | "
        f"{env['cpu_count']} CPUs")
    note = "skipped" if skip_torch else "torch not installed"
    model_config = config_files.load(config_files.default_path("baseline"))
    model_config.model.dtype = dtype
    say(f"== train step, pass 2: (B, 500, 64) -> (B, 500, 10), sedjax {dtype}, clips/s "
        f"(median of {repeats} x {steps} steps)")
    header = []

    def train_row(b, train):
        if not header:  # the params are known once the first model is built
            say(_params_line(train["params"], note) + "\n" + _train_header())
            header.append(True)
        _print_train_row(b, train)

    train = train_bench(model_config, batch_sizes, steps, warmup, repeats, skip_torch,
                        on_row=train_row)
    roof = None
    if matmul_sizes:
        first = train["steps"][str(batch_sizes[0])]
        say(f"== roofline, {dtype}: train step (batch {batch_sizes[0]}) against the best "
            f"n x n matmul, GFLOP/s per device")
        matmul = {}
        for n in matmul_sizes:
            matmul[str(n)] = matmul_gflops(n, dtype)
            say(f" matmul n={n:<5} {matmul[str(n)]:>9.1f}")
        roof = roofline(first, matmul)
        flops = roof["train_step_flops_per_device"]
        say(f" train step  {_fmt(roof['train_step_gflops_per_device']):>9} "
            f"({_fmt(flops and flops / 1e9, '.2f')} GFLOP per step and device, XLA cost "
            f"analysis; {1e3 * roof['seconds_per_step']:.1f} ms per step)\n"
            f" roofline: train step {_fmt(roof['train_step_gflops_per_device'])} GFLOP/s = "
            f"{_fmt(roof['ratio'] and 100 * roof['ratio'], '.1f')} % of the best matmul "
            f"{_fmt(roof['peak_matmul_gflops'])} GFLOP/s")
    desed_out = None
    if desed:
        dc = desed_config(dtype, desed_num_frames)
        t, f = dc.features.num_frames, dc.features.n_mels
        say(f"== DESED CRNN train step (model.arch desed_crnn): (B, {t}, {f}) -> frames, "
            f"sedjax {dtype}, clips/s (median of {repeats} x {steps} steps)")
        ref = None if skip_torch else _torch_desed_reference()
        desed_header = []

        def desed_row(b, out):
            if not desed_header:
                say(_params_line(out["params"], note) + "\n" + _train_header())
                desed_header.append(True)
            _print_train_row(b, out)

        desed_out = train_bench(dc, desed_batch_sizes, steps, warmup, repeats,
                                ref is None, reference=ref, on_row=desed_row)
        desed_out["num_frames"], desed_out["n_mels"] = t, f
    runs = None
    if run_counts:
        say(f"== runs per program (config.num_runs), pass-2 step, {runs_batch_size} clips per "
            f"run and step, clips/s (median of {repeats} x {steps} steps)")

        def runs_row(k, rate, ratio):
            if k is None:
                say(f" one-run program: {rate:.1f}\n"
                    f" {'runs K':>6} {'one program':>12} {'K programs':>11} {'ratio':>7}")
                runs_row.separate = rate
            else:
                say(f" {k:>6} {rate:>12.1f} {runs_row.separate:>11.1f} {ratio:>6.2f}x")

        runs = runs_bench(model_config, runs_batch_size, run_counts, steps, warmup, repeats,
                          on_row=runs_row)
    say(f"== log-mel, {logmel_clips} synthetic 10 s clips at 44.1 kHz, clips/s")
    labels = {"jax": None, "librosa_serial": "librosa, 1 process",
              "librosa_all_cores": f"librosa, {os.cpu_count() or 1} processes"}
    seen = {}

    def mel_row(key, rate):
        seen[key] = rate
        if key == "jax":
            b = min(logmel_clips, model_config.features.batch_size)
            say(f" {'jnp frontend (jit, batch ' + str(b) + ')':<34} {rate:>9.1f}")
        else:
            say(f" {labels[key]:<34} {rate:>9.1f}   jnp/librosa {seen['jax'] / rate:.2f}x")

    mel = logmel_bench(logmel_clips, model_config.features, repeats, on_rate=mel_row)
    rates = mel["clips_per_s"]
    say(f" max |jnp - librosa| = {mel['max_abs_diff']:.2e} "
        f"({'ok' if mel['max_abs_diff'] < 1e-4 else 'ABOVE 1e-4'})")
    pipe = None
    if pipeline:
        if config is None:
            config = config_files.load(_DEFAULT_CONFIG)
        say("== pipeline stages, wall s")
        pipe = pipeline_bench(config)
        say(f" ({pipe['devices']} devices)")
        for stage, seconds in pipe["timings_s"].items():
            say(f" {stage:<20} {seconds:>9.2f}")
        say(f" {'total':<20} {sum(pipe['timings_s'].values()):>9.2f}\n"
            f" test event-based macro F1 {100 * pipe['test_event_f1_macro']:.2f} %")
    first = str(batch_sizes[0])
    result = {**env, "dtype": dtype, "train_step_speedup_vs_torch": train["speedup"][first],
              "train_step_speedup_vs_torch_by_batch_size": train["speedup"],
              "train_step_clips_per_s": train["clips_per_s"], "params": train["params"],
              "train_steps": steps, "train_warmup": warmup, "repeats": repeats,
              "roofline": roof, "desed": desed_out,
              "desed_train_step_speedup_vs_torch":
                  desed_out and desed_out["speedup"][str(desed_batch_sizes[0])],
              "runs_per_program": runs,
              "logmel_speedup_vs_librosa": rates["jax"] / rates["librosa_serial"],
              "logmel_speedup_vs_librosa_all_cores": rates["jax"] / rates["librosa_all_cores"],
              "logmel": mel, "pipeline": pipe}
    return _finished(result, started, json_path)


def resolved(fv: flags.FlagValues, name: str):
    """A flag's value: as given, else --full's value under --full, else its default."""
    if fv.full and name in PROFILES and not fv[name].present:
        return PROFILES[name][1]
    return fv[name].value


def run_with_flags(fv: flags.FlagValues = flags.FLAGS) -> dict:
    """`run` with the parsed values of define_flags' flags (and --full's)."""
    g = functools.partial(resolved, fv)
    if fv.beats:
        if fv.dtype != "float32":
            raise cli.UserError("--beats times float32, the reference's dtype (sedjax's "
                                "bfloat16 BEATs: python -m sedjax.device_check)")
        return run_beats(fv.beats_clips, fv.beats_seconds, fv.beats_size, g("warmup"),
                         fv.beats_repeats, fv.json, fv.skip_torch, fv.desed_task)
    pipeline = g("pipeline") and not fv.skip_pipeline
    return run([int(b) for b in g("batch_sizes")], g("steps"), g("warmup"), g("repeats"),
               g("logmel_clips"), fv.config if pipeline else None, fv.dtype, fv.json,
               fv.skip_torch, pipeline, [int(k) for k in g("runs")], g("runs_batch_size"),
               [int(n) for n in fv.matmul_sizes], g("desed"),
               [int(b) for b in g("desed_batch_sizes")], fv.desed_num_frames)


def main(argv: Sequence[str]) -> None:
    """The command: the chosen sections with the flags' values."""
    cli.expect_no_arguments(argv)
    run_with_flags(flags.FLAGS)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
