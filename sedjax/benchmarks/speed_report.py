"""The speed bench's report (python -m sedjax.bench): its sections run in order, each line
printed as soon as it is measured, and all figures returned (and written as JSON). The
sections: the train step against PyTorch, the roofline, the DESED CRNN's train step, runs per
program, log-mel against librosa, the pipeline's stages; or, alone, the BEATs encoder."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Sequence

from sedjax import run as run_lib
from sedjax.benchmarks import (beats_encoder, environment, logmel, runs_per_program, timing,
                               train_step)
from sedjax.benchmarks.output import finish, fmt, say
from sedjax.config import config_files

DEFAULT_PIPELINE_CONFIG = str(config_files.default_path("tiny"))


def pipeline_bench(config) -> dict:
    """Wall time of each trainer stage on `config`, in a temporary workdir, and the test F1."""
    with tempfile.TemporaryDirectory(prefix="sedjax-bench-") as workdir:
        summary = run_lib.train_and_evaluate(config, workdir)
    return {"timings_s": summary["timings"]["stages_s"],
            "compile_s": summary["timings"]["compile_s"], "devices": summary["devices"],
            "test_event_f1_macro": summary["test"]["event_based"]["f_measure_macro"]}


def _print_train_row(b, train):
    r = train["clips_per_s"][str(b)]
    say(f" {b:>6} {r['sedjax']:>10.1f} {fmt(r['torch']):>10} "
        f"{fmt(train['speedup'][str(b)], '.2f') + 'x':>13}")


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
    env = environment.environment()
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

    train = train_step.train_bench(model_config, batch_sizes, steps, warmup, repeats,
                                   skip_torch, on_row=train_row)
    roof = None
    if matmul_sizes:
        first = train["steps"][str(batch_sizes[0])]
        say(f"== roofline, {dtype}: train step (batch {batch_sizes[0]}) against the best "
            f"n x n matmul, GFLOP/s per device")
        matmul = {}
        for n in matmul_sizes:
            matmul[str(n)] = timing.matmul_gflops(n, dtype)
            say(f" matmul n={n:<5} {matmul[str(n)]:>9.1f}")
        roof = timing.roofline(first, matmul)
        flops = roof["train_step_flops_per_device"]
        say(f" train step  {fmt(roof['train_step_gflops_per_device']):>9} "
            f"({fmt(flops and flops / 1e9, '.2f')} GFLOP per step and device, XLA cost "
            f"analysis; {1e3 * roof['seconds_per_step']:.1f} ms per step)\n"
            f" roofline: train step {fmt(roof['train_step_gflops_per_device'])} GFLOP/s = "
            f"{fmt(roof['ratio'] and 100 * roof['ratio'], '.1f')} % of the best matmul "
            f"{fmt(roof['peak_matmul_gflops'])} GFLOP/s")
    desed_out = None
    if desed:
        dc = train_step.desed_config(dtype, desed_num_frames)
        t, f = dc.features.num_frames, dc.features.n_mels
        say(f"== DESED CRNN train step (model.arch desed_crnn): (B, {t}, {f}) -> frames, "
            f"sedjax {dtype}, clips/s (median of {repeats} x {steps} steps)")
        desed_header = []

        def desed_row(b, out):
            if not desed_header:
                say(_params_line(out["params"], note) + "\n" + _train_header())
                desed_header.append(True)
            _print_train_row(b, out)

        desed_out = train_step.train_bench(dc, desed_batch_sizes, steps, warmup, repeats,
                                           skip_torch, on_row=desed_row)
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

        runs = runs_per_program.runs_bench(model_config, runs_batch_size, run_counts, steps,
                                           warmup, repeats, on_row=runs_row)
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

    mel = logmel.logmel_bench(logmel_clips, model_config.features, repeats, on_rate=mel_row)
    rates = mel["clips_per_s"]
    say(f" max |jnp - librosa| = {mel['max_abs_diff']:.2e} "
        f"({'ok' if mel['max_abs_diff'] < 1e-4 else 'ABOVE 1e-4'})")
    pipe = None
    if pipeline:
        if config is None:
            config = config_files.load(DEFAULT_PIPELINE_CONFIG)
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
    return finish(result, started, json_path)


def run_beats(clips: int = 4, seconds: float = 10.0, size: str = "base", warmup: int = 1,
              repeats: int = 5, json_path: str | None = None, skip_torch: bool = False,
              desed_task: str | None = None) -> dict:
    """`--beats`: the environment and beats_bench (float32), printed; returns (and optionally
    writes) the figures."""
    started = time.monotonic()
    env = environment.environment()
    v = env["versions"]
    say(f"== environment\n backend {env['backend']}: {env['device_count']} x "
        f"{env['device_kind']} | jax {v['jax']}  flax {v['flax']}  "
        f"torch {v['torch'] or 'not installed'} | {env['cpu_count']} CPUs")
    say(f"== BEATs encoder, embeddings of {clips} clips of {seconds:g} s a call, clips/s "
        f"(median of {repeats} calls after {max(warmup, 1)} untimed)")
    result = {**env, "beats": beats_encoder.beats_bench(
        clips, seconds, size, "float32", warmup, repeats,
        reference=not skip_torch or "skipped (--skip_torch)", desed_task=desed_task,
        on_line=say)}
    result["beats_speedup_vs_torch"] = result["beats"]["speedup"]
    return finish(result, started, json_path)
