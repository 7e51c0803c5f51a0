"""Device check (python -m sedjax.device_check; launch/device_check.sh): what one accelerator
gives sedjax, in one table and one JSON file, within a time budget (8 minutes by default).

Sections, in order, each with its own share of the budget; a section's failure is recorded in
the JSON and the next one runs; the JSON is rewritten after every section (nothing is lost if
the check is killed):
- environment: backend, device kind and count, library versions;
- train_step: pass-2 train-step clips/s (and GFLOP/s per device, XLA's cost analysis) of the
  seed CRNN (configs/baseline.py) and of the DESED CRNN (configs/desed_baseline.py, the largest
  model), float32 and bfloat16, per global batch size, each with the plain Flax path and with
  the CPU kernels (sedjax.models.kernels: what model.*'s 'auto' would gain here);
- runs_per_program: one K-run program against K one-run programs, clips/s (sedjax.bench);
- logmel: the jnp log-mel frontend on the device against librosa on all host cores;
- beats: sedjax's BEATs encoder (AS2M's architecture, random weights), float32 and bfloat16,
  embeddings (clips/s) of a batch of 10-s clips (sedjax.bench.beats_bench, the JAX side only);
- pipeline: a synthetic run at the real DCASE2018 split sizes (configs/dcase_scale_synthetic.py)
  for a few epochs of each recipe (two_pass, mean_teacher), each in a child process killed at
  its budget: wall time per stage, seconds per epoch, and the full schedule extrapolated
  (seconds per epoch x the config's epochs);
- memory: the device's peak bytes in use (memory_stats, None where the backend has none).

`--tiny` runs the same code at tiny sizes (CPU, about a minute or two).
"""

from __future__ import annotations

import os

from sedjax.runtime import host

if __name__ == "__main__":
    host.reexec_with_huge_pages("sedjax.device_check")
    # the pipeline runs in child processes on the same device: grow, never preallocate
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import dataclasses
import json
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Callable, Sequence

import jax
from absl import flags

from sedjax import bench
from sedjax.config import config_files
from sedjax.models import kernels
from sedjax.runtime import cli, files

say = bench.say


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
# --tiny's XLA flags (the command's before its backend starts; the pipeline's child processes'):
# less compile time for a slower step (docs/speed.md)
FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
SECTIONS = ("environment", "train_step", "runs_per_program", "logmel", "beats", "pipeline",
            "memory")


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """Registers the command's flags."""
    flags.DEFINE_string("json", "device_check.json", "Where the JSON goes (rewritten after "
                        "every section).", flag_values=fv)
    flags.DEFINE_bool("tiny", False, "Tiny sizes (CPU): the same code path in a minute or two.",
                      flag_values=fv)
    flags.DEFINE_float("budget_s", None, "Seconds for the whole check (default: 480, tiny: "
                       "270); a section starts nothing new past its share or past this.",
                       flag_values=fv)
    flags.DEFINE_list("batch_sizes", None, "Global train batch sizes (default: 24,64,128,256,"
                      "512; tiny: 4).", flag_values=fv)
    flags.DEFINE_list("sections", list(SECTIONS[1:-1]), "Sections to run (environment and "
                      "memory always).", flag_values=fv)
    flags.DEFINE_list("section_budgets", [], "Seconds of single sections, e.g. pipeline=1800 "
                      "(defaults: train_step 130, runs_per_program 60, logmel 40, beats 40, "
                      "pipeline 200; tiny: 60, 30, 30, 30, 120).", flag_values=fv)
    flags.DEFINE_string("workdir", None, "Folder of the pipeline runs (default: a temporary "
                        "one, removed after).", flag_values=fv)
    flags.DEFINE_string("pipeline_child", None, "(internal) run one pipeline recipe: JSON "
                        "{recipe, config, epochs, workdir, out}.", flag_values=fv)


