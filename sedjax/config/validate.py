"""validate(config): every choice and size checked before any work, each error naming its field."""

from __future__ import annotations

import math

from collections.abc import Sequence

from sedjax import models, recipes
from sedjax.data import beats_embeddings, split_roles
from sedjax.metrics import tuning
from sedjax.models import dropout, kernels, layers, time_grid
from sedjax.system.cli import ConfigError

CHOICES = {  # field -> allowed values (config.recipe: any registered recipe, checked below)
    "data.dataset": ("dcase2018", "desed", "synthetic"),
    "data.synthetic.layout": ("dcase2018", "desed"),
    "data.split_roles": split_roles.CHOICES,
    "features.frontend": ("jax", "librosa"),
    "features.spectrogram": ("magnitude", "power"),
    "features.pad_mode": ("reflect", "constant"),
    "features.log": ("natural", "db"),
    "features.scaler": ("dataset", "instance_minmax"),
    "model.arch": models.ARCHS,
    "postprocess.tune.method": tuning.METHODS,
    "postprocess.tune.metric": tuning.METRICS,
    "model.pooling": layers.POOLINGS,
    "model.conv_impl": layers.CONV_IMPLS,
    "model.dtype": ("float32", "bfloat16", "float16"),
    "runtime.features_on_device": ("auto", "always", "never"),
    "model.embeddings.source": beats_embeddings.SOURCES,
    "model.beats.size": beats_embeddings.SIZES,
    "model.beats.padding_mask_rule": beats_embeddings.PADDING_MASK_RULES,
    "model.beats.dtype": beats_embeddings.DTYPES,
}
# batch sizes split over the devices (features.batch_size is the frontend's, not sharded)
_NOT_SHARDED = ("features.batch_size", "model.beats.batch_size")


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        if part not in node:
            raise ConfigError(f"{dotted}: missing from the config")
        node = node[part]
    return node


def leaf_fields(config, prefix: str = ""):
    """Yields (dotted name, value) of every leaf of a ConfigDict / mapping."""
    for key in config:
        value = config[key]
        name = f"{prefix}{key}"
        if hasattr(value, "keys"):  # a ConfigDict or a mapping
            yield from leaf_fields(value, name + ".")
        else:
            yield name, value


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
    return value


def validate(config, num_devices: int = 1) -> None:
    """Raises ConfigError for the first value that cannot work on `num_devices` devices."""
    if _get(config, "recipe") not in recipes.names():
        raise ConfigError(f"recipe: unknown value {config.recipe!r}; choose one of "
                          f"{', '.join(map(repr, recipes.names()))}")
    for field, allowed in CHOICES.items():
        value = _get(config, field)
        if value not in allowed:
            raise ConfigError(f"{field}: unknown value {value!r}; choose one of "
                              f"{', '.join(map(repr, allowed))}")
    _check_runs(config)
    _check_data(config)
    classes = _check_classes(config)
    for name, value in leaf_fields(config):
        if name.split(".")[-1].endswith("batch_size") and name not in _NOT_SHARDED:
            if _positive_int(name, value) % num_devices:
                raise ConfigError(f"{name}: {value} is not divisible by the {num_devices} "
                                  f"devices the batch is split over")
    _check_model(config)
    _check_features(config)
    _check_resample_copy(config)
    _check_frame_labels(config)
    recipes.get(config.recipe).check(config, num_devices)
    _check_postprocess(config, classes)
    _check_schedules(config)


def _check_schedules(config) -> None:
    """Every section's num_epochs a positive integer, its learning_rate a positive number."""
    for name, value in leaf_fields(config):
        last = name.split(".")[-1]
        if last == "num_epochs":
            _positive_int(name, value)
        elif last == "learning_rate" and (
                isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value <= 0):
            raise ConfigError(f"{name}: expected a positive learning rate, got {value!r}")


def _check_runs(config) -> None:
    num_runs = _positive_int("num_runs", _get(config, "num_runs"))
    for name, rates in leaf_fields(config):
        if name.endswith(".learning_rates") and rates != ():
            if (isinstance(rates, str) or not isinstance(rates, Sequence)
                    or len(rates) != num_runs or not all(
                        isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0
                        for r in rates)):
                raise ConfigError(f"{name}: expected {num_runs} positive learning rates, one "
                                  f"per run (num_runs), got {rates!r}")


