"""Several runs of one config (config.num_runs): each run's headline scores, their mean, sample
std, min and max (workdir/results.json), a table (results.txt) and the printed summary line."""

from __future__ import annotations

import pathlib

from sedjax.reporting.summary import HEADLINE, RunResults, headline, summarize

SPREAD = ("mean", "std", "min", "max")


def spread(values: list) -> dict:
    """{mean, std (sample), min, max} of the defined values (summary.summarize); std None
    where one run leaves it undefined."""
    out = summarize(values)
    if sum(v is not None for v in values) < 2:
        out["std"] = None
    return out


def summary(recipe: str, dirs: list, results: list[RunResults], scored: list, timings: dict,
            devices: int) -> dict:
    """workdir/results.json of several runs: each run's seed, folder, headline scores and
    training summary; mean, sample std, min and max of every headline score per split."""
    runs = []
    for d, r in zip(dirs, results):
        training = {k: v for k, v in r.training.to_json().items() if k not in ("recipe", "seed")}
        runs.append({"seed": r.training.seed, "dir": d.name,
                     **{name: headline(r.splits[name]) for name in scored},
                     "postprocess": r.postprocess, **training})
    out = {"recipe": recipe, "num_runs": len(runs), "seeds": [r["seed"] for r in runs],
           "runs": runs, **{key: {name: {} for name in scored} for key in SPREAD}}
    for name in scored:
        for metric in HEADLINE:
            for key, value in spread([r[name][metric] for r in runs]).items():
                out[key][name][metric] = value
    return {**out, "timings": timings, "devices": devices}


def format_table(summary: dict, scored: list) -> str:
    """A plain-text table of several runs: one line per run and split, then mean ± std."""
    columns = (("event F1 %", "event_f1", 100, ".2f"), ("segment F1 %", "segment_f1", 100, ".2f"),
               ("PSDS1", "psds1", 1, ".3f"), ("PSDS2", "psds2", 1, ".3f"))
    lines = [f"{'split':<6} {'run':<12}" + "".join(f" {c[0]:>15}" for c in columns)]
    for name in scored:
        for r in summary["runs"]:
            lines.append(f"{name:<6} {'seed ' + str(r['seed']):<12}" + "".join(
                f" {_pm(r[name][key], None, scale, spec):>15}" for _, key, scale, spec in columns))
        m, sd = summary["mean"][name], summary["std"][name]
        lines.append(f"{name:<6} {'mean ± std':<12}" + "".join(
            f" {_pm(m[key], sd[key], scale, spec):>15}" for _, key, scale, spec in columns))
    return "\n".join(lines)


def _pm(mean, std, scale: float, spec: str) -> str:
    if mean is None:
        return "n/a"
    return format(scale * mean, spec) + ("" if std is None else " ± " + format(scale * std, spec))


def validation_line(summary: dict, clips: int) -> str:
    """The printed validation summary of several runs: mean ± std of event F1, PSDS1, PSDS2."""
    m, sd = summary["mean"]["validation"], summary["std"]["validation"]
    f1 = _pm(m["event_f1"], sd["event_f1"], 100, ".2f")
    return (f"validation: event-based macro F1 mean {f1} %  PSDS1 {_pm(m['psds1'], sd['psds1'], 1, '.3f')}  PSDS2 "
            f"{_pm(m['psds2'], sd['psds2'], 1, '.3f')}  ({clips} clips, {summary['num_runs']} "
            f"runs; every choice of each run was made on it)")


def f1_line(summary: dict, clips: int, workdir: pathlib.Path) -> str:
    """The printed summary: each seed's test event F1, mean ± std of event and segment F1."""
    test = [r["test"] for r in summary["runs"]]
    per_seed = ", ".join(f"seed {r['seed']} {100 * t['event_f1']:.2f}"
                         for r, t in zip(summary["runs"], test) if t["event_f1"] is not None)
    m, sd = summary["mean"]["test"], summary["std"]["test"]
    lo, hi = summary["min"]["test"]["event_f1"], summary["max"]["test"]["event_f1"]
    span = "" if lo is None else f" ({100 * lo:.2f}-{100 * hi:.2f})"
    return (f"event-based macro F1 % per seed: {per_seed}; mean "
            f"{_pm(m['event_f1'], sd['event_f1'], 100, '.2f')}{span} %  segment-based F1 mean "
            f"{_pm(m['segment_f1'], sd['segment_f1'], 100, '.2f')} %  (test, {clips} clips, "
            f"{summary['num_runs']} runs)  -> {workdir / 'results.json'}")