def peak_memory() -> dict:
    """The first device's peak and limit bytes (None where the backend keeps no stats)."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001  (some backends raise instead of returning None)
        stats = {}
    return {"peak_bytes_in_use": stats.get("peak_bytes_in_use"),
            "bytes_limit": stats.get("bytes_limit")}


class Report:
    """The JSON being built: rewritten (atomically) after every section."""

    def __init__(self, path: str, tiny: bool, budget_s: float):
        self.path, self.start = path, time.monotonic()
        self.deadline = self.start + budget_s
        self.data = {"tiny": tiny, "budget_s": budget_s, "wall_s": 0.0,
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "sections": {}}

    def write(self) -> None:
        self.data["wall_s"] = round(time.monotonic() - self.start, 1)
        files.write_text(self.path, json.dumps(self.data, indent=2))

    def section(self, name: str, budget_s: float, fn: Callable[[float], dict]) -> dict:
        """Runs fn(deadline) and records {status, wall_s, results | error}; never raises."""
        start = time.monotonic()
        deadline = min(start + budget_s, self.deadline)
        entry = {"status": "running", "budget_s": budget_s}
        self.data["sections"][name] = entry
        if start >= self.deadline:
            entry.update(status="skipped", error="the check's time budget is spent")
        else:
            say(f"== {name}")
            try:
                entry["results"] = fn(deadline)
                entry["status"] = "partial" if _incomplete(entry["results"]) else "ok"
            except Exception as e:  # noqa: BLE001  (recorded; the next section still runs)
                entry.update(status="error", error=f"{type(e).__name__}: {e}",
                             traceback=traceback.format_exc()[-3000:])
                say(f" {name} failed: {type(e).__name__}: {e}")
        entry["wall_s"] = round(time.monotonic() - start, 1)
        self.write()
        return entry


def _incomplete(results) -> bool:
    """Whether a section's results hold a skipped or failed part."""
    if isinstance(results, dict):
        return (bool(results.get("skipped")) or "error" in results
                or any(_incomplete(v) for v in results.values()))
    if isinstance(results, list):
        return any(_incomplete(v) for v in results)
    return False


def model_config(arch: str, dtype: str, num_frames: int = 0):
    """The train-step section's config of `arch` ('crnn': configs/baseline.py, 'desed_crnn':
    configs/desed_baseline.py) with compute dtype `dtype` (num_frames > 0: its input frames)."""
    if arch == "desed_crnn":
        return bench.desed_config(dtype, num_frames)
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
                        r = bench.sedjax_train_step(config, b, sizes.steps, sizes.warmup,
                                                    sizes.repeats)
                        flops = r["flops_per_step_per_device"]
                        row.update(clips_per_s=r["clips_per_s"], params=r["params"],
                                   seconds_per_step=r["seconds_per_step"],
                                   gflops_per_device=flops and flops / r["seconds_per_step"] / 1e9)
                        say(f" {name:<40} {r['clips_per_s']:>10.1f} clips/s  "
                            f"{bench._fmt(row['gflops_per_device'])} GFLOP/s")
                    except Exception as e:  # noqa: BLE001  (e.g. out of memory at the largest)
                        row["error"] = f"{type(e).__name__}: {e}"[:2000]
                        say(f" {name:<40} failed: {row['error'][:200]}")
                    rows.append(row)
    return {"rows": rows, "skipped": skipped, "memory": peak_memory()}


def runs_section(sizes: Sizes, deadline: float, train: dict | None = None) -> dict:
    """sedjax.bench.runs_bench on the seed CRNN (float32); the one-run program's clips/s is
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
    return bench.runs_bench(config, sizes.runs_batch_size, sizes.run_counts, sizes.steps,
                            sizes.warmup, sizes.repeats, on_row=row, deadline=deadline,
                            separate=separate)


def logmel_section(sizes: Sizes, deadline: float) -> dict:
    """sedjax.bench.logmel_bench on the seed's features, librosa on every host core."""
    config = config_files.load(config_files.default_path("baseline")).features
    return bench.logmel_bench(sizes.logmel_clips, config, sizes.repeats,
                              on_rate=lambda k, r: say(f" {k:<20} {r:>10.1f} clips/s"))