def _check_data(config) -> None:
    held_out = _get(config, "data.weak_held_out")
    if (isinstance(held_out, bool) or not isinstance(held_out, (int, float))
            or not 0.0 <= held_out < 1.0):
        raise ConfigError(f"data.weak_held_out: expected a share in [0, 1), got {held_out!r}")
    s = _get(config, "data.synthetic")
    n = s.num_synth_validation
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"data.synthetic.num_synth_validation: expected an integer >= 0, "
                          f"got {n!r}")
    if config.data.dataset == "synthetic":
        if n and s.layout != "desed":
            raise ConfigError("data.synthetic.num_synth_validation: DESED's synthetic "
                              "validation set needs data.synthetic.layout 'desed'")
        layout = s.layout
    else:
        layout = config.data.dataset
    if config.data.split_roles == split_roles.DESED_TASK and layout != "desed":
        raise ConfigError(f"data.split_roles: 'desed_task' needs a DESED-layout dataset "
                          f"(data.dataset 'desed', or 'synthetic' with layout 'desed'), not "
                          f"{layout!r}")


def _check_classes(config) -> Sequence[str]:
    classes = _get(config, "data.classes")
    if (isinstance(classes, str) or not isinstance(classes, Sequence) or not classes
            or not all(isinstance(c, str) and c for c in classes)):
        raise ConfigError(f"data.classes: expected a non-empty tuple of class names, "
                          f"got {classes!r}")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"data.classes: repeated class names in {classes!r}")
    return classes


def _check_model(config) -> None:
    model = config.model
    if "num_classes" in model:
        raise ConfigError("model.num_classes: the model's output size follows data.classes; "
                          "remove the field")
    if len(model.pool_sizes) != len(model.conv_features):
        raise ConfigError(f"model.pool_sizes: {len(model.pool_sizes)} pool sizes for "
                          f"{len(model.conv_features)} conv blocks")
    for p in model.pool_sizes:
        if len(p) != 2:
            raise ConfigError(f"model.pool_sizes: expected (time, frequency) pairs, got {p!r}")
        _positive_int("model.pool_sizes", p[0]), _positive_int("model.pool_sizes", p[1])
    if time_grid.output_frames(config.features.num_frames, model) < 1:
        raise ConfigError(f"model.pool_sizes: time pooling x{time_grid.time_pooling(model)} leaves "
                          f"no output frame of {config.features.num_frames} input frames")
    _check_kernels(config)
    if model.embeddings.source == "files" and model.embeddings.dir and (
            model.arch != "desed_crnn"):
        raise ConfigError(f"model.embeddings.dir: pre-extracted embeddings need model.arch "
                          f"'desed_crnn', not {model.arch!r}")
    _check_beats_fields(model.beats)
    if model.embeddings.source == "beats":
        check_beats(config)
    if model.beats.trainable:
        _check_trainable_beats(config)


def _check_trainable_beats(config) -> None:
    """Fine-tuning BEATs (model.beats.trainable): sedjax's encoder, no padding mask."""
    b = config.model.beats
    if config.model.embeddings.source != "beats":
        raise ConfigError(f"model.beats.trainable: fine-tuning BEATs needs "
                          f"model.embeddings.source 'beats' (sedjax's encoder), not "
                          f"{config.model.embeddings.source!r}")
    if b.padding_mask_rule != "none":
        raise ConfigError(f"model.beats.padding_mask_rule: a trained encoder reads each clip "
                          f"zero-padded to data.clip_seconds without a mask: set 'none', not "
                          f"{b.padding_mask_rule!r}")


def _check_beats_fields(b) -> None:
    if isinstance(b.seed, bool) or not isinstance(b.seed, int):
        raise ConfigError(f"model.beats.seed: expected an integer, got {b.seed!r}")
    if not isinstance(b.checkpoint, str):
        raise ConfigError(f"model.beats.checkpoint: expected a file name or '', got "
                          f"{b.checkpoint!r}")
    _positive_int("model.beats.batch_size", b.batch_size)
    if not isinstance(b.trainable, bool):
        raise ConfigError(f"model.beats.trainable: expected True or False, got {b.trainable!r}")
    rate = b.learning_rate
    if (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate)
            or rate <= 0):
        raise ConfigError(f"model.beats.learning_rate: expected a positive learning rate, got "
                          f"{rate!r}")
    decay = b.layer_decay
    if (isinstance(decay, bool) or not isinstance(decay, (int, float))
            or not 0.0 < decay <= 1.0):
        raise ConfigError(f"model.beats.layer_decay: expected a factor in (0, 1], got "
                          f"{decay!r}")


