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

import sys
from collections.abc import Sequence
from types import SimpleNamespace

from absl import flags, logging

from sedjax.config import config_files
from sedjax.data import event_files
from sedjax.metrics import sed_eval_scores
from sedjax.reporting import outputs
from sedjax.system import cli

EXIT_BAD_INPUT = cli.EXIT_USER_ERROR

FLAGS = flags.FlagValues()  # this command's own: importing it never clashes with another's
flags.DEFINE_string("json", None, "Write the results dict to this JSON file.", flag_values=FLAGS)
flags.DEFINE_string("config", str(config_files.default_path("baseline")),
                    "ml_collections config file whose data.classes and evaluation section are "
                    "used.", flag_values=FLAGS)
flags.DEFINE_string("classes", None, "Comma-separated class labels (default: the config's "
                    "data.classes).", flag_values=FLAGS)
flags.DEFINE_float("t_collar", None, "Onset collar, seconds (default: the config's "
                   "sed_eval_scores.t_collar).", flag_values=FLAGS)
flags.DEFINE_float("percentage_of_length", None, "Offset collar as a fraction of the reference "
                   "length (max with t_collar; default: the config's "
                   "sed_eval_scores.percentage_of_length).", flag_values=FLAGS)
flags.DEFINE_float("segment_seconds", None, "Segment length of the segment-based metric, "
                   "seconds (default: the config's sed_eval_scores.segment_seconds).",
                   flag_values=FLAGS)
# threshold-independent scores (sed_scores_eval: PSDS1, PSDS2, best collar-based F1)
flags.DEFINE_string("probs", None, "(N, T, C) .npy of frame probabilities, e.g. "
                    "<workdir>/predictions/test_probs.npy; C follows the class list.",
                    flag_values=FLAGS)
flags.DEFINE_float("frame_seconds", None, "Seconds per frame of --probs (default: the config's "
                   "features.hop_length x the model's time pooling / features.sample_rate).",
                   flag_values=FLAGS)
flags.DEFINE_string("probs_order", None, "DCASE event CSV whose filenames, in order of first "
                    "appearance, are the rows of --probs (default: the reference CSV; for a "
                    "sedjax run: <workdir>/predictions/<split>_events.csv).", flag_values=FLAGS)
flags.DEFINE_string("durations", None, "Tab-separated file with header 'filename<TAB>duration' "
                    "(seconds; sed_scores_eval's format); default: T x frame_seconds for every "
                    "clip.", flag_values=FLAGS)
flags.DEFINE_string("median_filter", None, "Median filter over the probabilities before "
                    "scoring, frames: one, or comma-separated one per class; 1: none (default: "
                    "the config's postprocess.median_filter, as a run scores).",
                    flag_values=FLAGS)
flags.DEFINE_string("curves", None, "Write the PSD-ROC curves (numpy arrays) to this .npz.",
                    flag_values=FLAGS)


def arguments(argv: Sequence[str]) -> SimpleNamespace:
    """The parsed flags and the positional arguments (argv[1:]: REFERENCE [ESTIMATED]) as one
    namespace: reference, estimated (None when not given) and one attribute per flag."""
    positional = list(argv[1:])
    if not 1 <= len(positional) <= 2:
        raise cli.UserError(f"expected REFERENCE.csv [ESTIMATED.csv], got {len(positional)} "
                            f"arguments: {' '.join(positional) or '(none)'}")
    return SimpleNamespace(**FLAGS.flag_values_dict(), reference=positional[0],
                           estimated=positional[1] if len(positional) == 2 else None,
                           loaded_config=None)


def _load_config(args: SimpleNamespace):
    """The --config file's ConfigDict, run once per command and kept on `args`."""
    if args.loaded_config is None:
        args.loaded_config = config_files.load(args.config)  # ConfigFileError: a user error
    return args.loaded_config


