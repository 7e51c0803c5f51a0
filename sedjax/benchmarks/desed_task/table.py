"""side_by_side.json (every run's figures; written atomically after each run) and the markdown
table made from it (no torch, no jax)."""

from __future__ import annotations

import json
import math
import pathlib
import statistics
from typing import Any

from sedjax.system import files

FILENAME = "side_by_side.json"
SYSTEMS = ("sedjax", "desed_task")
COLUMNS = ("system", "PSDS1", "PSDS2", "best collar F1", "s/epoch", "total s", "peak RSS MB")


def key(system: str, seed: int) -> str:
    return f"{system}/{seed}"


def read(workdir: pathlib.Path) -> dict | None:
    path = pathlib.Path(workdir) / FILENAME
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write(workdir: pathlib.Path, state: dict) -> pathlib.Path:
    path = pathlib.Path(workdir) / FILENAME
    files.write_text(path, json.dumps(state, indent=1, allow_nan=False) + "\n")
    return path


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def mean_std(values: list[float]) -> tuple[float, float] | None:
    """(mean, sample std; 0 for one value) of the finite values, None without any."""
    values = [float(v) for v in values if _finite(v)]
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def cell(values: list[float], digits: int, scale: float = 1.0, unit: str = "") -> str:
    found = mean_std(values)
    if found is None:
        return "-"
    m, s = found
    n = sum(_finite(v) for v in values)
    text = f"{m * scale:.{digits}f}"
    return (text + f" ± {s * scale:.{digits}f}" if n > 1 else text) + unit


def epoch_seconds(run: dict) -> float | None:
    """A run's seconds per epoch: the median of its epochs' (training + validation), so that an
    epoch slowed by other work on the machine does not move it; its mean when the epochs were
    not kept."""
    epochs = [s for s in run.get("epoch_s") or [] if _finite(s)]
    return statistics.median(epochs) if epochs else run.get("s_per_epoch")


def rows(state: dict) -> list[dict[str, Any]]:
    """One row per system (and DESED_task's other model), values per seed."""
    runs = [r for r in state.get("runs", {}).values() if r.get("status") == "done"]
    out = []
    for system in SYSTEMS:
        done = sorted((r for r in runs if r["system"] == system), key=lambda r: r["seed"])
        if not done:
            continue
        models = [done[0]["headline"]]
        if system == "desed_task":
            models += [m for m in ("student", "teacher") if m != models[0]]
        for i, model in enumerate(models):
            scores = [r["scores"].get(model) or {} for r in done]
            out.append({
                "system": f"{'DESED_task' if system == 'desed_task' else 'sedjax'} ({model})",
                "seeds": [r["seed"] for r in done],
                "psds1": [s.get("psds1") for s in scores],
                "psds2": [s.get("psds2") for s in scores],
                "collar_f1": [s.get("collar_f1") for s in scores],
                "num_clips": sorted({s.get("num_clips") for s in scores if s}),
                "s_per_epoch": [epoch_seconds(r) for r in done] if i == 0 else None,
                "total_s": [r.get("wall_s") for r in done] if i == 0 else None,
                "peak_rss_mb": [r.get("peak_rss_mb") for r in done] if i == 0 else None,
            })
    return out


def speed_ratios(state: dict) -> dict[str, list[float]]:
    """Per seed with both systems done: DESED_task's seconds over sedjax's (per epoch, per epoch
    after the first, in all)."""
    runs = state.get("runs", {})
    out: dict[str, list[float]] = {"per_epoch": [], "per_epoch_after_first": [], "total": []}
    for seed in sorted({r["seed"] for r in runs.values()}):
        a, b = runs.get(key("sedjax", seed)), runs.get(key("desed_task", seed))
        if not (a and b and a.get("status") == b.get("status") == "done"):
            continue
        a, b = (dict(r, s_per_epoch=epoch_seconds(r)) for r in (a, b))
        for name, field in (("per_epoch", "s_per_epoch"),
                            ("per_epoch_after_first", "s_per_epoch_after_first"),
                            ("total", "wall_s")):
            if _finite(a.get(field)) and _finite(b.get(field)) and a[field] > 0:
                out[name].append(b[field] / a[field])
    return out


def markdown(state: dict) -> str:
    """The table (mean ± sample std over seeds) and the lines under it."""
    table = rows(state)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in table:
        same = "(same run)"
        lines.append("| " + " | ".join([
            r["system"], cell(r["psds1"], 3), cell(r["psds2"], 3),
            cell(r["collar_f1"], 1, 100.0, " %"),
            cell(r["s_per_epoch"], 1) if r["s_per_epoch"] is not None else same,
            cell(r["total_s"], 0) if r["total_s"] is not None else same,
            cell(r["peak_rss_mb"], 0) if r["peak_rss_mb"] is not None else same]) + " |")
    if not table:
        return "no finished runs yet"
    seeds = sorted({s for r in table for s in r["seeds"]})
    clips = sorted({n for r in table for n in r["num_clips"]})
    data = state.get("data", {})
    notes = [f"seeds {', '.join(map(str, seeds))}; scored on the {'/'.join(map(str, clips))} "
             f"test clips with events ({data.get('test_source', '?')}), each system's scores "
             "median-filtered by its own post-processing, one sed_scores_eval code path "
             "(sedjax.metrics.psds)"]
    ratios = speed_ratios(state)
    if ratios["per_epoch"]:
        after = (f" (after the first epoch, which holds sedjax's compilation: "
                 f"{cell(ratios['per_epoch_after_first'], 2)}x)"
                 if ratios["per_epoch_after_first"] else "")
        notes.append(f"speed: DESED_task's s/epoch over sedjax's: "
                     f"{cell(ratios['per_epoch'], 2)}x{after}; in all: "
                     f"{cell(ratios['total'], 2)}x")
    notes.append("s/epoch: training + validation of one epoch (checkpoint writing left out), "
                 "the median over epochs; total s: the "
                 "whole process (data, features, training, test), as the harness timed it; "
                 "peak RSS: the training process's ru_maxrss")
    return "\n".join(lines + [""] + notes)
