"""The device check's run and report (python -m sedjax.device_check, whose help lists the
sections): each section in order within its share of the time budget, its failure recorded
without stopping the others, the JSON rewritten after every section, and the one table."""

from __future__ import annotations

import json
import tempfile
import time
import traceback
from typing import Callable, Sequence

from sedjax.benchmarks import device_pipeline, device_sections, environment
from sedjax.benchmarks.output import fmt, say
from sedjax.system import files

SECTIONS = ("environment", "train_step", "runs_per_program", "logmel", "beats", "pipeline",
            "memory")


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
        lines.append(f" {section:<18} {what:<44} {fmt(value, spec):>12}  {unit}")
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
                        f"({fmt(row['gflops_per_device'])} GFLOP/s per device)")
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
    sizes = device_sections.TINY if tiny else device_sections.FULL
    budget_s = budget_s or (270.0 if tiny else 480.0)
    batch_sizes = list(batch_sizes or sizes.batch_sizes)
    report = Report(json_path, tiny, budget_s)
    env = environment.environment()
    report.data["environment"] = env
    report.data["xla_flags"] = device_pipeline.child_xla_flags(tiny)
    report.data["sections"]["environment"] = {"status": "ok", "results": env, "wall_s": 0.0}
    say(f"== environment: {env['device_count']} x {env['device_kind']} ({env['backend']}), "
        f"jax {env['versions']['jax']}, {env['cpu_count']} CPUs")
    report.write()
    b = {**sizes.budgets_s, **(section_budgets or {})}
    chosen = {
        "train_step": lambda d: device_sections.train_section(sizes, batch_sizes, d),
        "runs_per_program": lambda d: device_sections.runs_section(
            sizes, d, report.data["sections"].get("train_step", {}).get("results")),
        "logmel": lambda d: device_sections.logmel_section(sizes, d),
        "beats": lambda d: device_sections.beats_section(sizes, d),
    }
    for name, fn in chosen.items():
        if name in sections:
            report.section(name, b[name], fn)
    if "pipeline" in sections:
        with tempfile.TemporaryDirectory(prefix="sedjax-device-check-") as tmp:
            report.section("pipeline", b["pipeline"],
                           lambda d: device_pipeline.pipeline_section(sizes, workdir or tmp, d))
    report.deadline = float("inf")  # the memory section always runs (it costs nothing)
    report.section("memory", 1e9, lambda d: environment.peak_memory())
    say(table(report.data))
    say(f"-> {json_path}")
    return report.data
