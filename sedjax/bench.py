"""Speed bench (python -m sedjax.bench): train step vs PyTorch, runs per program, log-mel vs
librosa, stages."""

from __future__ import annotations

from sedjax.runtime import host

if __name__ == "__main__":  # before the heavy imports; both models then share the allocator
    host.reexec_with_huge_pages("sedjax.bench")

import concurrent.futures as futures
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
import librosa
import numpy as np
from absl import flags
from ml_collections import config_flags

from sedjax.data import features
from sedjax.models import crnn
from sedjax import run as run_lib
from sedjax.config import config_files
from sedjax.runtime import cli, sharding
from sedjax.recipes import common, two_pass
from sedjax.train import parallel, runs as runs_lib

_DEFAULT_CONFIG = str(config_files.default_path("tiny"))


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """Registers the flags (called by __main__ only, so sedjax.main's --config never clashes)."""
    flags.DEFINE_list("batch_sizes", ["32", "128"], "Global train batch sizes.", flag_values=fv)
    flags.DEFINE_integer("steps", 10, "Timed train steps per repeat.", flag_values=fv)
    flags.DEFINE_integer("warmup", 2, "Untimed steps first (at least 1: compiles).", flag_values=fv)
    flags.DEFINE_integer("repeats", 3, "Timed repeats; the median is reported.", flag_values=fv)
    flags.DEFINE_list("runs", ["1", "4", "8"], "Runs per program (config.num_runs) of the "
                      "runs-per-program line; empty: skip it.", flag_values=fv)
    flags.DEFINE_integer("runs_batch_size", 16, "Clips per run and step of that line.",
                         flag_values=fv)
    flags.DEFINE_integer("logmel_clips", 64, "Synthetic 10 s clips of the log-mel bench.",
                         flag_values=fv)
    config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Config of the pipeline timing.",
                                    flag_values=fv, lock_config=True)
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                      "sedjax compute dtype (config.model.dtype); PyTorch stays float32.",
                      flag_values=fv)
    flags.DEFINE_string("json", None, "Writes all figures to this JSON file.", flag_values=fv)
    flags.DEFINE_bool("skip_torch", False, "No PyTorch reference.", flag_values=fv)
    flags.DEFINE_bool("skip_pipeline", False, "No end-to-end pipeline timing.", flag_values=fv)


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


def sedjax_train_throughput(config, batch_size: int, steps: int, warmup: int, repeats: int
                            ) -> tuple[float, int]:
    """(clips/s, params) of the jitted data-parallel pass-2 step on a pre-sharded batch."""
    mesh = sharding.make_mesh()  # all devices (one host: all local ones)
    if batch_size % sharding.num_shards(mesh):
        raise cli.UserError(f"batch size {batch_size} is not divisible by "
                            f"{sharding.num_shards(mesh)} devices")
    t, f, c = config.features.num_frames, config.features.n_mels, len(config.data.classes)
    state = common.new_state(config, "pass2", mesh)
    num_params = crnn.count_params(state.params)
    rng = np.random.default_rng(0)
    batch = sharding.shard_batch({
        "features": rng.normal(size=(batch_size, t, f)).astype(np.float32),
        "frames": np.full(batch_size, t, np.int32),
        "labels": (rng.random((batch_size, c)) < 0.3).astype(np.float32)}, mesh)
    stats = sharding.replicate((np.zeros(f, np.float32), np.ones(f, np.float32)), mesh)
    step = parallel.train_step_fn(functools.partial(
        two_pass.train_step, bce_eps=config.pass2.bce_eps, output="frame"), mesh, resident=False)

    def run(n):
        nonlocal state  # the state is donated: always carry the new one
        for _ in range(n):
            state, _ = step(state, stats, batch)
        jax.block_until_ready(state)

    return _rate(run, batch_size, steps, warmup, repeats), num_params


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
               repeats: int) -> dict:
    """Train clips/s of K runs per program against K separate one-run programs (which, run one
    after another, train at the one-run program's clips/s), and their ratio, per K."""
    separate = sedjax_train_throughput(config, batch_size, steps, warmup, repeats)[0]
    out = {"batch_size_per_run": batch_size, "separate_clips_per_s": separate,
           "clips_per_s": {}, "speedup_vs_separate": {}}
    for k in run_counts:
        rate = runs_train_throughput(config, batch_size, k, steps, warmup, repeats)
        out["clips_per_s"][str(k)] = rate
        out["speedup_vs_separate"][str(k)] = rate / separate
    return out


