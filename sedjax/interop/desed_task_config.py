"""A DESED_task recipe yaml (recipes/dcase2023_task4_baseline/confs/*.yaml) as a sedjax config.

`python -m sedjax.convert desed_task_config default.yaml --out=configs/my_desed.py` writes a
config file whose get_config() starts from configs/desed_baseline.py (DESED_task's 2023
baseline, value for value) and sets every value the yaml gives, one line per value with the yaml
key beside it. A value that sedjax cannot reproduce (another loss, gradient clipping, BEATs
fine-tuning, ...) is an error naming the key, never silently dropped; the keys that only steer
DESED_task's own machinery (workers, Lightning backend, progress bar) are listed in a comment.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

# DESED_task's keys that change nothing sedjax computes (how it runs, not what it trains)
RUNTIME_ONLY = ("training.batch_size_val", "training.num_workers", "training.backend",
                "training.deterministic", "training.enable_progress_bar", "scaler.savepath",
                "data.net_subsample")
# DESED_task's keys whose job sedjax does its own way (docs/desed.md)
OWN_WAY = {"training.obj_metric_synth_type": "the checkpoint is picked by validation PSDS1",
           "training.n_test_thresholds": "PSDS over every threshold (sed_scores_eval)"}
# DESED_task's weak clips in its training split: weak.tsv's 1,578 x weak_split 0.9; its epoch
# ends with its shortest part, the weak clips (the 2023 baseline: 1420 // 12 = 118 steps)
DESED_WEAK_TRAIN_CLIPS = 1420


class ConfigConversionError(ValueError):
    """A yaml value with no sedjax equivalent; the message names the key."""


def _get(conf: Mapping, dotted: str, default: Any = None) -> Any:
    node: Any = conf
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _require(conf: Mapping, dotted: str, allowed: tuple, why: str) -> None:
    value = _get(conf, dotted, allowed[0])
    if value not in allowed:
        raise ConfigConversionError(f"{dotted}: {value!r} has no sedjax equivalent ({why})")


def _recipe_dir(yaml_path: pathlib.Path) -> pathlib.Path:
    """The folder DESED_task's relative paths start from: train_sed.py's, confs/'s parent."""
    folder = yaml_path.resolve().parent
    return folder.parent if folder.name == "confs" else folder


def _dataset_root(conf: Mapping, yaml_path: pathlib.Path) -> str | None:
    """The folder holding metadata/ and audio/, from data.weak_tsv (…/metadata/train/weak.tsv)."""
    weak_tsv = _get(conf, "data.weak_tsv")
    if not weak_tsv or "/metadata/" not in str(weak_tsv):
        return None
    root = str(weak_tsv).split("/metadata/")[0]
    return os.path.normpath(_recipe_dir(yaml_path) / root)