def _classes_and_settings(args: SimpleNamespace) -> tuple[list[str], str, dict]:
    """Returns (classes, where they come from, evaluation settings): the config, then options."""
    config = _load_config(args)
    if args.classes is not None:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        if not classes:
            raise cli.UserError("--classes is empty")
        source = "--classes"
    else:
        try:
            classes = [str(c) for c in config.data.classes]
        except (AttributeError, KeyError, TypeError):
            raise cli.UserError(f"config file {args.config} has no data.classes "
                                "(give the class list with --classes)") from None
        if not classes:
            raise cli.UserError(f"data.classes of config file {args.config} is empty")
        source = f"data.classes of {args.config}"
    try:
        settings = sed_eval_scores.evaluation_settings(config.evaluation)
    except (AttributeError, KeyError):
        raise cli.UserError(f"config file {args.config} has no evaluation section") from None
    except ValueError as e:
        raise cli.UserError(f"config file {args.config}: {e}") from None
    for key in ("t_collar", "percentage_of_length", "segment_seconds"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return classes, source, settings


def _check_subset(path: str, names: Sequence[str], reference: str, known: set) -> None:
    """UserError when `path` lists files that are not in the reference."""
    unknown = [f for f in names if f not in known]
    if unknown:
        shown = ", ".join(unknown[:10])
        if len(unknown) > 10:
            shown += f" ... ({len(unknown)} in all)"
        raise cli.UserError(f"{path} lists files that are not in {reference}: {shown}")


def _check_labels(path: str, events: Sequence[dict], classes: list[str], source: str) -> None:
    """UserError when events of `path` carry labels outside `classes` (which came from
    `source`)."""
    bad = sorted({e["event_label"] for e in events} - set(classes))
    if bad:
        raise cli.UserError(f"{path}: event labels not in {source}: {', '.join(bad)}")


def _frame_seconds(args: SimpleNamespace) -> float:
    """--frame_seconds, or the config's output frame length."""
    if args.frame_seconds is not None:
        if not args.frame_seconds > 0:
            raise cli.UserError(f"--frame_seconds must be > 0, got {args.frame_seconds}")
        return float(args.frame_seconds)
    config = _load_config(args)
    try:
        from sedjax.models import time_grid
        return float(time_grid.frame_seconds(config))
    except (AttributeError, KeyError, TypeError, ValueError):
        raise cli.UserError(f"config file {args.config} gives no frame length "
                            "(features.hop_length, features.sample_rate, model.pool_sizes); "
                            "give --frame_seconds") from None


def _median_filter(args: SimpleNamespace, num_classes: int) -> int | list[int]:
    """--median_filter, or the config's postprocess.median_filter."""
    if args.median_filter is not None:
        try:
            sizes = [int(x) for x in str(args.median_filter).split(",") if x.strip()]
        except ValueError:
            raise cli.UserError(f"--median_filter must be frames (integers), got "
                                f"{args.median_filter!r}") from None
        source = "--median_filter"
    else:
        try:
            value = _load_config(args).postprocess.median_filter
        except (AttributeError, KeyError):
            raise cli.UserError(f"config file {args.config} has no postprocess.median_filter "
                                "(give --median_filter)") from None
        sizes = [int(value)] if not isinstance(value, (list, tuple)) else [int(v) for v in value]
        source = f"postprocess.median_filter of {args.config}"
    if not sizes or any(k < 1 for k in sizes) or len(sizes) not in (1, num_classes):
        raise cli.UserError(f"{source}: expected one window >= 1 or one per class "
                            f"({num_classes}), got {sizes}")
    return sizes[0] if len(sizes) == 1 else sizes


def threshold_independent_scores(args: SimpleNamespace, classes: list[str],
                                 ref_events: list[dict], ref_files: list[str]
                                 ) -> tuple[dict, dict]:
    """PSDS1, PSDS2 and the best collar F1 of --probs against the reference; (figures, curves)."""
    import numpy as np

    from sedjax.metrics import psds

    order_path = args.probs_order or args.reference
    if args.probs_order:
        _, names = event_files.read_events(args.probs_order)
        _check_subset(args.probs_order, names, args.reference, set(ref_files))
    else:
        names = ref_files
    try:
        probs = np.load(args.probs, mmap_mode="r")
    except FileNotFoundError:
        raise cli.UserError(f"probabilities file not found: {args.probs}") from None
    except (OSError, ValueError) as e:
        raise cli.UserError(f"cannot read probabilities file {args.probs}: {e}") from None
    if probs.ndim != 3 or probs.shape[0] != len(names) or probs.shape[2] != len(classes):
        raise cli.UserError(f"{args.probs} has shape {probs.shape}; expected ({len(names)}, T, "
                            f"{len(classes)}): one row per file of {order_path}, one column per "
                            "class")
    frame_seconds = _frame_seconds(args)
    median_filter = _median_filter(args, len(classes))
    durations = event_files.read_durations(args.durations) if args.durations else None
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
        raise cli.UserError(str(e)) from None
    figures["frame_seconds"] = frame_seconds
    figures["reference_files_without_scores"] = len(unscored)
    return figures, curves


def score(args: SimpleNamespace) -> dict:
    """Reads the inputs, checks them against each other and returns the results dict.

    With an estimated CSV: evaluate_events' dict; with --probs, plus key
    'threshold_independent' (psds.threshold_independent's figures). The PSD-ROC curves go to
    args.curves (an .npz) when given.
    """
    if args.estimated is None and args.probs is None:
        raise cli.UserError("give an estimated events CSV, --probs, or both")
    classes, source, config = _classes_and_settings(args)
    ref_events, ref_files = event_files.read_events(args.reference)
    results: dict = {}
    if args.estimated is not None:  # checks the reference's labels too
        results = _score_events(args, classes, source, config, ref_events, ref_files)
    else:
        _check_labels(args.reference, ref_events, classes, source)
    if args.probs is not None:
        figures, curves = threshold_independent_scores(args, classes, ref_events, ref_files)
        results["threshold_independent"] = figures
        if args.curves:
            from sedjax.metrics import psds
            psds.save_curves(args.curves, curves)
            logging.info("Wrote %s", args.curves)
    return results


def _score_events(args: SimpleNamespace, classes: list[str], source: str, config: dict,
                  ref_events: list[dict], ref_files: list[str]) -> dict:
    """Reads the estimated CSV, checks it against the reference; evaluate_events' dict."""
    est_events, est_files = event_files.read_events(args.estimated)
    # Files only in the estimate would be silently unscored; that is almost always a mix-up of
    # sets (e.g. eval predictions scored against test labels), so refuse.
    _check_subset(args.estimated, est_files, args.reference, set(ref_files))
    for path, events in ((args.reference, ref_events), (args.estimated, est_events)):
        _check_labels(path, events, classes, source)
    try:
        # Reference files absent from the estimate are scored as files with no estimated events.
        return sed_eval_scores.evaluate_events(ref_events, est_events, ref_files, classes, config)
    except ValueError as e:  # e.g. sed_eval rejecting a collar value
        raise cli.UserError(str(e)) from None


def _evaluate(argv: list[str]) -> int:
    """The command: scores, printed and (--json) written."""
    args = arguments(argv)
    results = score(args)
    if "event_based" in results:
        print(sed_eval_scores.format_table(results))
    if "threshold_independent" in results:
        from sedjax.metrics import psds
        print(psds.format_lines(results["threshold_independent"], class_wise=True))
    if args.json:
        outputs.write_json(args.json, results)
        logging.info("Wrote %s", args.json)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sedjax.evaluate ARGS` in this process (argv: ARGS, default the command
    line's); returns the exit status: 0, or EXIT_BAD_INPUT after one `error:` line."""
    return cli.call(_evaluate, FLAGS, argv)


if __name__ == "__main__":
    cli.run(_evaluate, FLAGS)
