"""DESED_task's checkpoint, converted to sedjax and scored by it, beside DESED_task's own PSDS1.

For each finished DESED_task run: the checkpoint its test step used (ModelCheckpoint's best on
val/obj_metric) becomes a sedjax model folder with `python -m sedjax.convert desed_task CKPT
--workdir=W --which=student` (its config: the harness's, with the run's class list); sedjax
predicts the test clips DESED_task scored as DESED_task feeds them (each clip zero-padded or
cut to audio_max_len seconds, one window: sedjax's log-mel (features.log_mel) and the
converted normalization, the CRNN in inference mode); the frame probabilities are
median-filtered by the run's median_window (scipy's, as batched_decode_preds) and scored:
- with sed_scores_eval exactly as DESED_task's on_test_epoch_end calls it (ground truth and
  durations read from the test tsv files, clips without events dropped; PSDS1 dtc = gtc = 0.7,
  alpha_ct 0, alpha_st 1, max_efpr 100), beside DESED_task's logged
  test/student/psds1_sed_scores_eval: they must agree to the third decimal;
- and with sedjax.metrics.psds (the harness's scoring), as are DESED_task's own score files.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

from sedjax.benchmarks.desed_task import process, scoring, table
from sedjax.config import config_files
from sedjax.data import event_files

TOLERANCE = 5e-4  # "to the third decimal"
WHICH = "student"

CONFIG_FILE = '''"""The harness's config, the class list of its DESED_task run (sedjax.convert)."""
from sedjax.benchmarks.desed_task import harness


def get_config():
    c = harness.load_config({spec!r})
    c.data.classes = {classes!r}
    return c
