"""configs/desed_beats.py holds DESED_task's 2023 BEATs system (confs/pretrained.yaml), value
for value: PRETRAINED lists each value pretrained.yaml sets differently from default.yaml beside
the yaml's; every other field is configs/desed_baseline.py's (default.yaml's). With
SEDJAX_DESED_TASK set, the listed yaml values are read from the checkout's pretrained.yaml, the
two yamls are checked to differ in the listed keys only, and pretrained.yaml converted by
`sedjax.convert desed_task_config` gives this config."""

from __future__ import annotations

import json
import os
import pathlib

import jax
import numpy as np
import pytest

from configs import desed_baseline, desed_beats
from sedjax import models
from sedjax.config import validate
from sedjax.interop import beats_checkpoint, desed_task_config
from sedjax.models import beats

# (sedjax field, value, pretrained.yaml key, the yaml's value); None: DESED_task's code, named
# in the last column instead (recipes/dcase2023_task4_baseline)
PRETRAINED = [
    ("mean_teacher.batch_strong", 24, "training.batch_size[0]", 24),
    ("mean_teacher.batch_weak", 24, "training.batch_size[1]", 24),
    ("mean_teacher.batch_unlabeled", 48, "training.batch_size[2]", 48),
    ("mean_teacher.steps_per_epoch", 59, "training.batch_size[1]", 24),  # 1420 weak // 24
    ("model.embeddings.size", 768, "net.embedding_size", 768),
    ("model.embeddings.source", "beats", "pretrained.e2e", False),  # extracted before training
    ("model.beats.size", "checkpoint", "pretrained.model", "beats"),  # BEATs_iter3_plus_AS2M
    ("model.arch", "desed_crnn", "net.aggregation_type", "pool1d"),  # desed_crnn's join
    ("model.embeddings.frames", 496, None, "extract_embeddings.py: frame_embeddings "
     "(N, 768, 496)"),
    ("model.beats.padding_mask_rule", "none", None,
     "extract_embeddings.py: BEATsModel.forward = extract_features(x), no padding mask"),
    ("data.clip_seconds", 10.0, None, "extract_embeddings.py: WavDataset(pad_to=10)"),
]
# every key in which pretrained.yaml differs from default.yaml, and where PRETRAINED has it
YAML_DIFFERENCES = {
    "training.batch_size": "mean_teacher.batch_*, steps_per_epoch",
    "training.batch_size_val": "sedjax's own evaluation batches (a runtime value)",
    "net.use_embeddings": "model.embeddings.source",
    "net.embedding_size": "model.embeddings.size",
    "net.embedding_type": "'frame': the tokens, model.embeddings.frames",
    "net.aggregation_type": "'pool1d', desed_crnn's join",
    "pretrained": "model.embeddings.source, model.beats.*",
}
CHANGED = {f for f, *_ in PRETRAINED} | {"model.embeddings.dir", "model.beats.checkpoint",
                                         "model.beats.dtype"}


def _get(config, dotted):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("field,value,key,yaml_value", PRETRAINED,
                         ids=[p[0] for p in PRETRAINED])
def test_value_equals_pretrained_yamls(field, value, key, yaml_value):
    assert _get(desed_beats.get_config(), field) == value, (key, yaml_value)


def test_steps_per_epoch_as_desed_task_counts_them():
    c = desed_beats.get_config().mean_teacher
    assert c.steps_per_epoch == desed_task_config.DESED_WEAK_TRAIN_CLIPS // c.batch_weak == 59


def test_everything_else_is_desed_baselines():
    """default.yaml's values where pretrained.yaml keeps them: every other field equal."""
    ours = dict(validate.leaf_fields(desed_beats.get_config()))
    base = dict(validate.leaf_fields(desed_baseline.get_config()))
    assert ours.keys() == base.keys()
    differ = {k for k in ours if ours[k] != base[k]}
    assert differ <= CHANGED
    # what pretrained.yaml changes does change (the baseline reads no embeddings)
    assert {"mean_teacher.batch_weak", "model.embeddings.source"} <= differ
    assert base["model.embeddings.dir"] == "" and base["model.embeddings.source"] == "files"


def test_crnn_with_embeddings_has_desed_tasks_size():
    """DESED_task's CRNN(**pretrained.yaml's net): 1,112,420 parameters + cat_tf, a Linear of
    128 + 768 -> 128 (tests/test_desed_crnn.py counts them)."""
    config = desed_beats.get_config()
    model = models.from_config(config.model, len(config.data.classes))
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.PRNGKey(0), np.zeros((1, config.features.num_frames, 128), np.float32),
        train=False, embeddings=np.zeros((1, config.model.embeddings.frames,
                                          config.model.embeddings.size), np.float32)))
    assert models.count_params(shapes["params"]) == 1_112_420 + (128 + 768) * 128 + 128