def train_bench(config, batch_sizes: Sequence[int], steps: int, warmup: int, repeats: int,
                skip_torch: bool) -> dict:
    """Train clips/s of sedjax and PyTorch per batch size, their ratio and param counts."""
    ref = None if skip_torch else _torch_reference()
    out = {"clips_per_s": {}, "speedup": {}, "params": {"sedjax": None, "torch": None}}
    if ref is not None:
        out["params"]["torch"] = ref.count_params(ref.build_model(
            n_mels=config.features.n_mels, num_classes=len(config.data.classes)))
    for b in batch_sizes:
        ours, out["params"]["sedjax"] = sedjax_train_throughput(config, b, steps, warmup, repeats)
        theirs = None if ref is None else ref.measure_train_throughput(
            b, steps, warmup, repeats, config.features.num_frames, config.features.n_mels,
            len(config.data.classes))
        out["clips_per_s"][str(b)] = {"sedjax": ours, "torch": theirs}
        out["speedup"][str(b)] = None if theirs is None else ours / theirs
    return out


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


def logmel_bench(n: int, config, repeats: int) -> dict:
    """Log-mel clips/s: jitted jnp frontend vs librosa serially and over all cores."""
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
    features.log_mel(clips[0], sr, config)  # warm-up: librosa's first call is slow
    start = time.perf_counter()
    reference = np.stack([features.log_mel(y, sr, config) for y in clips])
    serial_rate = n / (time.perf_counter() - start)
    workers = os.cpu_count() or 1
    # spawn, not fork: this process runs JAX's threads
    with futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")
                                     ) as pool:
        warm = clips[:1] * 2 * workers  # starts every worker and imports librosa there
        list(pool.map(features.log_mel, warm, [sr] * len(warm), [config] * len(warm)))
        start = time.perf_counter()
        list(pool.map(features.log_mel, clips, [sr] * n, [config] * n))
        pool_rate = n / (time.perf_counter() - start)
    return {"clips": n, "batch_size": bs, "workers": workers,
            "clips_per_s": {"jax": jax_rate, "librosa_serial": serial_rate,
                            "librosa_all_cores": pool_rate},
            "max_abs_diff": float(np.abs(outputs[0] - reference).max())}


def pipeline_bench(config) -> dict:
    """Wall time of each trainer stage on `config`, in a temporary workdir, and the test F1."""
    with tempfile.TemporaryDirectory(prefix="sedjax-bench-") as workdir:
        summary = run_lib.train_and_evaluate(config, workdir)
    return {"timings_s": summary["timings_s"], "devices": summary["devices"],
            "test_event_f1_macro": summary["test"]["event_based"]["f_measure_macro"]}


