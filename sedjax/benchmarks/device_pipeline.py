"""The device check's pipeline section: a synthetic run of each recipe for a few epochs, each in
a child process (`python -m sedjax.device_check --pipeline_child=SPEC`) killed at its budget:
wall time per stage, seconds per epoch and the full schedule extrapolated."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import time

from sedjax.benchmarks import device_sections, environment
from sedjax.benchmarks.output import say
from sedjax.config import config_files
from sedjax.system import files

# --tiny's XLA flags (the command's before its backend starts; the pipeline's child processes'):
# less compile time for a slower step (docs/speed.md)
FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")


def pipeline_config(name: str, recipe: str, epochs: int | None, synthetic: dict | None = None):
    """configs/<name>.py as a synthetic run of `recipe` (epochs: of every training stage;
    synthetic: the generated dataset's settings, data.synthetic, when given)."""
    c = config_files.load(config_files.default_path(name))
    with c.unlocked():
        c.data.dataset, c.recipe = "synthetic", recipe
        if name == "mean_teacher":  # the baseline's real-data layout: generated instead
            c.data.root = ""
        if synthetic:
            c.data.synthetic.update(synthetic)
        if epochs:
            for stage in _stages(recipe):
                c[stage].num_epochs = epochs
    return c


def _stages(recipe: str) -> tuple:
    from sedjax import recipes
    return recipes.get(recipe).stages


def pipeline_child(spec: dict) -> None:
    """In a child process: one recipe's run, its timings and epoch seconds to spec['out']."""
    from sedjax import run as run_lib
    config = pipeline_config(spec["config"], spec["recipe"], spec["epochs"], spec["synthetic"])
    full = pipeline_config(spec["config"], spec["recipe"], None, spec["synthetic"])
    summary = run_lib.train_and_evaluate(config, spec["workdir"])
    out = {"timings_s": summary["timings"]["stages_s"],
           "compile_s": summary["timings"]["compile_s"], "devices": summary["devices"],
           "synthetic_sizes": {k: int(v) for k, v in config.data.synthetic.items()
                               if k.startswith("num_") and k != "num_workers"},
           "test_event_f1_macro": summary["test"]["event_based"]["f_measure_macro"],
           "memory": environment.peak_memory(), "stages": {}}
    extrapolated = 0.0
    for stage in _stages(spec["recipe"]):
        history = json.loads((pathlib.Path(spec["workdir"], stage, "result.json")).read_text()
                             ).get("history", [])
        seconds = [h["seconds"] for h in history]
        # the first epoch compiles: the steady epochs' median when there are any
        per_epoch = statistics.median(seconds[1:] or seconds) if seconds else None
        configured = int(full[stage].num_epochs)
        out["stages"][stage] = {"epochs_run": len(seconds), "epoch_seconds": seconds,
                                "seconds_per_epoch": per_epoch, "configured_epochs": configured,
                                "extrapolated_s": per_epoch and per_epoch * configured}
        extrapolated += (per_epoch or 0.0) * configured
    fixed = sum(v for k, v in summary["timings"]["stages_s"].items() if k != "training")
    out["extrapolated_training_s"] = extrapolated
    out["extrapolated_total_s"] = extrapolated + fixed
    files.write_text(spec["out"], json.dumps(out, indent=2))


def child_xla_flags(tiny: bool) -> str:
    """XLA_FLAGS of the pipeline children. Tiny: compile-time over run-time optimisation (the
    tiny check is compiles, mostly). Set in the child's environment only: os.environ changed
    here would reach every later subprocess of the caller (a test session's included) and
    change their numbers."""
    flags_now = os.environ.get("XLA_FLAGS", "")
    added = [f for f in (FAST_COMPILE if tiny else ()) if f not in flags_now.split()]
    return " ".join([flags_now, *added]).strip()  # once, though the command set them already


def _run_child(spec: dict, timeout: float) -> dict:
    """pipeline_child in a new process group, killed (with its workers) at `timeout`."""
    env = {**os.environ, "XLA_FLAGS": child_xla_flags(spec["tiny"])}
    cmd = [sys.executable, "-m", "sedjax.device_check", f"--pipeline_child={json.dumps(spec)}"]
    log = pathlib.Path(spec["workdir"]).with_suffix(".log")
    with open(log, "w") as f:
        child = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True)
        try:
            rc = child.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            rc = None
    tail = log.read_text(errors="replace")[-2000:]
    if rc is None:
        return {"error": f"timed out after {timeout:.0f} s (budget)", "log_tail": tail,
                "skipped": [spec["recipe"]]}
    if rc != 0 or not os.path.exists(spec["out"]):
        return {"error": f"exit status {rc}", "log_tail": tail}
    with open(spec["out"]) as f:
        return json.load(f)


def pipeline_section(sizes: device_sections.Sizes, workdir: str, deadline: float) -> dict:
    """Each recipe's synthetic run in a child process, all on the first one's dataset (its
    data.synthetic); the others reuse its generated audio, and its features when theirs are
    the same (symlinked)."""
    out, first = {}, None
    recipes = list(sizes.pipeline_configs.items())
    base = pipeline_config(recipes[0][1], recipes[0][0], None)
    synthetic = base.data.synthetic.to_dict()
    for i, (recipe, name) in enumerate(recipes):
        left = deadline - time.monotonic()
        if left <= 5:
            out[recipe] = {"error": "no time left in the budget", "skipped": [recipe]}
            continue
        wd = pathlib.Path(workdir, recipe)
        wd.mkdir(parents=True, exist_ok=True)
        same_features = (pipeline_config(name, recipe, None).features.to_dict()
                         == base.features.to_dict())
        if first is not None:
            for shared in ("synthetic", "features") if same_features else ("synthetic",):
                if (first / shared).exists() and not (wd / shared).exists():
                    (wd / shared).symlink_to((first / shared).resolve())
        spec = {"recipe": recipe, "config": name, "epochs": sizes.epochs, "workdir": str(wd),
                "out": str(wd) + ".json", "synthetic": synthetic,
                "tiny": sizes is device_sections.TINY}
        # the first run also generates the data: it may take what the others leave
        share = left if i == len(recipes) - 1 else left * (0.6 if first is None else 0.5)
        start = time.monotonic()
        r = _run_child(spec, share)
        r["wall_s"] = round(time.monotonic() - start, 1)
        out[recipe] = r
        first = first or wd
        if "error" in r:
            say(f" {recipe:<14} failed: {r['error']}")
        else:
            say(f" {recipe:<14} " + "  ".join(f"{k} {v:.1f}s" for k, v in r["timings_s"].items())
                + f"  -> full schedule ~{r['extrapolated_total_s']:.0f}s")
    return out
