"""DESED_task's confs/default.yaml rewritten from a sedjax config and a DESED-layout folder
(no torch, no jax: the values only).

What maps (configs/desed_baseline.py names each sedjax field's yaml name): batch sizes
[strong, weak, unlabeled], learning rate, EMA factor, epochs, consistency weight (const_max),
median filter, validation threshold, mixup, early-stopping patience, the features and the CRNN
(model.arch 'desed_crnn'), the seed, the clips' length and rate. Two values are derived so that
both systems take the same optimizer steps:

- steps per epoch: sedjax's mean_teacher.steps_per_epoch (0: one pass over its largest part)
  caps each DESED_task epoch (Lightning's limit_train_batches, passed by the driver); an epoch
  of DESED_task ends with its shortest part (ConcatDatasetBatchSampler), so fewer steps than
  sedjax's cannot be raised: `steps` records both;
- n_epochs_warmup: DESED_task ramps the learning rate and the consistency weight over
  n_epochs_warmup x its natural epoch length steps (train_sed.py's exp_steps); it is set so
  that this equals sedjax's ramp-up, consistency_rampup x all steps (a float).

What cannot map is listed in `notes` (e.g. a mixup share other than DESED_task's fixed 0.5).
"""

from __future__ import annotations

import copy
import math
import pathlib
from typing import Any

from sedjax.benchmarks.desed_task import layout as layout_lib

RECIPE = pathlib.Path("recipes/dcase2023_task4_baseline")
DEFAULT_YAML = RECIPE / "confs/default.yaml"


def read_default(desed_task: pathlib.Path) -> dict:
    """DESED_task's confs/default.yaml as a dict."""
    import yaml

    with open(pathlib.Path(desed_task) / DEFAULT_YAML) as f:
        return yaml.safe_load(f)


def time_pooling(model) -> int:
    return math.prod(int(p[0]) for p in model.pool_sizes)


def audio_folders(folder: pathlib.Path, fs: int, rate_of=layout_lib.sample_rate
                  ) -> tuple[str, str]:
    """(folder, folder_44k) of one audio folder for DESED_task, which reads `folder` and first
    resamples `folder_44k` into it when their file counts differ: DESED's resampled copy X_16k
    when present, X itself when its files are at fs already, else X_16k (DESED_task writes it)."""
    resampled = folder.parent / f"{folder.name}_{fs // 1000}k"
    if resampled.is_dir() or rate_of(folder) not in (None, fs):
        return str(resampled), str(folder)
    return str(folder), str(folder)


def sedjax_steps(config, counts: dict) -> int:
    """sedjax's steps per epoch: mean_teacher.steps_per_epoch, or (0) one pass over the
    largest part of the mix (sedjax.recipes.mean_teacher.steps_per_epoch)."""
    mt = config.mean_teacher
    if int(mt.steps_per_epoch) > 0:
        return int(mt.steps_per_epoch)
    parts = [(counts["weak"], mt.batch_weak), (counts["unlabeled"], mt.batch_unlabeled),
             (counts["synth_all"], mt.batch_strong)]
    return max(math.ceil(n / b) for n, b in parts if b > 0)


