"""sedjax.config.config_files: config files loaded by path (the library never imports `configs`)."""

import os
import pathlib
import subprocess
import sys

import ml_collections
import pytest

import sedjax
from configs import baseline, tiny
from sedjax.config import config_files

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_default_path_is_the_repository_configs():
    assert config_files.default_path("baseline") == REPO / "configs" / "baseline.py"
    assert config_files.default_path("tiny").parent == (
        pathlib.Path(sedjax.__file__).resolve().parents[1] / "configs")


def test_load_equals_get_config():
    c = config_files.load(config_files.default_path("baseline"))
    assert isinstance(c, ml_collections.ConfigDict)
    assert c.to_dict() == baseline.get_config().to_dict()
    # tiny derives from demo, which derives from baseline (`from configs import ...`)
    assert config_files.load(str(config_files.default_path("tiny"))).to_dict() == (
        tiny.get_config().to_dict())


def test_load_by_path_from_elsewhere(tmp_path):
    # Another working directory, no PYTHONPATH: the config's own `from configs import baseline`
    # still resolves (load puts the repository root on sys.path when it is absent).
    code = ("from sedjax.config import config_files; "
            "c = config_files.load(config_files.default_path('tiny')); print(c.data.classes[0])")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Alarm_bell_ringing"


def test_errors_name_the_file(tmp_path):
    missing = tmp_path / "nowhere.py"
    with pytest.raises(config_files.ConfigFileError, match="nowhere.py"):
        config_files.load(missing)
    no_function = tmp_path / "no_function.py"
    no_function.write_text("get_config = 3\n")
    with pytest.raises(config_files.ConfigFileError, match="no_function.py.*get_config"):
        config_files.load(no_function)
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_anywhere\n")
    with pytest.raises(config_files.ConfigFileError, match="broken.py.*no_such_module_anywhere"):
        config_files.load(broken)
    not_a_config = tmp_path / "dict_config.py"
    not_a_config.write_text("def get_config():\n    return {'a': 1}\n")
    with pytest.raises(config_files.ConfigFileError, match="dict_config.py.*ConfigDict"):
        config_files.load(not_a_config)
