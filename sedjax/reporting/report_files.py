"""A finished program's reports: training.json, each run's results files and plots, the printout.

One run (K = 1) writes everything into the workdir and prints its test table; K runs write one
run's files into each workdir/run{k}/ (laid out as a single run's workdir) and the K-run
summary (sedjax.reporting.run_tables) into the workdir.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

from sedjax.metrics import psds, sed_eval_scores
from sedjax.reporting import outputs, run_tables
from sedjax.reporting.summary import RunResults, TrainingSummary
from sedjax.system import files

TRAINING = "training.json"  # written once the recipe's model predicted every scored split


def write_training(workdir: pathlib.Path, dirs: list, summaries: list[TrainingSummary],
                   configs: list) -> None:
    """training.json (and, for K runs, each run folder's config.json and training.json)."""
    if len(dirs) == 1:
        outputs.write_json(workdir / TRAINING, summaries[0].to_json())
        return
    for d, c, s in zip(dirs, configs, summaries):  # each run folder reads as a single run's
        files.write_text(d / "config.json", c.to_json_best_effort(indent=2))
        outputs.write_json(d / TRAINING, s.to_json())
    outputs.write_json(workdir / TRAINING, {"recipe": summaries[0].recipe,
                                            "num_runs": len(dirs),
                                            "runs": [s.to_json() for s in summaries]})


def read_training(workdir: pathlib.Path, count: int, stages: Sequence[str]
                  ) -> list[TrainingSummary] | None:
    """The runs' training summaries of an earlier program, or None when it did not finish."""
    data = outputs.read_json(workdir / TRAINING)
    if data is None:
        return None
    per_run = [data] if count == 1 else data["runs"]
    return [TrainingSummary.from_json(r, stages) for r in per_run]


def report(workdir: pathlib.Path, dirs: list, results: list[RunResults], curves: list,
           clips: dict) -> dict:
    """Writes every run's reports and the K-run summary; prints the results; returns what
    workdir/results.json holds. clips: {split: number of clips}."""
    tables = [report_run(d, r, c) for d, r, c in zip(dirs, results, curves)]
    if len(dirs) == 1:
        r = results[0]
        print(tables[0])
        if "validation" in r.splits:
            print(validation_line(r.splits["validation"], clips["validation"]))
        print(f1_line(r.splits["test"], clips["test"], workdir))
        return r.to_json()
    scored = list(results[0].splits)
    summary = run_tables.summary(results[0].training.recipe, dirs, results, scored,
                                 results[0].timings, results[0].devices)
    outputs.write_results(workdir, summary)
    text = run_tables.format_table(summary, scored)
    files.write_text(workdir / "results.txt", text + "\n")
    print(text)
    if "validation" in scored:
        print(run_tables.validation_line(summary, clips["validation"]))
    print(run_tables.f1_line(summary, clips["test"], workdir))
    return summary


def final_timings(workdir: pathlib.Path, summary: dict, timings: dict) -> dict:
    """`summary` (what workdir/results.json holds) with the run's finished timings, which
    replace those in workdir/results.json and, for K runs, in each run folder's."""
    summary = {**summary, "timings": timings}
    outputs.write_results(workdir, summary)
    for run in summary.get("runs", []) if "num_runs" in summary else []:
        path = workdir / run["dir"] / outputs.RESULTS_FILENAME
        data = outputs.read_json(path)
        if data is not None:
            outputs.write_results(path.parent, {**data, "timings": timings})
    return summary


def report_run(run_dir: pathlib.Path, results: RunResults, curves: dict) -> str:
    """Writes one run's results.json, results.txt and score plots; returns the test table."""
    test = results.splits["test"]
    outputs.write_results(run_dir, results.to_json())
    table = (sed_eval_scores.format_table(test) + "\n\n"
             + psds.format_lines(test["threshold_independent"]))
    files.write_text(run_dir / "results.txt", table + "\n")
    outputs.optional("class_scores.png", lambda: outputs.plot_class_scores(
        test, run_dir / "class_scores.png"))
    if curves["test"]:
        outputs.optional("psd_roc.png", lambda: outputs.plot_psd_roc(
            curves["test"], run_dir / "psd_roc.png", test["threshold_independent"]))
    return table


def validation_line(val: dict, clips: int) -> str:
    """The printed validation summary of one run."""
    ti, f1 = val.get("threshold_independent", {}), val["event_based"]["f_measure_macro"]

    def num(x, scale=1.0, spec=".3f"):
        return "n/a" if x is None else format(scale * x, spec)
    return (f"validation: event-based macro F1 {num(f1, 100, '.2f')} %  PSDS1 "
            f"{num(ti.get('psds1'))}  PSDS2 {num(ti.get('psds2'))}  best collar F1 "
            f"{num(ti.get('collar_f1_best_macro'), 100, '.2f')} %  ({clips} clips; every "
            f"choice of the run was made on it)")


def f1_line(test: dict, clips: int, workdir: pathlib.Path) -> str:
    """The printed test summary of one run."""
    ev = test["event_based"]
    er = ev["error_rate_macro"]
    er = (f"{er:.3f}" if sed_eval_scores.error_rate_is_defined(er) else
          f"{er:.0e} (sed_eval's ER of a class without reference events)")
    return (f"event-based macro F1 {100 * ev['f_measure_macro']:.2f} %  ER {er}  (test, "
            f"{clips} clips)  -> {workdir / 'results.json'}")
