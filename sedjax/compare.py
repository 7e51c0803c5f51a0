"""Compares finished runs (e.g. one system over several seeds): mean and spread of their scores.

    python -m sedjax.compare mean=runs/mean_s* linear_softmax=runs/lsp_s* [--split test]
        [--json table.json]

Each argument is LABEL=WORKDIR_GLOB; every matched workdir must hold a results.json. Prints per
label: the number of runs, event- and segment-based macro F1 (mean, sample std, min-max) and
each run's figures, so that a difference can be read against the seed-to-seed spread.
"""

from __future__ import annotations

import glob
import json
import pathlib
from collections.abc import Sequence

from absl import flags

from sedjax.reporting import outputs, summary
from sedjax.system import cli

PERCENT = ("event_f1", "segment_f1", "collar_f1_best")  # headline scores given in %

FLAGS = flags.FlagValues()  # this command's own: importing it never clashes with another's
flags.DEFINE_string("split", "test", "Results section (test, eval, validation).",
                    flag_values=FLAGS)
flags.DEFINE_string("json", None, "Also write the table as JSON here.", flag_values=FLAGS)


def read_run(workdir: pathlib.Path, split: str) -> dict:
    """{'workdir', and every headline score (reporting.summary.HEADLINE; F1s in %)} of one
    finished run."""
    path = workdir / outputs.RESULTS_FILENAME
    if not path.is_file():
        raise cli.UserError(f"{path}: not found (the run did not finish)")
    try:
        results = json.loads(path.read_text())[split]
    except (ValueError, KeyError) as e:
        raise cli.UserError(f"{path}: no readable {split!r} results ({e})") from None
    out = {"workdir": str(workdir)}
    for name, value in summary.headline(results).items():
        out[name] = None if value is None else (100.0 * value if name in PERCENT else value)
    return out


def compare(groups: dict[str, Sequence[pathlib.Path]], split: str = "test") -> dict:
    """{label: {'runs': [...], and per headline score its mean, std, min and max}}."""
    table = {}
    for label, workdirs in groups.items():
        runs = [read_run(w, split) for w in workdirs]
        table[label] = {"runs": runs, **{m: summary.summarize([r[m] for r in runs])
                                         for m in summary.HEADLINE}}
    return table


def format_table(table: dict) -> str:
    """A plain-text table, one line per label, then one per run."""
    def cell(s):
        return "n/a" if s["mean"] is None else (
            f"{s['mean']:5.1f} ± {s['std']:4.1f} ({s['min']:.1f}-{s['max']:.1f})")
    lines = [f"{'system':<24} {'runs':>4}  {'event F1 % mean ± std (min-max)':<30}  "
             f"{'segment F1 % mean ± std (min-max)':<30}"]
    for label, row in table.items():
        lines.append(f"{label:<24} {len(row['runs']):>4}  {cell(row['event_f1']):<30}  "
                     f"{cell(row['segment_f1']):<30}")
    for label, row in table.items():
        for r in row["runs"]:
            lines.append(f"  {label:<22} event {r['event_f1']:5.1f}  segment "
                         f"{r['segment_f1']:5.1f}  {r['workdir']}")
    return "\n".join(lines)


def _groups(specs: Sequence[str]) -> dict[str, list[pathlib.Path]]:
    """{label: matched run folders} of LABEL=WORKDIR_GLOB arguments."""
    if not specs:
        raise cli.UserError("give at least one LABEL=WORKDIR_GLOB")
    groups: dict[str, list[pathlib.Path]] = {}
    for spec in specs:
        label, sep, pattern = spec.partition("=")
        if not sep or not label or not pattern:
            raise cli.UserError(f"{spec!r}: expected LABEL=WORKDIR_GLOB")
        matched = sorted(pathlib.Path(p) for p in glob.glob(pattern) if pathlib.Path(p).is_dir())
        if not matched:
            raise cli.UserError(f"{label}: no run folder matches {pattern!r}")
        groups.setdefault(label, []).extend(matched)
    return groups


def _compare(argv: list[str]) -> int:
    """The command: argv[1:] are the LABEL=WORKDIR_GLOB groups."""
    table = compare(_groups(argv[1:]), FLAGS.split)
    return outputs.print_and_write(format_table(table), table, FLAGS.json)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sedjax.compare ARGS` in this process (argv: ARGS, default the command
    line's); returns the exit status: 0, or 2 after one `error:` line."""
    return cli.call(_compare, FLAGS, argv)


if __name__ == "__main__":
    cli.run(_compare, FLAGS)
