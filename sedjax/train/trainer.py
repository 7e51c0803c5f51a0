"""The seed's two-phase system, stage by stage; each stage is skipped when its output exists.

workdir/
  synthetic/                   generated dataset (data.dataset == 'synthetic')
  item_access_error.log.csv    clips listed in the metadata whose audio is missing
  features/                    <split>-<hash>.npy log-mel memmaps, stats-<hash>.npy
  pass1/                       checkpoints/{latest,best}, result.json (thresholds, history)
  pseudo_labels.npy            pass-1 clip labels of unlabel_in_domain (memmap, atomic)
  pass2/                       checkpoints/{latest,best}, result.json
  predictions/                 <split>_probs.npy, <split>_events.csv
  results.json, results.txt, class_scores.png
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import time

import jax
import numpy as np
from absl import logging

from sedjax import evaluation, files, postprocess, report
from sedjax.data import dataset, features, pipeline, synthetic
from sedjax.models import crnn
from sedjax.train import checkpoint, fit, parallel, steps


@contextlib.contextmanager
def _timed(timings: dict, name: str):
    """Records the wall time of the block into timings[name] (seconds)."""
    start = time.time()
    yield
    timings[name] = round(time.time() - start, 2)


def load_data(config, workdir: pathlib.Path, timings: dict) -> dict:
    """Dataset splits (real or synthetic) and their features: {split: (Split, SplitArrays)}."""
    root = config.data.root
    with _timed(timings, "dataset"):
        if config.data.dataset == "synthetic":
            root = synthetic.ensure_dataset(config.data, workdir / "synthetic")
        splits = dataset.load_dataset(root, config.data.classes, workdir, config.data.use_eval)
    with _timed(timings, "features"):
        return _featurize(config, splits, workdir)


def _featurize(config, splits, workdir):
    out = {}
    for name, split in splits.items():
        feats, frames = features.extract_split(name, split.paths, split.filenames,
                                               config.features, workdir / "features")
        labels = split.weak if split.weak is not None else np.zeros(
            (len(split), len(config.data.classes)), np.float32)
        out[name] = (split, pipeline.SplitArrays(feats, frames, labels))
    return out


def normalization_stats(config, data: dict, workdir: pathlib.Path) -> tuple:
    """Per-band mean/std over the training clips (weak + unlabel_in_domain, each once)."""
    key = features.cache_key(config.features, [f for n in ("weak", "unlabel_in_domain")
                                               for f in data[n][0].filenames])
    path = workdir / "features" / f"stats-{key}.npy"
    if not path.exists():
        mean, std = features.band_stats([(data[n][1].features, data[n][1].frames)
                                         for n in ("weak", "unlabel_in_domain")])
        files.save_npy(path, np.stack([mean, std]))
    mean, std = np.load(path)
    return mean, std


def _new_state(config, pass_name: str, clip_level: bool, mesh):
    model = crnn.from_config(config.model, clip_level, axis_name=parallel.AXIS)
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1 if clip_level else 2)
    state = steps.create_train_state(rng, model, config[pass_name],
                                     (config.features.num_frames, config.features.n_mels))
    logging.info("%s model: %d parameters", pass_name, crnn.count_params(state.params))
    return parallel.replicate(state, mesh)


def run_pass1(config, data, batches, mesh, workdir):
    """Clip-level CRNN on the weak clips; per-class thresholds on its validation split."""
    weak = data["weak"][1]
    n = len(weak)
    order = np.random.default_rng([config.seed, 101]).permutation(n)
    n_val = int(round(config.pass1.val_fraction * n))
    val_rows, train_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
    pass_data = fit.PassData(batches["weak"], train_rows, batches["weak"], val_rows,
                             lambda probs: weak.labels[val_rows])
    state = _new_state(config, "pass1", True, mesh)
    state, meta = fit.fit("pass1", state, config.pass1, pass_data, workdir / "pass1",
                          config.seed + 1)
    val_probs = fit.predict(state, batches["weak"], val_rows, config.pass1.eval_batch_size)
    thresholds = fit.best_thresholds(val_probs, weak.labels[val_rows],
                                     config.pass1.threshold_grid)
    meta["thresholds"] = dict(zip(config.data.classes, thresholds.tolist()))
    meta["val_f1_tuned"] = fit.macro_f1(val_probs, weak.labels[val_rows], thresholds)
    return state, meta, thresholds


def make_pseudo_labels(config, state, batches, thresholds, path: pathlib.Path) -> np.ndarray:
    """Pass-1 clip decisions on unlabel_in_domain, written as a memmap .npy (atomic)."""
    b = batches["unlabel_in_domain"]
    probs = fit.predict(state, b, np.arange(len(b.arrays)), config.pass1.eval_batch_size)
    labels = (probs >= thresholds).astype(np.float32)
    files.save_npy(path, labels)
    logging.info("pseudo-labels: %d clips, %.2f labels per clip, written to %s",
                 len(labels), labels.sum(1).mean(), path)
    return labels


def run_pass2(config, data, batches, mesh, workdir):
    """Frame-level CRNN on the pseudo-labelled clips, validated on the weak clips."""
    weak = data["weak"][1]
    unl = batches["unlabel_in_domain"]
    pass_data = fit.PassData(
        unl, np.arange(len(unl.arrays)), batches["weak"], np.arange(len(weak)),
        lambda probs: np.broadcast_to(weak.labels[:, None, :], probs.shape))
    state = _new_state(config, "pass2", False, mesh)
    if config.pass2.init_from_pass1:
        state = _warm_start(config, state, mesh, workdir)
    return fit.fit("pass2", state, config.pass2, pass_data, workdir / "pass2", config.seed + 2)


def _warm_start(config, state, mesh, workdir: pathlib.Path):
    """`state` with the best pass-1 weights and BatchNorm statistics (a fresh optimizer).

    Both passes share one architecture (pass 1 only adds the mean over time, which has no
    weights), so the pass-1 tree fits the pass-2 model as it is.
    """
    ckpts = checkpoint.PassCheckpoints(workdir / "pass1")
    restored = ckpts.restore("best", state)  # same tree and shardings as the pass-1 state
    ckpts.close()
    if restored is None:
        raise FileNotFoundError(f"{workdir / 'pass1'}: no best checkpoint to start pass 2 from")
    logging.info("pass2: starting from the best pass-1 weights (epoch %d)",
                 restored[1]["best_epoch"] + 1)
    return state.replace(params=restored[0].params, batch_stats=restored[0].batch_stats)


def score_split(config, name, split, arrays, probs, out_dir: pathlib.Path) -> dict:
    """Post-processes frame probabilities into events, writes them and scores with sed_eval."""
    events = postprocess.probabilities_to_events(split.filenames, probs, config.postprocess,
                                                 config.data.classes, arrays.frames)
    postprocess.write_events_csv(out_dir / f"{name}_events.csv", events, split.filenames)
    reference = [{"filename": f, "onset": on, "offset": off, "event_label": label}
                 for f, clip in zip(split.filenames, split.events) for on, off, label in clip]
    return evaluation.evaluate_events(reference, events, split.filenames, config.data.classes,
                                      config.evaluation)


def _read_json(path: pathlib.Path):
    return json.loads(path.read_text()) if path.exists() else None


def train_and_evaluate(config, workdir) -> dict:
    """Runs (or resumes) every stage and returns the test-set results."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    timings: dict = {}
    data = load_data(config, workdir, timings)
    stats = normalization_stats(config, data, workdir)
    mesh = parallel.make_mesh()
    logging.info("devices: %d x %s", mesh.devices.size, jax.devices()[0].device_kind)
    batches = {name: pipeline.Batches(arrays, mesh, stats, config.runtime)
               for name, (_, arrays) in data.items()}

    pseudo_path = workdir / "pseudo_labels.npy"
    pass1_done = _read_json(workdir / "pass1" / "result.json")
    with _timed(timings, "pass1"):
        if pass1_done is None or not pseudo_path.exists():
            state1, meta1, thresholds = run_pass1(config, data, batches, mesh, workdir)
            with _timed(timings, "pseudo_labels"):
                make_pseudo_labels(config, state1, batches, thresholds, pseudo_path)
            report.write_json(workdir / "pass1" / "result.json", meta1)
            pass1_done = meta1
        else:
            logging.info("pass1: done before (best val F1 %.4f); reusing %s",
                         pass1_done["best_f1"], pseudo_path)
    data["unlabel_in_domain"][1].labels = np.load(pseudo_path, mmap_mode="r")
    batches["unlabel_in_domain"] = pipeline.Batches(data["unlabel_in_domain"][1], mesh, stats,
                                                    config.runtime)

    pred_dir = workdir / "predictions"
    pred_dir.mkdir(exist_ok=True)
    scored = [n for n in ("test", "eval") if n in data]
    with _timed(timings, "pass2"):
        meta2 = _read_json(workdir / "pass2" / "result.json")
        if meta2 is None or not all((pred_dir / f"{n}_probs.npy").exists() for n in scored):
            state2, meta2 = run_pass2(config, data, batches, mesh, workdir)
            start = time.time()
            for name in scored:
                b = batches[name]
                probs = fit.predict(state2, b, np.arange(len(b.arrays)),
                                    config.pass2.eval_batch_size)
                files.save_npy(pred_dir / f"{name}_probs.npy", probs.astype(np.float32))
            timings["predict"] = round(time.time() - start, 2)
            report.write_json(workdir / "pass2" / "result.json", meta2)
        else:
            logging.info("pass2: done before (best val F1 %.4f)", meta2["best_f1"])

    results = {}
    with _timed(timings, "evaluation"):
        for name in scored:
            split, arrays = data[name]
            probs = np.load(pred_dir / f"{name}_probs.npy")
            results[name] = score_split(config, name, split, arrays, probs, pred_dir)
    summary = {"test": results["test"], "pass1": {k: pass1_done[k] for k in
                                                  ("best_f1", "best_epoch", "thresholds")},
               "pass2": {k: meta2[k] for k in ("best_f1", "best_epoch")},
               "timings_s": timings, "devices": mesh.devices.size}
    if "eval" in results:
        summary["eval"] = results["eval"]
    report.write_results(workdir, summary)
    table = evaluation.format_table(results["test"])
    files.write_text(workdir / "results.txt", table + "\n")
    report.plot_class_scores(results["test"], workdir / "class_scores.png")
    print(table)
    ev = results["test"]["event_based"]
    er = ev["error_rate_macro"]
    er = (f"{er:.3f}" if evaluation.error_rate_is_defined(er) else
          f"{er:.0e} (sed_eval's ER of a class without reference events)")
    print(f"event-based macro F1 {100 * ev['f_measure_macro']:.2f} %  ER {er}  (test, "
          f"{len(data['test'][0])} clips)  -> {workdir / 'results.json'}")
    return summary
