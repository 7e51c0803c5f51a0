"""DESED_task's own recipe yamls converted by `python -m sedjax.convert desed_task_config`:
confs/default.yaml gives configs/desed_baseline.py field for field; pretrained.yaml its
embeddings system (BEATs embeddings from DESED_task's folder, batches of 24 / 24 / 48)."""

from __future__ import annotations

from configs import desed_baseline
from sedjax import convert
from sedjax.config import config_files, validate

from .conftest import import_desed_task

import_desed_task()


def _convert(yaml_path, tmp_path):
    out = tmp_path / f"{yaml_path.stem}.py"
    assert convert.main(["desed_task_config", str(yaml_path), f"--out={out}"]) == 0
    return config_files.load(out)


def test_default_yaml_is_desed_baseline(desed_task_root, tmp_path):
    recipe = desed_task_root / "recipes" / "dcase2023_task4_baseline"
    converted = dict(validate.leaf_fields(_convert(recipe / "confs" / "default.yaml", tmp_path)))
    expected = dict(validate.leaf_fields(desed_baseline.get_config()))
    assert converted.pop("data.root") == str(desed_task_root / "data" / "dcase" / "dataset")
    expected.pop("data.root")
    differ = {k: (converted.get(k), expected.get(k)) for k in expected.keys() | converted.keys()
              if converted.get(k) != expected.get(k)}
    print(f"\nconfs/default.yaml -> sedjax config: {len(converted)} fields, "
          f"{len(differ)} differ from configs/desed_baseline.py")
    assert not differ


def test_pretrained_yaml_is_the_embeddings_system(desed_task_root, tmp_path):
    recipe = desed_task_root / "recipes" / "dcase2023_task4_baseline"
    config = _convert(recipe / "confs" / "pretrained.yaml", tmp_path)
    mt = config.mean_teacher
    assert (mt.batch_strong, mt.batch_weak, mt.batch_unlabeled) == (24, 24, 48)
    assert config.model.embeddings.dir == str(recipe / "embeddings" / "beats")
    assert config.model.embeddings.size == 768
