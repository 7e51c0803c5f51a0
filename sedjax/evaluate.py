"""Scores estimated events and/or frame probabilities against a reference CSV.

    python -m sedjax.evaluate REFERENCE.csv ESTIMATED.csv          # event/segment-based (sed_eval)
    python -m sedjax.evaluate REFERENCE.csv [ESTIMATED.csv] --probs PROBS.npy [--frame_seconds S]
        [--probs_order FILES.csv] [--durations DURATIONS.tsv] [--median_filter K]
                                                                   # + PSDS1/PSDS2/best collar F1

--probs is an (N, T, C) .npy of frame probabilities (a run's predictions/<split>_probs.npy);
its rows are the files of --probs_order (any DCASE event CSV, filenames in order of first
appearance; default REFERENCE.csv itself). For a sedjax run pass
`--probs_order <workdir>/predictions/<split>_events.csv`: it lists every predicted clip in the
order of the probabilities (clips whose audio was missing are not in the probabilities).
Reference files without a row are left out of these scores (with a warning). The probabilities
are median-filtered first as the config's post-processing does (--median_filter 1: raw).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from absl import logging

from sedjax.config import config_files
from sedjax.metrics import postprocess, sed_eval_scores
from sedjax.reporting import outputs

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
    p.add_argument("estimated", nargs="?", default=None,
                   help="estimated events CSV (same format); optional when --probs is given")
    p.add_argument("--json", default=None, help="write the results dict to this JSON file")
    p.add_argument("--config", default=str(config_files.default_path("baseline")),
                   help="ml_collections config file whose data.classes and evaluation section "
                        "are used (default: %(default)s)")
    p.add_argument("--classes", default=None,
                   help="comma-separated class labels (default: the config's data.classes)")
    p.add_argument("--t_collar", type=float, default=None,
                   help="onset collar, seconds (default: the config's sed_eval_scores.t_collar)")
    p.add_argument("--percentage_of_length", type=float, default=None,
                   help="offset collar as a fraction of the reference length (max with t_collar;"
                        " default: the config's sed_eval_scores.percentage_of_length)")
    p.add_argument("--segment_seconds", type=float, default=None,
                   help="segment length of the segment-based metric, seconds (default: the "
                        "config's sed_eval_scores.segment_seconds)")
    g = p.add_argument_group(
        "threshold-independent scores (sed_scores_eval: PSDS1, PSDS2, best collar-based F1)")
    g.add_argument("--probs", default=None,
                   help="(N, T, C) .npy of frame probabilities, e.g. "
                        "<workdir>/predictions/test_probs.npy; C follows the class list")
    g.add_argument("--frame_seconds", type=float, default=None,
                   help="seconds per frame of --probs (default: the config's features.hop_length"
                        " x the model's time pooling / features.sample_rate)")
    g.add_argument("--probs_order", default=None,
                   help="DCASE event CSV whose filenames, in order of first appearance, are the"
                        " rows of --probs (default: the reference CSV; for a sedjax run: "
                        "<workdir>/predictions/<split>_events.csv)")
    g.add_argument("--durations", default=None,
                   help="tab-separated file with header 'filename<TAB>duration' (seconds; "
                        "sed_scores_eval's format); default: T x frame_seconds for every clip")
    g.add_argument("--median_filter", default=None,
                   help="median filter over the probabilities before scoring, frames: one, or "
                        "comma-separated one per class; 1: none (default: the config's "
                        "postprocess.median_filter, as a run scores)")
    g.add_argument("--curves", default=None,
                   help="write the PSD-ROC curves (numpy arrays) to this .npz")
    return p


def _load_config(args: argparse.Namespace):
    """The --config file's ConfigDict, run once per command and kept on `args`."""
    if getattr(args, "loaded_config", None) is None:
        try:
            args.loaded_config = config_files.load(args.config)
        except config_files.ConfigFileError as e:
            raise BadInput(str(e)) from None
    return args.loaded_config