def stand_in_checkpoint(folder: pathlib.Path, config: beats.BeatsConfig) -> str:
    """A converted checkpoint as validation reads it: the file, and its BEATs config beside
    (the weights are read when the embeddings are computed, not by validation)."""
    out = folder / "beats_as2m.msgpack"
    out.write_bytes(b"")
    beats_checkpoint.config_path(out).write_text(
        json.dumps(beats_checkpoint.config_dict(config)))
    return str(out)


def test_validates_with_a_converted_checkpoint(tmp_path):
    config = desed_beats.get_config()
    config.model.beats.checkpoint = stand_in_checkpoint(tmp_path, beats.BeatsConfig())
    validate.validate(config, num_devices=1)
    validate.validate(config, num_devices=4)  # 24 + 24 + 48 clips over 4 devices


def test_without_a_checkpoint_one_line_says_to_convert_it():
    with pytest.raises(validate.ConfigError) as error:
        validate.validate(desed_beats.get_config(), num_devices=1)
    message = str(error.value)
    assert "\n" not in message and message.startswith("model.beats.checkpoint: ")
    assert "python -m sedjax.convert beats CKPT OUT" in message


def test_a_checkpoint_of_another_width_is_one_line(tmp_path):
    """A BEATs whose tokens are not pretrained.yaml's 768 wide (the tiny one here)."""
    config = desed_beats.get_config()
    config.model.beats.checkpoint = stand_in_checkpoint(tmp_path, beats.BeatsConfig.tiny())
    with pytest.raises(validate.ConfigError, match=r"^model\.embeddings\.size: .*768"):
        validate.validate(config, num_devices=1)


def test_pre_extracted_files_instead(tmp_path):
    """source 'files' with a folder: no checkpoint needed."""
    config = desed_beats.get_config()
    config.model.embeddings.source = "files"
    config.model.embeddings.dir = str(tmp_path)
    validate.validate(config, num_devices=1)


# ---------------------------------------------------------------------------- DESED_task's yamls
@pytest.fixture(scope="module")
def yamls():
    """(default.yaml, pretrained.yaml) of $SEDJAX_DESED_TASK's 2023 recipe, parsed."""
    root = os.environ.get("SEDJAX_DESED_TASK")
    if not root:
        pytest.skip("set SEDJAX_DESED_TASK=/path/to/DESED_task to read its pretrained.yaml")
    yaml = pytest.importorskip("yaml")
    confs = pathlib.Path(root).expanduser() / "recipes" / "dcase2023_task4_baseline" / "confs"
    return tuple(yaml.safe_load((confs / name).read_text())
                 for name in ("default.yaml", "pretrained.yaml"))


def _yaml_value(conf, key):
    node = conf
    for part in key.split("."):
        index = None
        if part.endswith("]"):
            part, index = part[:-1].split("[")
        node = node[part] if index is None else node[part][int(index)]
    return node


@pytest.mark.parametrize("field,value,key,yaml_value", [p for p in PRETRAINED if p[2]],
                         ids=[p[0] for p in PRETRAINED if p[2]])
def test_listed_values_are_the_yamls(yamls, field, value, key, yaml_value):
    _, pretrained = yamls
    assert _yaml_value(pretrained, key) == yaml_value
    assert pretrained["net"]["use_embeddings"] is True
    assert pretrained["pretrained"]["freezed"] is True


def test_the_yamls_differ_only_in_the_listed_keys(yamls):
    default, pretrained = yamls

    def leaves(conf, prefix=""):
        out = {}
        for k, v in conf.items():
            out.update(leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out
    a, b = leaves(default), leaves(pretrained)
    differ = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    covered = {k for k in differ if any(k == d or k.startswith(d + ".")
                                        for d in YAML_DIFFERENCES)}
    assert differ == covered, sorted(differ - covered)
    assert b["net.embedding_type"] == "frame" and b["net.aggregation_type"] == "pool1d"


def test_converted_pretrained_yaml_is_this_config(yamls, tmp_path):
    """sedjax.convert desed_task_config's values of pretrained.yaml, on configs/desed_baseline.py
    (as the files it writes): this config's every field, but the embeddings read from
    DESED_task's extracted files (the yaml's e2e False) instead of computed, and the data
    where the yaml points."""
    _, pretrained = yamls
    root = pathlib.Path(os.environ["SEDJAX_DESED_TASK"]).expanduser()
    path = root / "recipes" / "dcase2023_task4_baseline" / "confs" / "pretrained.yaml"
    config = desed_baseline.get_config()
    for field, value, _ in desed_task_config.overrides(pretrained, path):
        node = config
        *parents, leaf = field.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    ours = dict(validate.leaf_fields(desed_beats.get_config()))
    converted = dict(validate.leaf_fields(config))
    differ = {k for k in ours if ours[k] != converted[k]}
    assert differ == {"data.root", "model.embeddings.dir", "model.embeddings.source"}
    assert converted["model.embeddings.dir"].endswith("embeddings/beats")
    assert converted["model.embeddings.source"] == "files"