def check_beats(config, for_model: bool = True) -> None:
    """The encoder of model.beats (its checkpoint file and architecture), when it is used:
    for_model (model.embeddings.source 'beats': its tokens must also fit model.embeddings'
    size and frames) or by `python -m sedjax.embed` (for_model=False)."""
    b = config.model.beats
    _check_beats_fields(b)
    e = config.model.embeddings
    if for_model:
        if config.model.arch != "desed_crnn":
            raise ConfigError(f"model.embeddings.source: frame embeddings need model.arch "
                              f"'desed_crnn', not {config.model.arch!r}")
        if e.dir:
            raise ConfigError(f"model.embeddings.dir: {e.dir!r} is not read when "
                              "model.embeddings.source is 'beats' (sedjax computes them); "
                              "set one of the two")
    try:
        arch = beats_embeddings.architecture(b)
    except beats_embeddings.BeatsSetupError as error:
        raise ConfigError(str(error)) from None
    tokens = beats_embeddings.num_tokens(config, arch)
    if tokens < 1:
        raise ConfigError(f"data.clip_seconds: {config.data.clip_seconds} s is too short for "
                          f"one BEATs token row ({arch.input_patch_size} frames of 10 ms)")
    if for_model and e.size != arch.encoder_embed_dim:
        raise ConfigError(f"model.embeddings.size: BEATs ({b.checkpoint or b.size}) gives "
                          f"{arch.encoder_embed_dim} values per token, not {e.size}")
    if for_model and e.frames != tokens:
        raise ConfigError(f"model.embeddings.frames: BEATs gives {tokens} tokens per clip of "
                          f"data.clip_seconds = {config.data.clip_seconds} s, not {e.frames}")


def _check_kernels(config) -> None:
    # the CPU kernels' settings (sedjax.models.kernels): each takes 'auto'
    fold = _get(config, "model.fold_batch_norm")
    if not isinstance(fold, bool) and fold != kernels.AUTO:
        raise ConfigError(f"model.fold_batch_norm: expected True, False or 'auto', got {fold!r}")
    chunk = _get(config, "model.first_block_chunk_frames")
    if chunk != kernels.AUTO and (not isinstance(chunk, int) or isinstance(chunk, bool)
                                  or chunk < 0):
        raise ConfigError(f"model.first_block_chunk_frames: expected a number of frames >= 0 "
                          f"(0: the first block whole) or 'auto', got {chunk!r}")
    masks = _get(config, "model.dropout_masks")
    if masks not in (*dropout.MASKS, kernels.AUTO):
        raise ConfigError(f"model.dropout_masks: unknown value {masks!r}; choose one of "
                          f"{', '.join(map(repr, (*dropout.MASKS, kernels.AUTO)))}")


def _check_resample_copy(config) -> None:
    # optional (only the DESED configs set it): what the resample cache writes
    from sedjax.data import resample
    copy = config.data.get("resample_copy", resample.FLOAT)
    if copy not in resample.COPIES:
        raise ConfigError(f"data.resample_copy: unknown value {copy!r}; choose one of "
                          f"{', '.join(map(repr, resample.COPIES))}")


def _check_frame_labels(config) -> None:
    # optional (only the DESED configs set it): the rule of sedjax.data.dataset.strong_labels
    from sedjax.data import dataset
    rule = config.data.get("frame_labels", dataset.DEFAULT_FRAME_LABELS)
    if rule not in dataset.FRAME_LABELS:
        raise ConfigError(f"data.frame_labels: unknown value {rule!r}; choose one of "
                          f"{', '.join(map(repr, dataset.FRAME_LABELS))}")


def _check_features(config) -> None:
    # optional (only the DESED configs set it): DESED_task's zero padding of every clip
    pad = config.features.get("pad_to_num_frames", False)
    if not isinstance(pad, bool):
        raise ConfigError(f"features.pad_to_num_frames: expected True or False, got {pad!r}")
    if pad and not config.features.center:
        raise ConfigError("features.pad_to_num_frames: needs features.center (a clip padded to "
                          "(num_frames - 1) * hop_length samples gives num_frames centred frames)")


def _check_postprocess(config, classes: Sequence[str]) -> None:
    if config.postprocess.tune.method == "csebbs":
        from sedjax.metrics import csebbs
        if not csebbs.available():
            raise ConfigError("postprocess.tune.method: 'csebbs' needs the optional package "
                              f"sebbs (AGPL-3.0): {csebbs.INSTALL}")
    median = config.postprocess.median_filter
    if isinstance(median, Sequence) and not isinstance(median, str):
        if len(median) != len(classes):
            raise ConfigError(f"postprocess.median_filter: {len(median)} lengths for "
                              f"{len(classes)} classes")
        for m in median:
            _positive_int("postprocess.median_filter", m)
    else:
        _positive_int("postprocess.median_filter", median)