def overrides(conf: Mapping, yaml_path: pathlib.Path, embeddings_dir: str | None = None
              ) -> list[tuple[str, Any, str]]:
    """(sedjax field, value, yaml key) for every value of the yaml that sedjax reproduces;
    ConfigConversionError for one it cannot."""
    out: list[tuple[str, Any, str]] = []

    def put(field: str, key: str, convert=lambda v: v) -> None:
        value = _get(conf, key)
        if value is not None:
            out.append((field, convert(value), key))

    _require(conf, "training.self_sup_loss", ("mse",), "sedjax's mean teacher uses MSE")
    _require(conf, "training.mixup", ("soft", None), "sedjax mixes with soft labels")
    _require(conf, "training.gradient_clip", (0, 0.0), "sedjax does not clip gradients")
    _require(conf, "training.accumulate_batches", (1,), "one batch per update")
    _require(conf, "training.validation_interval", (1,), "sedjax validates every epoch")
    _require(conf, "training.precision", (32,), "float32 parameters; bfloat16 compute is "
             "model.dtype")
    _require(conf, "scaler.statistic", ("instance",), "sedjax's DESED features scale each clip")
    _require(conf, "scaler.normtype", ("minmax",), "features.scaler 'instance_minmax'")
    _require(conf, "net.activation", ("glu",), "the DESED CRNN's gate")
    _require(conf, "net.rnn_type", ("BGRU",), "a bidirectional GRU")
    _require(conf, "net.n_in_channel", (1,), "one log-mel channel")
    _require(conf, "net.dropout_recurrent", (0, 0.0), "no dropout between GRU layers")
    _require(conf, "net.aggregation_type", ("pool1d",), "embeddings average-pooled to the "
             "CNN's frames")
    _require(conf, "net.embedding_type", ("frame",), "frame embeddings")
    _require(conf, "pretrained.e2e", (False,), "a frozen encoder: embeddings extracted before")
    if list(_get(conf, "scaler.dims", [1, 2])) != [1, 2]:
        raise ConfigConversionError(f"scaler.dims: {_get(conf, 'scaler.dims')!r} has no sedjax "
                                    "equivalent (each clip scaled over frames and bands)")
    for key, want in (("net.kernel_size", 3), ("net.padding", 1), ("net.stride", 1)):
        values = _get(conf, key)
        if values is not None and set(values) != {want}:
            raise ConfigConversionError(f"{key}: {values!r} has no sedjax equivalent (every "
                                        f"block's is {want})")
    if _get(conf, "net.nclass", 10) != 10:
        raise ConfigConversionError(f"net.nclass: {_get(conf, 'net.nclass')!r}: sedjax's DESED "
                                    "configs have DESED's 10 classes (set data.classes)")
    rate = _get(conf, "feats.sample_rate")
    if _get(conf, "data.fs") is not None and rate is not None and _get(conf, "data.fs") != rate:
        raise ConfigConversionError(f"data.fs {_get(conf, 'data.fs')} differs from "
                                    f"feats.sample_rate {rate}")

    put("seed", "training.seed", int)
    batches = _get(conf, "training.batch_size")
    if batches is not None:
        if len(batches) != 3:
            raise ConfigConversionError(f"training.batch_size: expected [synth, weak, unlabel], "
                                        f"got {batches!r}")
        strong, weak, unlabeled = (int(b) for b in batches)
        out += [("mean_teacher.batch_strong", strong, "training.batch_size[0]"),
                ("mean_teacher.batch_weak", weak, "training.batch_size[1]"),
                ("mean_teacher.batch_unlabeled", unlabeled, "training.batch_size[2]"),
                ("mean_teacher.steps_per_epoch", DESED_WEAK_TRAIN_CLIPS // weak,
                 f"training.batch_size[1]: DESED's {DESED_WEAK_TRAIN_CLIPS} training weak clips "
                 "// batch (its epoch ends with them)")]
    put("mean_teacher.consistency_weight", "training.const_max", float)
    put("mean_teacher.num_epochs", "training.n_epochs", int)
    epochs, warmup = _get(conf, "training.n_epochs"), _get(conf, "training.n_epochs_warmup")
    if epochs and warmup is not None:
        share = warmup / epochs
        out += [("mean_teacher.consistency_rampup", share, "training.n_epochs_warmup / n_epochs"),
                ("mean_teacher.learning_rate_rampup", share,
                 "training.n_epochs_warmup / n_epochs")]
    put("mean_teacher.early_stopping_patience", "training.early_stop_patience", int)
    put("postprocess.median_filter", "training.median_window", int)
    thresholds = _get(conf, "training.val_thresholds")
    if thresholds is not None:
        if len(thresholds) != 1:
            raise ConfigConversionError(f"training.val_thresholds: {thresholds!r}: sedjax "
                                        "detects events at one threshold")
        out.append(("postprocess.threshold", float(thresholds[0]), "training.val_thresholds"))
    put("mean_teacher.ema_decay", "training.ema_factor", float)
    if _get(conf, "training.weak_split") is not None:
        held_out = round(1.0 - float(_get(conf, "training.weak_split")), 6)
        out.append(("data.weak_held_out", held_out, "1 - training.weak_split"))
    if _get(conf, "training.mixup") is None and "mixup" in (_get(conf, "training") or {}):
        out.append(("mean_teacher.augment.mixup_share", 0.0, "training.mixup: null"))
    put("mean_teacher.learning_rate", "opt.lr", float)

    put("features.n_mels", "feats.n_mels", int)
    put("features.n_fft", "feats.n_filters", int)
    put("features.win_length", "feats.n_window", int)
    put("features.hop_length", "feats.hop_length", int)
    put("features.sample_rate", "feats.sample_rate", int)
    put("features.fmin", "feats.f_min", float)
    put("features.fmax", "feats.f_max", float)
    seconds, hop = _get(conf, "data.audio_max_len"), _get(conf, "feats.hop_length")
    if seconds is not None:
        out.append(("data.clip_seconds", float(seconds), "data.audio_max_len"))
        if hop and rate:
            out.append(("features.num_frames", 1 + int(seconds * rate) // int(hop),
                        "1 + data.audio_max_len * feats.sample_rate // feats.hop_length"))

    dropout = _get(conf, "net.dropout")
    if dropout is not None:
        out += [("model.conv_dropout", float(dropout), "net.dropout"),
                ("model.head_dropout", float(dropout), "net.dropout")]
    put("model.gru_layers", "net.rnn_layers", int)
    put("model.gru_units", "net.n_RNN_cell", int)
    put("model.pooling", "net.attention", lambda a: "attention" if a else "mean")
    put("model.conv_features", "net.nb_filters", lambda v: tuple(int(x) for x in v))
    put("model.pool_sizes", "net.pooling", lambda v: tuple(tuple(int(x) for x in p) for p in v))
    if _get(conf, "net.use_embeddings"):
        folder = embeddings_dir or _get(conf, "pretrained.extracted_embeddings_dir")
        if not folder:
            raise ConfigConversionError("net.use_embeddings: True needs the folder of the "
                                        "extracted embeddings (--embeddings_dir)")
        key = "--embeddings_dir"
        if embeddings_dir is None:  # its extract_embeddings.py writes into <dir>/<model>/
            folder = os.path.normpath(_recipe_dir(yaml_path) / folder
                                      / str(_get(conf, "pretrained.model", "beats")))
            key = ("pretrained.extracted_embeddings_dir / pretrained.model (files named by "
                   "sedjax's splits: weak, unlabel_in_domain, synthetic, validation, test)")
        out.append(("model.embeddings.dir", str(folder), key))
        put("model.embeddings.size", "net.embedding_size", int)

    root = _dataset_root(conf, yaml_path)
    if root is not None:
        out.append(("data.root", root, "data.weak_tsv, up to metadata/"))
    return out


