"""Where detected events start and end against the reference: the onset statistics of runs.

    python -m sedjax.onsets WORKDIR [WORKDIR ...] [--split test] [--json onsets.json]
    python -m sedjax.onsets --reference REF.csv --estimated EST.csv

For each run: the share of detected and of reference events that start in the first 0.2 s of a
clip (a weakly trained model that only tags clips starts its events at 0), and, matching each
detected event to the reference event of the same clip and class with the nearest onset, the
median onset and offset error (detected - reference, seconds), the median absolute onset error
and the share of onsets inside the metric's 200 ms collar.
"""

from __future__ import annotations

import json
import pathlib
import statistics
from collections import defaultdict
from collections.abc import Sequence

from absl import flags

from sedjax.data import event_files
from sedjax.reporting import outputs
from sedjax.system import cli

EARLY_SECONDS = 0.2
COLLAR_SECONDS = 0.2

FLAGS = flags.FlagValues()  # this command's own: importing it never clashes with another's
flags.DEFINE_enum("split", "test", ["test", "eval"], "Which predictions of the run folders.",
                  flag_values=FLAGS)
flags.DEFINE_string("reference", None, "Reference CSV (instead of run folders).",
                    flag_values=FLAGS)
flags.DEFINE_string("estimated", None, "Estimated CSV (with --reference).", flag_values=FLAGS)
flags.DEFINE_string("json", None, "Also write the figures as JSON here.", flag_values=FLAGS)


def onset_statistics(reference: Sequence[dict], estimated: Sequence[dict]) -> dict:
    """The statistics of the module docstring from two event lists (DCASE event dicts)."""
    def early(events):
        return (sum(e["onset"] < EARLY_SECONDS for e in events) / len(events)) if events else None

    refs = defaultdict(list)
    for e in reference:
        refs[(e["filename"], e["event_label"])].append(e)
    onset_err, offset_err = [], []
    for e in estimated:
        candidates = refs.get((e["filename"], e["event_label"]))
        if not candidates:
            continue  # a false alarm of that class in that clip: no onset to compare
        ref = min(candidates, key=lambda r: abs(r["onset"] - e["onset"]))
        onset_err.append(e["onset"] - ref["onset"])
        offset_err.append(e["offset"] - ref["offset"])

    def median(values):
        return statistics.median(values) if values else None

    return {
        "detected_events": len(estimated), "reference_events": len(reference),
        "detected_starting_in_first_0.2s": early(estimated),
        "reference_starting_in_first_0.2s": early(reference),
        "matched_events": len(onset_err),
        "median_onset_error_s": median(onset_err),
        "median_abs_onset_error_s": median([abs(x) for x in onset_err]),
        "onsets_inside_collar": (sum(abs(x) <= COLLAR_SECONDS for x in onset_err) / len(onset_err)
                                 if onset_err else None),
        "median_offset_error_s": median(offset_err),
    }


def _read(path) -> list[dict]:
    """The events of an events file (EventFileError, a user error, names file and line)."""
    return event_files.read_events(path)[0]


def reference_of(workdir: pathlib.Path, split: str) -> pathlib.Path:
    """The run's reference CSV: its generated dataset, else the data.root of its config.json."""
    rel = {"test": "metadata/test/test.csv", "eval": "metadata/eval/eval.csv"}[split]
    generated = workdir / "synthetic" / rel
    if generated.is_file():
        return generated
    try:
        config = json.loads((workdir / "config.json").read_text())
        return pathlib.Path(config["data"]["root"]).expanduser() / rel
    except (OSError, ValueError, KeyError):
        raise cli.UserError(f"{workdir}: no synthetic/{rel} and no readable config.json "
                       "naming data.root") from None


def run_statistics(workdir: pathlib.Path, split: str = "test") -> dict:
    """onset_statistics of one finished run."""
    estimated = workdir / "predictions" / f"{split}_events.csv"
    if not estimated.is_file():
        raise cli.UserError(f"{estimated}: not found (the run did not finish)")
    return onset_statistics(_read(reference_of(workdir, split)), _read(estimated))


def _fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def format_rows(rows: dict) -> str:
    """One line per run."""
    lines = [f"{'run':<40} {'det<0.2s':>8} {'ref<0.2s':>8} {'onset err':>9} {'|onset|':>8} "
             f"{'in collar':>9} {'offset err':>10} {'matched':>7}"]
    for name, s in rows.items():
        lines.append(
            f"{name[-40:]:<40} {_fmt(s['detected_starting_in_first_0.2s'], '8.0%')} "
            f"{_fmt(s['reference_starting_in_first_0.2s'], '8.0%')} "
            f"{_fmt(s['median_onset_error_s'], '+9.2f')} "
            f"{_fmt(s['median_abs_onset_error_s'], '8.2f')} "
            f"{_fmt(s['onsets_inside_collar'], '9.0%')} "
            f"{_fmt(s['median_offset_error_s'], '+10.2f')} {s['matched_events']:>7}")
    return "\n".join(lines)


def _onsets(argv: list[str]) -> int:
    """The command: argv[1:] are run folders (or none, with --reference and --estimated)."""
    workdirs = argv[1:]
    if FLAGS.reference or FLAGS.estimated:
        if not (FLAGS.reference and FLAGS.estimated) or workdirs:
            raise cli.UserError("give --reference and --estimated together, without run folders")
        rows = {FLAGS.estimated: onset_statistics(_read(FLAGS.reference), _read(FLAGS.estimated))}
    elif workdirs:
        rows = {w: run_statistics(pathlib.Path(w), FLAGS.split) for w in workdirs}
    else:
        raise cli.UserError("give run folders, or --reference and --estimated")
    return outputs.print_and_write(format_rows(rows), rows, FLAGS.json)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sedjax.onsets ARGS` in this process (argv: ARGS, default the command
    line's); returns the exit status: 0, or 2 after one `error:` line."""
    return cli.call(_onsets, FLAGS, argv)


if __name__ == "__main__":
    cli.run(_onsets, FLAGS)