def _classes_and_settings(args: argparse.Namespace) -> tuple[list[str], str, dict]:
    """Returns (classes, where they come from, evaluation settings): the config, then options."""
    config = _load_config(args)
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
        settings = sed_eval_scores.evaluation_settings(config.evaluation)
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


def _check_subset(path: str, names: Sequence[str], reference: str, known: set) -> None:
    """BadInput when `path` lists files that are not in the reference."""
    unknown = [f for f in names if f not in known]
    if unknown:
        shown = ", ".join(unknown[:10])
        if len(unknown) > 10:
            shown += f" ... ({len(unknown)} in all)"
        raise BadInput(f"{path} lists files that are not in {reference}: {shown}")


def _read_durations(path: str) -> dict[str, float]:
    """Reads a 'filename<TAB>duration' file (with that header) into {filename: seconds}."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
    except FileNotFoundError:
        raise BadInput(f"durations file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read durations file {path}: {e}") from None
    header = [c.strip() for c in lines[0].split("\t")] if lines else []
    if "filename" not in header or "duration" not in header:
        raise BadInput(f"{path}:1: expected a header with columns 'filename' and 'duration'")
    i_name, i_dur = header.index("filename"), header.index("duration")
    durations = {}
    for lineno, line in enumerate(lines[1:], start=2):
        fields = [c.strip() for c in line.split("\t")]
        try:
            durations[fields[i_name]] = float(fields[i_dur])
        except (IndexError, ValueError):
            raise BadInput(f"{path}:{lineno}: expected a filename and a duration in seconds") \
                from None
    return durations


def _frame_seconds(args: argparse.Namespace) -> float:
    """--frame_seconds, or the config's output frame length."""
    if args.frame_seconds is not None:
        if not args.frame_seconds > 0:
            raise BadInput(f"--frame_seconds must be > 0, got {args.frame_seconds}")
        return float(args.frame_seconds)
    config = _load_config(args)
    try:
        from sedjax.models import crnn
        return float(crnn.frame_seconds(config))
    except (AttributeError, KeyError, TypeError, ValueError):
        raise BadInput(f"config file {args.config} gives no frame length (features.hop_length,"
                       " features.sample_rate, model.pool_sizes); give --frame_seconds") from None


def _median_filter(args: argparse.Namespace, num_classes: int) -> int | list[int]:
    """--median_filter, or the config's postprocess.median_filter."""
    if args.median_filter is not None:
        try:
            sizes = [int(x) for x in str(args.median_filter).split(",") if x.strip()]
        except ValueError:
            raise BadInput(f"--median_filter must be frames (integers), got "
                           f"{args.median_filter!r}") from None
        source = "--median_filter"
    else:
        try:
            value = _load_config(args).postprocess.median_filter
        except (AttributeError, KeyError):
            raise BadInput(f"config file {args.config} has no postprocess.median_filter "
                           "(give --median_filter)") from None
        sizes = [int(value)] if not isinstance(value, (list, tuple)) else [int(v) for v in value]
        source = f"postprocess.median_filter of {args.config}"
    if not sizes or any(k < 1 for k in sizes) or len(sizes) not in (1, num_classes):
        raise BadInput(f"{source}: expected one window >= 1 or one per class "
                       f"({num_classes}), got {sizes}")
    return sizes[0] if len(sizes) == 1 else sizes