def beats_section(sizes: Sizes, deadline: float) -> dict:
    """sedjax.bench.beats_bench per dtype (float32, bfloat16): the JAX encoder alone, random
    weights of sizes.beats['size'] ('base': AS2M's 12 layers x 768); what the deadline leaves
    out is 'skipped'."""
    b = sizes.beats
    rows, skipped = [], []
    for dtype in sizes.dtypes:
        name = f"BEATs {b['size']} {dtype}"
        if time.monotonic() > deadline:
            skipped.append(name)
            continue
        r = bench.beats_bench(b["clips"], b["seconds"], b["size"], dtype, sizes.warmup,
                              sizes.repeats, reference=False)
        rows.append({k: r[k] for k in ("size", "dtype", "layers", "width", "params", "clips",
                                       "seconds", "tokens")}
                    | {"clips_per_s": r["clips_per_s"]["sedjax"]})
        say(f" {name:<24} {r['clips_per_s']['sedjax']:>10.2f} clips/s ({b['clips']} clips of "
            f"{b['seconds']:g} s a call)")
    return {"rows": rows, "skipped": skipped, "memory": peak_memory()}


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
           "memory": peak_memory(), "stages": {}}
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


def pipeline_section(sizes: Sizes, workdir: str, deadline: float) -> dict:
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
                "out": str(wd) + ".json", "synthetic": synthetic, "tiny": sizes is TINY}
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


def _fmt_bytes(n) -> str:
    return "n/a" if n is None else f"{n / 2 ** 30:.2f} GiB"


def table(data: dict) -> str:
    """The check's one table: a line per figure."""
    s, env = data["sections"], data.get("environment", {})
    lines = [f"== sedjax device check: {env.get('device_count')} x {env.get('device_kind')} "
             f"({env.get('backend')}), {data['wall_s']:.0f} s of a {data['budget_s']:.0f} s "
             f"budget" + (" (tiny)" if data["tiny"] else ""),
             f" {'section':<18} {'what':<44} {'value':>12}  unit"]

    def add(section, what, value, unit, spec=".1f"):
        lines.append(f" {section:<18} {what:<44} {bench._fmt(value, spec):>12}  {unit}")
    for name in SECTIONS[1:]:
        e = s.get(name)
        if e is None:
            continue
        if e["status"] in ("error", "skipped"):
            lines.append(f" {name:<18} {e['status'].upper() + ': ' + e.get('error', '')[:80]}")
            continue
        r = e["results"]
        if name == "train_step":
            for row in r["rows"]:
                what = (f"{row['model']} {row['dtype']} {row.get('kernels', '')} "
                        f"b{row['batch_size']}")
                if "error" in row:
                    lines.append(f" {name:<18} {what:<44} FAILED {row['error'][:60]}")
                else:
                    add(name, what, row["clips_per_s"], "clips/s  "
                        f"({bench._fmt(row['gflops_per_device'])} GFLOP/s per device)")
        elif name == "runs_per_program":
            add(name, "one-run program", r["separate_clips_per_s"], "clips/s")
            for k, rate in r["clips_per_s"].items():
                add(name, f"K={k} in one program", rate,
                    f"clips/s ({r['speedup_vs_separate'][k]:.2f}x K programs)")
        elif name == "logmel":
            rates = r["clips_per_s"]
            add(name, "jnp frontend on the device", rates["jax"], "clips/s")
            add(name, f"librosa, {r['workers']} processes", rates["librosa_all_cores"],
                f"clips/s (device {rates['jax'] / rates['librosa_all_cores']:.2f}x)")
        elif name == "beats":
            for row in r["rows"]:
                add(name, f"BEATs {row['size']} {row['dtype']}, {row['clips']} x "
                    f"{row['seconds']:g} s clips", row["clips_per_s"], "clips/s (embeddings)",
                    ".2f")
        elif name == "pipeline":
            for recipe, p in r.items():
                if "error" in p:
                    lines.append(f" {name:<18} {recipe + ': ' + p['error']}")
                    continue
                for stage, sec in p["timings_s"].items():
                    add(name, f"{recipe}: {stage}", sec, "s")
                for stage, st in p["stages"].items():
                    add(name, f"{recipe}: {stage} per epoch", st["seconds_per_epoch"],
                        f"s (x {st['configured_epochs']} epochs configured)", ".2f")
                add(name, f"{recipe}: full schedule, extrapolated", p["extrapolated_total_s"],
                    "s", ".0f")
        elif name == "memory":
            lines.append(f" {name:<18} {'peak bytes in use (device 0)':<44} "
                         f"{_fmt_bytes(r['peak_bytes_in_use']):>12}")
    for name in SECTIONS[1:]:
        e = s.get(name)
        if e is not None and e["status"] == "partial":
            lines.append(f" ({name}: part skipped at its time budget)")
    return "\n".join(lines)