def _fmt(x, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


def run(batch_sizes: Sequence[int] = (32, 128), steps: int = 10, warmup: int = 2,
        repeats: int = 3, logmel_clips: int = 64, config=None, dtype: str = "float32",
        json_path: str | None = None, skip_torch: bool = False, skip_pipeline: bool = False,
        run_counts: Sequence[int] = (1, 4, 8), runs_batch_size: int = 16) -> dict:
    """Runs every section, prints tables, returns (and optionally writes) all figures.

    config: the pipeline section's config (configs/tiny.py when None); the train-step section
    always uses configs/baseline.py's model, with `dtype` as its compute dtype, as does the
    runs-per-program section (run_counts; empty: skipped).
    """
    env = environment()
    v = env["versions"]
    print(f"== environment\n backend {env['backend']}: {env['device_count']} x "
          f"{env['device_kind']} | jax {v['jax']}  flax {v['flax']}  "
          f"torch {v['torch'] or 'not installed'}  librosa {v['librosa']} | "
          f"{env['cpu_count']} CPUs")
    model_config = config_files.load(config_files.default_path("baseline"))
    model_config.model.dtype = dtype
    train = train_bench(model_config, batch_sizes, steps, warmup, repeats, skip_torch)
    p = train["params"]
    note = "skipped" if skip_torch else "torch not installed"
    print(f"== train step, pass 2: (B, 500, 64) -> (B, 500, 10), sedjax {dtype}, clips/s "
          f"(median of {repeats} x {steps} steps)\n params: sedjax {p['sedjax']:,} | torch "
          + (note if p["torch"] is None else
             f"{p['torch']:,} ({100 * (p['torch'] / p['sedjax'] - 1):+.2f} %)"))
    print(f" {'batch':>6} {'sedjax':>10} {'torch cpu':>10} {'sedjax/torch':>13}")
    for b, r in train["clips_per_s"].items():
        print(f" {b:>6} {r['sedjax']:>10.1f} {_fmt(r['torch']):>10} "
              f"{_fmt(train['speedup'][b], '.2f') + 'x':>13}")
    runs = None
    if run_counts:
        runs = runs_bench(model_config, runs_batch_size, run_counts, steps, warmup, repeats)
        print(f"== runs per program (config.num_runs), pass-2 step, {runs_batch_size} clips per "
              f"run and step, clips/s (median of {repeats} x {steps} steps)\n"
              f" {'runs K':>6} {'one program':>12} {'K programs':>11} {'ratio':>7}")
        for k, rate in runs["clips_per_s"].items():
            print(f" {k:>6} {rate:>12.1f} {runs['separate_clips_per_s']:>11.1f} "
                  f"{runs['speedup_vs_separate'][k]:>6.2f}x")
    mel = logmel_bench(logmel_clips, model_config.features, repeats)
    rates = mel["clips_per_s"]
    print(f"== log-mel, {mel['clips']} synthetic 10 s clips at 44.1 kHz, clips/s\n"
          f" {'jnp frontend (jit, batch ' + str(mel['batch_size']) + ')':<34} "
          f"{rates['jax']:>9.1f}")
    for key, label in (("librosa_serial", "librosa, 1 process"),
                       ("librosa_all_cores", f"librosa, {mel['workers']} processes")):
        print(f" {label:<34} {rates[key]:>9.1f}   jnp/librosa "
              f"{rates['jax'] / rates[key]:.2f}x")
    print(f" max |jnp - librosa| = {mel['max_abs_diff']:.2e} "
          f"({'ok' if mel['max_abs_diff'] < 1e-4 else 'ABOVE 1e-4'})")
    pipe = None
    if not skip_pipeline:
        if config is None:
            config = config_files.load(_DEFAULT_CONFIG)
        pipe = pipeline_bench(config)
        print(f"== pipeline stages, wall s ({pipe['devices']} devices)")
        for stage, seconds in pipe["timings_s"].items():
            print(f" {stage:<20} {seconds:>9.2f}")
        print(f" {'total':<20} {sum(pipe['timings_s'].values()):>9.2f}\n"
              f" test event-based macro F1 {100 * pipe['test_event_f1_macro']:.2f} %")
    first = str(batch_sizes[0])
    result = {**env, "dtype": dtype, "train_step_speedup_vs_torch": train["speedup"][first],
              "train_step_speedup_vs_torch_by_batch_size": train["speedup"],
              "train_step_clips_per_s": train["clips_per_s"], "params": train["params"],
              "train_steps": steps, "train_warmup": warmup, "repeats": repeats,
              "runs_per_program": runs,
              "logmel_speedup_vs_librosa": rates["jax"] / rates["librosa_serial"],
              "logmel_speedup_vs_librosa_all_cores": rates["jax"] / rates["librosa_all_cores"],
              "logmel": mel, "pipeline": pipe}
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
        print(f"-> {json_path}")
    return result


def run_with_flags(fv: flags.FlagValues = flags.FLAGS) -> dict:
    """`run` with the parsed values of define_flags' flags."""
    return run([int(b) for b in fv.batch_sizes], fv.steps, fv.warmup, fv.repeats,
               fv.logmel_clips, None if fv.skip_pipeline else fv.config, fv.dtype, fv.json,
               fv.skip_torch, fv.skip_pipeline, [int(k) for k in fv.runs], fv.runs_batch_size)


def main(argv: Sequence[str]) -> None:
    """The command: every section with the flags' values."""
    cli.expect_no_arguments(argv)
    run_with_flags(flags.FLAGS)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