def threshold_independent_scores(args: argparse.Namespace, classes: list[str],
                                 ref_events: list[dict], ref_files: list[str]
                                 ) -> tuple[dict, dict]:
    """PSDS1, PSDS2 and the best collar F1 of --probs against the reference; (figures, curves)."""
    import numpy as np

    from sedjax.metrics import psds

    order_path = args.probs_order or args.reference
    if args.probs_order:
        _, names = _read(args.probs_order, "--probs_order")
        _check_subset(args.probs_order, names, args.reference, set(ref_files))
    else:
        names = ref_files
    try:
        probs = np.load(args.probs, mmap_mode="r")
    except FileNotFoundError:
        raise BadInput(f"probabilities file not found: {args.probs}") from None
    except (OSError, ValueError) as e:
        raise BadInput(f"cannot read probabilities file {args.probs}: {e}") from None
    if probs.ndim != 3 or probs.shape[0] != len(names) or probs.shape[2] != len(classes):
        raise BadInput(f"{args.probs} has shape {probs.shape}; expected ({len(names)}, T, "
                       f"{len(classes)}): one row per file of {order_path}, one column per "
                       "class")
    frame_seconds = _frame_seconds(args)
    median_filter = _median_filter(args, len(classes))
    durations = _read_durations(args.durations) if args.durations else None
    scored = set(names)
    unscored = [f for f in ref_files if f not in scored]
    if unscored:
        print(f"warning: {len(unscored)} files of {args.reference} have no row in {args.probs}"
              f" (e.g. {unscored[0]}); threshold-independent scores leave them out",
              file=sys.stderr)
    reference = [e for e in ref_events if e["filename"] in scored]
    try:
        figures, curves = psds.threshold_independent(
            probs, names, frame_seconds, classes, reference,
            durations=durations, median_filter=median_filter)
    except ValueError as e:
        raise BadInput(str(e)) from None
    figures["frame_seconds"] = frame_seconds
    figures["reference_files_without_scores"] = len(unscored)
    return figures, curves


def score(args: argparse.Namespace) -> dict:
    """Reads the inputs, checks them against each other and returns the results dict.

    With an estimated CSV: evaluate_events' dict; with --probs, plus key
    'threshold_independent' (psds.threshold_independent's figures). The PSD-ROC curves go to
    args.curves (an .npz) when given.
    """
    if args.estimated is None and args.probs is None:
        raise BadInput("give an estimated events CSV, --probs, or both")
    classes, source, config = _classes_and_settings(args)
    ref_events, ref_files = _read(args.reference, "reference")
    results: dict = {}
    if args.estimated is not None:  # checks the reference's labels too
        results = _score_events(args, classes, source, config, ref_events, ref_files)
    else:
        bad = sorted({e["event_label"] for e in ref_events} - set(classes))
        if bad:
            raise BadInput(f"{args.reference}: event labels not in {source}: {', '.join(bad)}")
    if args.probs is not None:
        figures, curves = threshold_independent_scores(args, classes, ref_events, ref_files)
        results["threshold_independent"] = figures
        if args.curves:
            from sedjax.metrics import psds
            psds.save_curves(args.curves, curves)
            logging.info("Wrote %s", args.curves)
    return results


def _score_events(args: argparse.Namespace, classes: list[str], source: str, config: dict,
                  ref_events: list[dict], ref_files: list[str]) -> dict:
    """Reads the estimated CSV, checks it against the reference; evaluate_events' dict."""
    est_events, est_files = _read(args.estimated, "estimated")
    # Files only in the estimate would be silently unscored; that is almost always a mix-up of
    # sets (e.g. eval predictions scored against test labels), so refuse.
    _check_subset(args.estimated, est_files, args.reference, set(ref_files))
    for path, events in ((args.reference, ref_events), (args.estimated, est_events)):
        bad = sorted({e["event_label"] for e in events} - set(classes))
        if bad:
            raise BadInput(f"{path}: event labels not in {source}: {', '.join(bad)}")
    try:
        # Reference files absent from the estimate are scored as files with no estimated events.
        return sed_eval_scores.evaluate_events(ref_events, est_events, ref_files, classes, config)
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
    if "event_based" in results:
        print(sed_eval_scores.format_table(results))
    if "threshold_independent" in results:
        from sedjax.metrics import psds
        print(psds.format_lines(results["threshold_independent"], class_wise=True))
    if args.json:
        outputs.write_json(args.json, results)
        logging.info("Wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