def config_source(yaml_path: str | os.PathLike, embeddings_dir: str | None = None) -> str:
    """The Python source of a config file for the yaml at yaml_path (see the module's doc)."""
    import yaml  # PyYAML, with ml_collections: only this converter reads yaml

    path = pathlib.Path(yaml_path)
    try:
        conf = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigConversionError(f"{path}: {e}") from None
    if not isinstance(conf, Mapping):
        raise ConfigConversionError(f"{path}: not a DESED_task recipe yaml (no mapping at its "
                                    "top)")
    lines = [f'"""DESED_task\'s {path.name} as a sedjax config (python -m sedjax.convert '
             f'desed_task_config {path}).',
             "",
             "Starts from configs/desed_baseline.py (DESED_task's 2023 baseline, value for value)",
             "and sets each value of the yaml; the yaml key is beside each line.",
             '"""',
             "",
             "from configs import desed_baseline",
             "",
             "",
             "def get_config():",
             "    c = desed_baseline.get_config()"]
    for field, value, key in overrides(conf, path, embeddings_dir):
        lines.append(f"    c.{field} = {value!r}  # {key}")
    ignored = [k for k in RUNTIME_ONLY if _get(conf, k) is not None]
    if ignored:
        lines.append(f"    # not used by sedjax (DESED_task's runtime): {', '.join(ignored)}")
    for key, how in OWN_WAY.items():
        if _get(conf, key) is not None:
            lines.append(f"    # {key}: sedjax's own way: {how}")
    lines.append("    return c")
    return "\n".join(lines) + "\n"