'''


def _predict(model_dir: pathlib.Path, paths: list[pathlib.Path], seconds: float) -> tuple:
    """(probs (N, T', C), frame seconds, classes) of the converted model on clips padded or cut
    to `seconds`, one window each."""
    import jax
    import ml_collections

    from sedjax import detect
    from sedjax.data import audio, features

    det = detect.Detector.from_workdir(model_dir)
    # the clip is padded or cut here, to audio_max_len * fs as DESED_task's pad_audio does;
    # features.pad_to_num_frames would cut it again, to (num_frames - 1) * hop_length samples
    # (fewer where audio_max_len * fs is no multiple of hop_length: 79,872 of 80,000 for 5 s)
    f = ml_collections.ConfigDict({**det.features_config.to_dict(), "pad_to_num_frames": False})
    target = int(round(seconds * f.sample_rate))
    out = []
    for path in paths:
        y, sr = audio.read_audio(path)
        y = audio.to_mono_resampled(y, sr, f.sample_rate)
        y = np.pad(y[:target], (0, max(0, target - len(y))))  # DESED_task's pad_audio
        x = features.log_mel(y, int(f.sample_rate), f)
        valid = features.num_valid_frames(len(y), f)
        x = np.where(np.arange(len(x))[:, None] < valid, (x - det.mean) / det.std, 0.0)
        probs = det._apply(det.variables, x[None].astype(np.float32))  # noqa: SLF001
        out.append(np.asarray(probs)[0])
    jax.clear_caches()
    return np.stack(out), det.frame_seconds, det.classes


def desed_psds1(tables: dict, tsv: pathlib.Path, durations_tsv: pathlib.Path) -> float:
    """PSDS1 as DESED_task's test step computes it (sed_scores_eval on its own readers)."""
    import sed_scores_eval

    gt = sed_scores_eval.io.read_ground_truth_events(str(tsv))
    gt = {k: v for k, v in gt.items() if len(v) > 0}
    durations = sed_scores_eval.io.read_audio_durations(str(durations_tsv))
    durations = {k: durations[k] for k in gt}
    value, *_ = sed_scores_eval.intersection_based.psds(
        scores={k: tables[k] for k in gt}, ground_truth=gt, audio_durations=durations,
        dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=None, alpha_ct=0, alpha_st=1,
        max_efpr=100, num_jobs=1)
    return float(value)


def check_run(setup, record: dict) -> dict:
    """The check of one finished DESED_task run; its figures (also under record['convert'])."""
    from sedjax.metrics import sed_scores_inputs

    run_dir = pathlib.Path(record["run_dir"])
    ckpt = record.get("best_model_path")
    if not ckpt or not pathlib.Path(ckpt).is_file():
        raise FileNotFoundError(f"{run_dir}: no best checkpoint recorded ({ckpt})")
    config_file = run_dir / "convert_config.py"
    config_file.write_text(CONFIG_FILE.format(spec=setup.config_spec,
                                              classes=tuple(setup.classes)))
    model_dir = run_dir / f"converted_{WHICH}"
    command = [sys.executable, "-m", "sedjax.convert", "desed_task", ckpt,
               f"--workdir={model_dir}", f"--which={WHICH}", f"--config={config_file}"]
    done = process.run(command, run_dir / "convert_log.txt", config_files.repo_root(),
                       "convert", setup.heartbeat)
    if done.returncode != 0:
        raise RuntimeError(f"sedjax.convert failed (exit {done.returncode}): "
                           f"{process._last_line(done.log, 300)}")  # noqa: SLF001
    conf = _yaml(run_dir / "conf.yaml")
    tsv = pathlib.Path(conf["data"]["test_tsv"])
    durations_tsv = pathlib.Path(conf["data"]["test_dur"])
    folder = pathlib.Path(conf["data"]["test_folder"])
    clips = list(dict.fromkeys(e["filename"] for e in event_files.read_events(tsv)[0]))
    probs, frame_seconds, classes = _predict(model_dir, [folder / c for c in clips],
                                             float(conf["data"]["audio_max_len"]))
    if classes != setup.classes:
        raise ValueError(f"{model_dir}: classes {classes}, the run's {setup.classes}")
    window = int(conf["training"]["median_window"])
    tables = sed_scores_inputs.score_dataframes(probs, clips, frame_seconds, classes,
                                                median_filter=window)
    durations = event_files.read_durations(durations_tsv)
    ids = [sed_scores_inputs.audio_id(c) for c in clips]
    from sedjax.benchmarks.desed_task import harness

    own = scoring.desed_tables(harness.desed_scores_folder(run_dir, WHICH))
    result = {
        "checkpoint": ckpt, "which": WHICH, "model_dir": str(model_dir), "clips": len(clips),
        "median_window": window,
        "desed_task_logged_psds1": (record.get("own_test_metrics") or {}).get(
            f"test/{WHICH}/psds1_sed_scores_eval"),
        "converted_psds1_desed_scoring": desed_psds1(tables, tsv, durations_tsv),
        "desed_task_scores_psds1_desed_scoring": desed_psds1(own, tsv, durations_tsv),
        "converted_sedjax_scoring": scoring.score(tables, tsv, durations, ids, setup.classes),
        "desed_task_scores_sedjax_scoring": record["scores"][WHICH],
        "max_abs_score_difference": _max_difference(tables, own, ids),
    }
    logged = result["desed_task_logged_psds1"]
    result["agree"] = (logged is not None and
                       abs(result["converted_psds1_desed_scoring"] - logged) <= TOLERANCE)
    return result


def _max_difference(a: dict, b: dict, ids: list[str]) -> float | None:
    """The largest |score| difference between two score table sets over their common frames
    (class columns, same clip, same rows)."""
    worst = 0.0
    for i in ids:
        x, y = a.get(i), b.get(i)
        if x is None or y is None:
            return None
        cols = [c for c in x.columns if c not in ("onset", "offset")]
        n = min(len(x), len(y))
        worst = max(worst, float(np.max(np.abs(x[cols].to_numpy()[:n] - y[cols].to_numpy()[:n]))))
    return worst


def _yaml(path: pathlib.Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def run(setup, state: dict, seeds: list[int]) -> bool:
    """--convert_check for every seed's finished DESED_task run; True when all agree."""
    if not (config_files.repo_root() / "sedjax" / "convert.py").is_file():
        print("convert check: sedjax.convert is not there; skipped", flush=True)
        return True
    ok = True
    for seed in seeds:
        record = state["runs"].get(table.key("desed_task", seed))
        if not record or record.get("status") != "done":
            continue
        try:
            result = check_run(setup, record)
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            print(f"convert check, seed {seed}: failed: {e}", flush=True)
            ok = False
            continue
        record["convert"] = result
        table.write(setup.workdir, state)
        logged = result["desed_task_logged_psds1"]
        print(f"convert check, seed {seed} ({WHICH}, {result['clips']} clips): DESED_task's "
              f"test step logged PSDS1 {_fmt(logged)}; its checkpoint converted and predicted "
              f"by sedjax: {result['converted_psds1_desed_scoring']:.4f} (scored as DESED_task "
              f"scores), {_fmt(result['converted_sedjax_scoring']['psds1'])} (sedjax's scoring; "
              f"DESED_task's own score files: "
              f"{_fmt(result['desed_task_scores_sedjax_scoring']['psds1'])}); largest score "
              f"difference {_fmt(result['max_abs_score_difference'])}: "
              f"{'agree' if result['agree'] else 'DIFFER'}", flush=True)
        ok &= bool(result["agree"])
    return ok


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4f}"

