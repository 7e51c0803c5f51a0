"""`python -m sedjax.convert desed_task_config YAML`: a DESED_task recipe yaml as a sedjax config.

A yaml with DESED_task 2023's default values gives configs/desed_baseline.py field for field
(tests/parity/test_config.py does it on DESED_task's own confs/default.yaml); a changed value
reaches its sedjax field; a value sedjax cannot reproduce stops with one line naming the key.
"""

from __future__ import annotations

import copy
import pathlib

import pytest
import yaml

from configs import desed_baseline
from sedjax import convert
from sedjax.config import config_files, validate
from sedjax.interop import desed_task_config

# DESED_task 2023's confs/default.yaml, the values sedjax reads (tests/test_desed_config.py
# lists each beside configs/desed_baseline.py)
DEFAULT = {
    "training": {"batch_size": [12, 12, 24], "batch_size_val": 24, "const_max": 2,
                 "n_epochs_warmup": 50, "num_workers": 6, "n_epochs": 200,
                 "early_stop_patience": 200, "accumulate_batches": 1, "gradient_clip": 0.0,
                 "median_window": 7, "val_thresholds": [0.5], "n_test_thresholds": 50,
                 "ema_factor": 0.999, "self_sup_loss": "mse", "backend": "dp",
                 "validation_interval": 1, "weak_split": 0.9, "seed": 42,
                 "deterministic": False, "precision": 32, "mixup": "soft",
                 "obj_metric_synth_type": "intersection", "enable_progress_bar": True},
    "scaler": {"statistic": "instance", "normtype": "minmax", "dims": [1, 2],
               "savepath": "./scaler.ckpt"},
    "data": {"weak_tsv": "../../data/dcase/dataset/metadata/train/weak.tsv",
             "audio_max_len": 10, "fs": 16000, "net_subsample": 4},
    "opt": {"lr": 0.001},
    "feats": {"n_mels": 128, "n_filters": 2048, "hop_length": 256, "n_window": 2048,
              "sample_rate": 16000, "f_min": 0, "f_max": 8000},
    "net": {"dropout": 0.5, "rnn_layers": 2, "n_in_channel": 1, "nclass": 10,
            "attention": True, "n_RNN_cell": 128, "activation": "glu", "rnn_type": "BGRU",
            "kernel_size": [3] * 7, "padding": [1] * 7, "stride": [1] * 7,
            "nb_filters": [16, 32, 64, 128, 128, 128, 128],
            "pooling": [[2, 2], [2, 2], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2]],
            "dropout_recurrent": 0, "use_embeddings": False},
}


def _convert(tmp_path: pathlib.Path, conf: dict, *flags: str) -> tuple[int, pathlib.Path]:
    recipe = tmp_path / "recipe"
    (recipe / "confs").mkdir(parents=True, exist_ok=True)
    path = recipe / "confs" / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    out = tmp_path / "converted.py"
    return convert.main(["desed_task_config", str(path), f"--out={out}", *flags]), out


def test_default_yaml_gives_desed_baseline(tmp_path):
    status, out = _convert(tmp_path, DEFAULT)
    assert status == 0
    converted = dict(validate.leaf_fields(config_files.load(out)))
    expected = dict(validate.leaf_fields(desed_baseline.get_config()))
    # the data folder is where the yaml's relative paths point, from the recipe folder
    root = (tmp_path / "recipe").resolve().parent.parent / "data" / "dcase" / "dataset"
    assert converted.pop("data.root") == str(root)
    expected.pop("data.root")
    assert converted == expected
    text = out.read_text()
    assert "c.mean_teacher.batch_weak = 12  # training.batch_size[1]" in text
    assert "training.num_workers" in text  # listed as not used


def test_changed_values_reach_their_fields(tmp_path):
    conf = copy.deepcopy(DEFAULT)
    conf["training"].update(batch_size=[6, 10, 12], n_epochs=40, n_epochs_warmup=10,
                            weak_split=0.8, median_window=5)
    conf["opt"]["lr"] = 0.003
    conf["net"].update(attention=False, n_RNN_cell=64)
    status, out = _convert(tmp_path, conf)
    config = config_files.load(out)
    assert status == 0
    mt = config.mean_teacher
    assert (mt.batch_strong, mt.batch_weak, mt.batch_unlabeled) == (6, 10, 12)
    assert mt.steps_per_epoch == desed_task_config.DESED_WEAK_TRAIN_CLIPS // 10
    assert mt.num_epochs == 40 and mt.consistency_rampup == mt.learning_rate_rampup == 0.25
    assert mt.learning_rate == 0.003 and config.data.weak_held_out == pytest.approx(0.2)
    assert config.postprocess.median_filter == 5
    assert config.model.pooling == "mean" and config.model.gru_units == 64
    validate.validate(config, num_devices=1)


def test_embeddings_system(tmp_path):
    conf = copy.deepcopy(DEFAULT)
    conf["pretrained"] = {"model": "beats", "e2e": False, "freezed": True,
                          "extracted_embeddings_dir": "./embeddings"}
    conf["net"].update(use_embeddings=True, embedding_size=768, embedding_type="frame",
                       aggregation_type="pool1d")
    status, out = _convert(tmp_path, conf)
    config = config_files.load(out)
    assert status == 0
    assert config.model.embeddings.dir == str((tmp_path / "recipe").resolve() / "embeddings"
                                              / "beats")
    assert config.model.embeddings.size == 768


@pytest.mark.parametrize("section,key,value", [
    ("training", "self_sup_loss", "bce"), ("training", "gradient_clip", 5.0),
    ("scaler", "statistic", "dataset"), ("net", "kernel_size", [3, 3, 5, 3, 3, 3, 3]),
    ("net", "nclass", 11)])
def test_a_value_sedjax_cannot_reproduce_is_one_error_line(tmp_path, capsys, section, key,
                                                            value):
    conf = copy.deepcopy(DEFAULT)
    conf[section][key] = value
    status, out = _convert(tmp_path, conf)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and not out.exists()
    assert len(err) == 1 and err[0].startswith(f"error: {section}.{key}: "), err


def test_printed_without_out(tmp_path, capsys):
    path = tmp_path / "default.yaml"
    path.write_text(yaml.safe_dump(DEFAULT))
    assert convert.main(["desed_task_config", str(path)]) == 0
    assert "def get_config():" in capsys.readouterr().out
