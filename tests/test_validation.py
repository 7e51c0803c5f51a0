"""validate(config): each bad value is rejected with a message naming its field, before any work."""

import pathlib
import subprocess
import sys

import pytest

from configs import baseline, demo
from sedjax.config import validate

ROOT = pathlib.Path(__file__).parents[1]


def _config():
    return demo.get_config()


def test_the_shipped_configs_pass():
    validate.validate(baseline.get_config(), 1)
    validate.validate(demo.get_config(), 4)  # batch sizes 16, 32, 128 split over 4 devices


def _set(config, dotted, value):
    *path, last = dotted.split(".")
    node = config
    for part in path:
        node = node[part]
    with node.ignore_type():
        node[last] = value


@pytest.mark.parametrize("field,value", [
    ("recipe", "three_pass"),
    ("data.dataset", "audioset"),
    ("features.frontend", "torchaudio"),
    ("features.spectrogram", "energy"),
    ("model.pooling", "median"),
    ("model.conv_impl", "cudnn"),
    ("model.dtype", "float64"),
    ("runtime.features_on_device", "sometimes"),
    ("data.classes", ()),
    ("data.classes", ("Cat", "Cat")),
    ("data.classes", "Cat"),
    ("postprocess.median_filter", 0),
    ("postprocess.median_filter", (5, 7)),  # not one per class
    ("pass1.batch_size", 0),
    ("model.pool_sizes", ((1, 4), (1, 4))),  # 3 conv blocks
    ("model.pool_sizes", ((1024, 4), (1, 4), (1, 4))),  # no output frame left
])
def test_each_bad_value_is_an_error_naming_its_field(field, value):
    config = _config()
    _set(config, field, value)
    with pytest.raises(validate.ConfigError, match=field.replace(".", r"\.")):
        validate.validate(config, 1)


def test_batch_sizes_must_divide_by_the_device_count():
    config = _config()
    config.pass2.batch_size = 30
    validate.validate(config, 2)
    with pytest.raises(validate.ConfigError, match=r"pass2\.batch_size: 30 .* 4 devices"):
        validate.validate(config, 4)
    config = _config()
    config.runtime.predict_batch_size = 6
    with pytest.raises(validate.ConfigError, match=r"runtime\.predict_batch_size"):
        validate.validate(config, 4)
    config = _config()
    config.features.batch_size = 3  # the frontend's batch is not split over devices
    validate.validate(config, 4)


def test_a_model_size_that_disagrees_with_the_class_list_is_an_error():
    config = _config()
    config.model.num_classes = 10  # an old config that still fixes the output size
    with pytest.raises(validate.ConfigError, match=r"model\.num_classes"):
        validate.validate(config, 1)


def test_per_class_median_filter_lengths_pass():
    config = _config()
    config.postprocess.median_filter = tuple(range(3, 23, 2))  # 10 classes
    validate.validate(config, 1)


def test_main_prints_one_message_not_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sedjax.main", "--config=configs/tiny.py",
         f"--workdir={tmp_path / 'run'}", "--config.model.pooling=median"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "model.pooling" in proc.stderr and "median" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # rejected before any work


@pytest.mark.parametrize("field,value,match", [
    ("mean_teacher.predict_with", "both", r"mean_teacher\.predict_with"),
    ("mean_teacher.batch_weak", -1, r"mean_teacher\.batch_weak"),
    # 6 + 3 + 6 = 15 clips: not divisible by 2 devices
    ("mean_teacher.batch_unlabeled", 3, r"mean_teacher\.batch_weak \+ batch_unlabeled.*15"),
    ("mean_teacher.ema_decay", 1.0, r"mean_teacher\.ema_decay"),
    ("mean_teacher.augment.mixup_share", 1.5, r"mean_teacher\.augment\.mixup_share"),
    ("mean_teacher.augment.time_shift", -4, r"mean_teacher\.augment\.time_shift"),
])
def test_mean_teacher_settings_are_checked(field, value, match):
    from configs import mean_teacher
    config = mean_teacher.get_config()
    validate.validate(config, 2)
    _set(config, field, value)
    with pytest.raises(validate.ConfigError, match=match):
        validate.validate(config, 2)


def test_a_mean_teacher_recipe_without_its_section_is_an_error():
    config = _config()
    config.recipe = "mean_teacher"
    with pytest.raises(validate.ConfigError, match="mean_teacher: recipe"):
        validate.validate(config, 1)


def test_a_missing_dataset_is_one_message_that_says_how_to_get_data(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sedjax.main", "--config=configs/baseline.py",
         f"--workdir={tmp_path / 'run'}", f"--config.data.root={tmp_path / 'nowhere'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert str(tmp_path / "nowhere") in proc.stderr and "configs/demo.py" in proc.stderr