def desed_epoch_length(counts: dict, batch_sizes: list[int], weak_split: float) -> int:
    """DESED_task's natural epoch (train_sed.py's epoch_len): its shortest part in batches;
    the weak part is weak_df.sample(frac=weak_split) (pandas rounds frac x rows)."""
    strong = counts["synth"] + counts.get("strong_real", 0)
    weak = round(weak_split * counts["weak"])
    return min(n // b for n, b in zip((strong, weak, counts["unlabeled"]), batch_sizes))


def build(base: dict, config, layout: layout_lib.Layout, classes: list[str], seed: int,
          run_dir: pathlib.Path, rate_of=layout_lib.sample_rate) -> tuple[dict, dict, list[str]]:
    """(DESED_task yaml dict, steps {'sedjax', 'desed_epoch', 'limit_train_batches',
    'rampup_steps'}, notes) for one run."""
    conf = copy.deepcopy(base)
    notes: list[str] = []
    mt, f, m, pp = config.mean_teacher, config.features, config.model, config.postprocess
    fs = int(f.sample_rate)
    d, t = conf["data"], conf["training"]
    test = layout.test
    for key, part in (("synth", layout.synth), ("weak", layout.weak),
                      ("unlabeled", layout.unlabeled), ("synth_val", layout.synth_val),
                      ("test", test), ("eval", test),
                      ("strong", layout.strong_real or layout.synth)):
        d[f"{key}_folder"], d[f"{key}_folder_44k"] = audio_folders(part.audio, fs, rate_of)
        if part.tsv is not None and key != "eval":
            d[f"{key}_tsv"] = str(part.tsv)
        if part.durations is not None and key in ("synth_val", "test"):
            d[f"{key}_dur"] = str(part.durations)
    seconds = layout_lib.clip_seconds(layout)
    d["audio_max_len"] = int(seconds) if float(seconds).is_integer() else float(seconds)
    d["fs"] = fs
    d["net_subsample"] = time_pooling(m)

    batch = [int(mt.batch_strong), int(mt.batch_weak), int(mt.batch_unlabeled)]
    t["batch_size"] = batch
    t["num_workers"] = 0
    t["n_epochs"] = int(mt.num_epochs)
    t["const_max"] = float(mt.consistency_weight)
    t["ema_factor"] = float(mt.ema_decay)
    t["median_window"] = int(pp.median_filter)
    t["val_thresholds"] = [float(pp.threshold)]
    t["seed"] = int(seed)
    t["backend"] = None  # 'dp' is for GPUs; the driver runs on the CPU (--gpus 0)
    t["enable_progress_bar"] = False
    patience = int(mt.early_stopping_patience)
    t["early_stop_patience"] = min(patience, int(mt.num_epochs))
    if patience < int(mt.num_epochs) and (float(mt.early_stopping_min_delta)
                                          or int(mt.early_stopping_start_epoch)):
        notes.append("early stopping: DESED_task's has no min_delta / start epoch "
                     f"(sedjax: {mt.early_stopping_min_delta} / {mt.early_stopping_start_epoch})")
    a = mt.augment
    share = float(a.mixup_share)
    t["mixup"] = "soft" if share > 0 else None
    if share not in (0.0, 0.5) or (share and float(a.mixup_alpha) != 0.2):
        notes.append(f"mixup: DESED_task mixes half of the batches with Beta(0.2, 0.2) (sedjax: "
                     f"share {share}, alpha {a.mixup_alpha})")
    # DESED_task's CRNN masks up to 4 frames and 9 mel bands of student and teacher inputs in
    # training (specaugm_* defaults, on in its 2023 recipe): sedjax's equal setting
    masks = (int(a.time_mask), int(a.freq_mask), bool(a.get("mask_teacher", False)))
    if masks != (4, 9, True) or int(a.time_shift):
        notes.append(f"augmentation: DESED_task's CRNN masks up to 4 frames and 9 mel bands of "
                     f"student and teacher inputs, no time shift (sedjax: time_mask, freq_mask, "
                     f"mask_teacher = {masks}, time_shift {a.time_shift})")
    if float(mt.learning_rate_rampup) != float(mt.consistency_rampup):
        notes.append(f"ramp-up: DESED_task ramps the learning rate and the consistency weight "
                     f"together, over consistency_rampup ({mt.consistency_rampup}; sedjax's "
                     f"learning_rate_rampup is {mt.learning_rate_rampup})")
    conf["opt"]["lr"] = float(mt.learning_rate)
    if (float(mt.adam_b1), float(mt.adam_b2), float(mt.adam_eps)) != (0.9, 0.999, 1e-8):
        notes.append("Adam: DESED_task's betas (0.9, 0.999) and eps 1e-8 are fixed")

    feats = conf["feats"]
    feats.update(n_mels=int(f.n_mels), n_filters=int(f.n_fft), n_window=int(f.win_length),
                 hop_length=int(f.hop_length), sample_rate=fs, f_min=float(f.fmin),
                 f_max=float(f.fmax))
    fixed = {"window": "hamming", "window_periodic": False, "spectrogram": "magnitude",
             "log": "db", "db_amin": 1e-5, "scaler": "instance_minmax", "htk": True,
             "mel_norm": "none"}
    differ = [k for k, v in fixed.items() if k in f and _plain(f[k]) != v]
    if differ:
        notes.append("features: DESED_task's are fixed (hamming window, magnitude mel, dB, "
                     f"instance min-max); sedjax's config differs in {', '.join(differ)}")
    conf["scaler"]["savepath"] = str(pathlib.Path(run_dir) / "scaler.ckpt")

    net = conf["net"]
    net["nclass"] = len(classes)
    if str(m.get("arch", "crnn")) == "desed_crnn":
        n = len(m.conv_features)
        net.update(nb_filters=[int(c) for c in m.conv_features],
                   pooling=[[int(p[0]), int(p[1])] for p in m.pool_sizes],
                   kernel_size=[int(m.conv_kernel[0])] * n,
                   padding=[int(m.conv_kernel[0]) // 2] * n,
                   stride=[1] * n, dropout=float(m.conv_dropout), n_RNN_cell=int(m.gru_units),
                   rnn_layers=int(m.gru_layers), attention=str(m.pooling) == "attention",
                   dropout_recurrent=float(m.gru_input_dropout))
        if float(m.head_dropout) != float(m.conv_dropout):
            notes.append(f"CRNN: DESED_task's one dropout serves the convolutions and the head "
                         f"(sedjax: {m.conv_dropout} / {m.head_dropout})")
    else:
        notes.append(f"model: sedjax's model.arch is {m.get('arch', 'crnn')!r}; DESED_task "
                     "trains its own CRNN (default.yaml's `net`)")

    counts = layout_lib.counts(layout)
    counts["synth_all"] = len(_all_clips(layout.synth.tsv))
    steps = sedjax_steps(config, counts)
    epoch = desed_epoch_length(counts, batch, float(t["weak_split"]))
    if epoch < 1:
        raise layout_lib.LayoutError(
            f"{layout.root}: DESED_task's epoch would have no batch (clips {counts} for batches "
            f"of {batch} strong / weak / unlabeled, {t['weak_split']} of the weak clips)")
    if epoch < steps:
        notes.append(f"steps: DESED_task's epoch ends with its shortest part after {epoch} "
                     f"batches; sedjax takes {steps} per epoch")
    limit = min(steps, epoch)
    rampup = int(round(float(mt.consistency_rampup) * steps * int(mt.num_epochs)))
    t["n_epochs_warmup"] = rampup / epoch
    notes.append(_checkpoint_note(config, layout))
    if layout.test_source == "eval/public":  # sedjax's roles: nothing held out of training
        notes.append(f"weak clips: DESED_task trains on {t['weak_split']:g} of them (the rest "
                     "picks its checkpoint); sedjax on all")
    return conf, {"sedjax": steps, "desed_epoch": epoch, "limit_train_batches": limit,
                  "rampup_steps": rampup, "counts": counts}, notes


def _checkpoint_note(config, layout: layout_lib.Layout) -> str:
    metric = config.mean_teacher.checkpoint_metric
    sedjax_val = ("synthetic21_validation" if layout.test_source == "validation"
                  else "validation")
    return (f"checkpoint: DESED_task keeps the epoch of the best weak-clip F1 (its held-out 10 %) "
            f"+ intersection F1 at 0.5 of {layout.synth_val_source}; sedjax the best {metric} "
            f"of {sedjax_val}")


def _all_clips(tsv: pathlib.Path) -> list[str]:
    from sedjax.data import event_files

    return event_files.read_events(tsv)[1]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def write(conf: dict, path: pathlib.Path) -> pathlib.Path:
    """The yaml file DESED_task's prepare_run reads (--conf_file)."""
    import yaml

    from sedjax.system import files

    files.write_text(path, yaml.safe_dump(conf, sort_keys=False))
    return path
