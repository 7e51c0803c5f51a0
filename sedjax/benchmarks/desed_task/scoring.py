"""Both systems' test frame scores, scored by one code path on the clips both scored.

- sedjax: a run's predictions/test_probs.npy (rows in the order of the clips of
  predictions/test_events.csv), median-filtered as its post-processing does
  (postprocess.median_filter, or the per-class lengths it chose on validation,
  postprocess.json), into sed_scores_eval score tables (sedjax.metrics.sed_scores_inputs);
- DESED_task: the score tables its test step built (the driver wrote them with
  sed_scores_eval.io.write_sed_scores), 'postprocessed' ones: median-filtered by its
  median_window in its batched_decode_preds (scipy.ndimage.median_filter, as sedjax's).
Each is scored with sedjax.metrics.psds.threshold_independent (sed_scores_eval: PSDS1, PSDS2,
the best collar F1 over thresholds, macro) against the test split's tsv, the durations of its
durations file, on the clips both scored: DESED_task's test set holds only the clips with
events (StronglyAnnotatedSet keeps a clip by its event rows), sedjax scores every clip.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from sedjax.data import event_files
from sedjax.metrics import psds, sed_scores_inputs


def _config(run_dir: pathlib.Path):
    import ml_collections

    from sedjax.config import config_files

    return ml_collections.ConfigDict(
        config_files.upgrade(json.loads((run_dir / "config.json").read_text())))


def sedjax_median_filter(run_dir: pathlib.Path, config):
    """The median filter the run's own scoring applied: its tuned per-class lengths
    (postprocess.json) or postprocess.median_filter."""
    tuned = run_dir / "postprocess.json"
    if tuned.is_file():
        chosen = json.loads(tuned.read_text())
        if chosen.get("method") == "csebbs":
            raise ValueError(f"{tuned}: cSEBBs post-processing is not scored by this harness")
        return [int(k) for k in chosen["median_filter"]]
    size = config.postprocess.median_filter
    return [int(k) for k in size] if isinstance(size, (list, tuple)) else int(size)


def sedjax_tables(run_dir: pathlib.Path, durations: dict[str, float]) -> tuple[dict, dict]:
    """(score tables {audio id: DataFrame} of a sedjax run's test predictions, info)."""
    from sedjax.data import features
    from sedjax.models import time_grid

    run_dir = pathlib.Path(run_dir)
    config = _config(run_dir)
    probs = np.load(run_dir / "predictions" / "test_probs.npy")
    _, names = event_files.read_events(run_dir / "predictions" / "test_events.csv")
    frame_seconds = time_grid.frame_seconds(config)
    f = config.features
    # the frames of each clip that hold audio (a clip shorter than the model's input is padded)
    samples = [int(round(durations[n] * f.sample_rate)) for n in names]
    frames = np.array([min(features.num_valid_frames(s, f), int(f.num_frames)) for s in samples])
    valid = time_grid.valid_output_frames(frames, int(f.num_frames), config.model)
    size = sedjax_median_filter(run_dir, config)
    tables = sed_scores_inputs.score_dataframes(probs, names, frame_seconds,
                                                list(config.data.classes), valid, size)
    return tables, {"median_filter": size, "frame_seconds": frame_seconds,
                    "clips": len(names), "predict_with": config.mean_teacher.predict_with}


def desed_tables(folder: pathlib.Path) -> dict:
    """The score tables the driver wrote (one tsv per clip)."""
    import sed_scores_eval

    return sed_scores_eval.io.read_sed_scores(str(folder))


def score(tables: dict, reference_tsv: pathlib.Path, durations: dict[str, float],
          clips: list[str], classes: list[str], settings=None) -> dict:
    """PSDS1, PSDS2 and the best collar F1 (macro) of `tables` on `clips` (audio ids)."""
    events, names = event_files.read_events(reference_tsv)
    by_id = {sed_scores_inputs.audio_id(n): n for n in [*names, *durations]}
    filenames = [by_id.get(c, c + ".wav") for c in clips]
    keep = set(filenames)
    reference = [e for e in events if e["filename"] in keep]
    chosen = {c: tables[c] for c in clips}
    figures, _ = psds.threshold_independent(
        np.zeros((len(clips), 1, len(classes)), np.float32), filenames, 1.0, classes,
        reference, durations={n: durations[n] for n in filenames}, settings=settings,
        tables=chosen)
    return {"psds1": figures.get("psds1"), "psds2": figures.get("psds2"),
            "collar_f1": figures.get("collar_f1_best_macro"), "num_clips": len(clips),
            "num_reference_events": figures.get("num_reference_events"),
            "classes_without_reference_events": figures.get("classes_without_reference_events")}


def common_clips(*table_sets: dict) -> list[str]:
    """The audio ids every table set scored, sorted."""
    ids = set(table_sets[0])
    for t in table_sets[1:]:
        ids &= set(t)
    return sorted(ids)