def run(json_path: str = "device_check.json", tiny: bool = False,
        budget_s: float | None = None, batch_sizes: Sequence[int] | None = None,
        sections: Sequence[str] = SECTIONS[1:-1], workdir: str | None = None,
        section_budgets: dict | None = None) -> dict:
    """Runs the check; returns the JSON's content (written after every section).

    section_budgets: seconds per section name, replacing the defaults (Sizes.budgets_s)."""
    sizes = TINY if tiny else FULL
    budget_s = budget_s or (270.0 if tiny else 480.0)
    batch_sizes = list(batch_sizes or sizes.batch_sizes)
    report = Report(json_path, tiny, budget_s)
    env = bench.environment()
    report.data["environment"] = env
    report.data["xla_flags"] = child_xla_flags(tiny)
    report.data["sections"]["environment"] = {"status": "ok", "results": env, "wall_s": 0.0}
    say(f"== environment: {env['device_count']} x {env['device_kind']} ({env['backend']}), "
        f"jax {env['versions']['jax']}, {env['cpu_count']} CPUs")
    report.write()
    b = {**sizes.budgets_s, **(section_budgets or {})}
    chosen = {
        "train_step": lambda d: train_section(sizes, batch_sizes, d),
        "runs_per_program": lambda d: runs_section(
            sizes, d, report.data["sections"].get("train_step", {}).get("results")),
        "logmel": lambda d: logmel_section(sizes, d),
        "beats": lambda d: beats_section(sizes, d),
    }
    for name, fn in chosen.items():
        if name in sections:
            report.section(name, b[name], fn)
    if "pipeline" in sections:
        with tempfile.TemporaryDirectory(prefix="sedjax-device-check-") as tmp:
            report.section("pipeline", b["pipeline"],
                           lambda d: pipeline_section(sizes, workdir or tmp, d))
    report.deadline = float("inf")  # the memory section always runs (it costs nothing)
    report.section("memory", 1e9, lambda d: peak_memory())
    say(table(report.data))
    say(f"-> {json_path}")
    return report.data


def main(argv: Sequence[str]) -> None:
    """The command."""
    cli.expect_no_arguments(argv)
    fv = flags.FLAGS
    if fv.pipeline_child:
        pipeline_child(json.loads(fv.pipeline_child))
        return
    if any("=" not in item for item in fv.section_budgets):
        raise cli.UserError(f"--section_budgets wants name=seconds, got {fv.section_budgets}")
    budgets = dict(item.split("=", 1) for item in fv.section_budgets)
    unknown = (set(fv.sections) | set(budgets)) - set(SECTIONS[1:-1])
    if unknown:
        raise cli.UserError(f"unknown section(s) {sorted(unknown)}: use {SECTIONS[1:-1]}")
    if fv.tiny:  # this process's own steps too: the backend has not started yet
        os.environ["XLA_FLAGS"] = child_xla_flags(True)
    run(fv.json, fv.tiny, fv.budget_s, [int(x) for x in fv.batch_sizes or []] or None,
        fv.sections, fv.workdir, {k: float(v) for k, v in budgets.items()})


if __name__ == "__main__":
    define_flags()
    cli.run(main)
