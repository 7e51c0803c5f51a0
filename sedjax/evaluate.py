"""Scores an estimated event CSV against a reference CSV: `python -m sedjax.evaluate REF EST`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from absl import logging

from sedjax import configfile, evaluation, postprocess, report

EXIT_BAD_INPUT = 2


class BadInput(Exception):
    """An input file or argument the scorer cannot use."""


def _parser() -> argparse.ArgumentParser:
    """Returns the command-line parser."""
    p = argparse.ArgumentParser(
        prog="python -m sedjax.evaluate",
        description="DCASE2018 Task 4 event-based (and segment-based) scores via sed_eval.",
    )
    p.add_argument("reference",
                   help="reference events CSV (DCASE format, e.g. metadata/test/test.csv)")
    p.add_argument("estimated", help="estimated events CSV (same format)")
    p.add_argument("--json", default=None, help="write the results dict to this JSON file")
    p.add_argument("--config", default=str(configfile.default_path("baseline")),
                   help="ml_collections config file whose data.classes and evaluation section "
                        "are used (default: %(default)s)")
    p.add_argument("--classes", default=None,
                   help="comma-separated class labels (default: the config's data.classes)")
    p.add_argument("--t_collar", type=float, default=None,
                   help="onset collar, seconds (default: the config's evaluation.t_collar)")
    p.add_argument("--percentage_of_length", type=float, default=None,
                   help="offset collar as a fraction of the reference length (max with t_collar;"
                        " default: the config's evaluation.percentage_of_length)")
    p.add_argument("--segment_seconds", type=float, default=None,
                   help="segment length of the segment-based metric, seconds (default: the "
                        "config's evaluation.segment_seconds)")
    return p


def _classes_and_settings(args: argparse.Namespace) -> tuple[list[str], str, dict]:
    """Returns (classes, where they come from, evaluation settings): the config, then options."""
    try:
        config = configfile.load(args.config)
    except configfile.ConfigFileError as e:
        raise BadInput(str(e)) from None
    if args.classes is not None:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        if not classes:
            raise BadInput("--classes is empty")
        source = "--classes"
    else:
        try:
            classes = [str(c) for c in config.data.classes]
        except (AttributeError, KeyError, TypeError):
            raise BadInput(f"config file {args.config} has no data.classes "
                           "(give the class list with --classes)") from None
        if not classes:
            raise BadInput(f"data.classes of config file {args.config} is empty")
        source = f"data.classes of {args.config}"
    try:
        settings = evaluation.evaluation_settings(config.evaluation)
    except (AttributeError, KeyError):
        raise BadInput(f"config file {args.config} has no evaluation section") from None
    except ValueError as e:
        raise BadInput(f"config file {args.config}: {e}") from None
    for key in ("t_collar", "percentage_of_length", "segment_seconds"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return classes, source, settings


def _read(path: str, what: str) -> tuple[list[dict], list[str]]:
    """Reads an event CSV, turning every failure into BadInput naming the file."""
    try:
        return postprocess.read_events_csv(path)
    except FileNotFoundError:
        raise BadInput(f"{what} file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read {what} file {path}: {e}") from None
    except ValueError as e:  # already names file and line
        raise BadInput(f"bad {what} file: {e}") from None


def score(args: argparse.Namespace) -> dict:
    """Reads both CSVs, checks them against each other and returns evaluate_events' dict."""
    classes, source, config = _classes_and_settings(args)
    ref_events, ref_files = _read(args.reference, "reference")
    est_events, est_files = _read(args.estimated, "estimated")
    known = set(ref_files)
    # Files only in the estimate would be silently unscored; that is almost always a mix-up of
    # sets (e.g. eval predictions scored against test labels), so refuse.
    unknown = [f for f in est_files if f not in known]
    if unknown:
        shown = ", ".join(unknown[:10])
        if len(unknown) > 10:
            shown += f" ... ({len(unknown)} in all)"
        raise BadInput(f"{args.estimated} lists files that are not in {args.reference}: {shown}")
    for path, events in ((args.reference, ref_events), (args.estimated, est_events)):
        bad = sorted({e["event_label"] for e in events} - set(classes))
        if bad:
            raise BadInput(f"{path}: event labels not in {source}: {', '.join(bad)}")
    try:
        # Reference files absent from the estimate are scored as files with no estimated events.
        return evaluation.evaluate_events(ref_events, est_events, ref_files, classes, config)
    except ValueError as e:  # e.g. sed_eval rejecting a collar value
        raise BadInput(str(e)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the scorer; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        results = score(args)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(evaluation.format_table(results))
    if args.json:
        report.write_json(args.json, results)
        logging.info("Wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
