"""A rerun in a used workdir redoes exactly the stages its changed values feed."""

import json
import os

import numpy as np
import pytest

from configs import baseline, tiny
from sedjax import run
from sedjax.config import config_files, stages
from sedjax.data import prepare


def test_values_are_sorted_into_the_stages_they_feed():
    old = {"seed": 0, "pass2": {"learning_rate": 1e-3}, "postprocess": {
        "median_filter": 51, "tune": {"median_filters": [1, 3]}}, "runtime": {"prefetch": 2}}
    new = {"seed": 0, "pass2": {"learning_rate": 5e-4}, "postprocess": {
        "median_filter": 27, "tune": {"median_filters": [1, 3, 5]}}, "runtime": {"prefetch": 4}}
    changed = stages.changed_values(old, new)
    assert changed == {"pass2.learning_rate": (1e-3, 5e-4),
                       "postprocess.median_filter": (51, 27),
                       "postprocess.tune.median_filters": ([1, 3], [1, 3, 5]),
                       "runtime.prefetch": (2, 4)}
    feeds = {k: stages.feeds_training(k, checkpoint_scores_events=True) for k in changed}
    assert feeds == {"pass2.learning_rate": True, "postprocess.median_filter": True,
                     "postprocess.tune.median_filters": False, "runtime.prefetch": False}
    # a checkpoint chosen on clip F1 does not read the post-processing
    assert not stages.feeds_training("postprocess.median_filter", checkpoint_scores_events=False)
    assert stages.feeds_training("data.synthetic.seed", checkpoint_scores_events=False)


def test_an_older_config_json_gets_the_fields_added_since_as_their_defaults():
    """An older sedjax's config.json lacks the fields added since: upgraded, each has
    configs/baseline.py's value (so a rerun of the same config changes nothing), and every
    value it had is kept."""
    new = json.loads(tiny.get_config().to_json_best_effort())
    old = json.loads(json.dumps(new))
    del old["model"]["fold_batch_norm"], old["model"]["embeddings"]
    del old["runtime"]["compilation_cache"]
    assert set(stages.changed_values(old, new)) == {
        "model.fold_batch_norm", "model.embeddings.dir", "model.embeddings.size",
        "model.embeddings.frames", "model.embeddings.source", "runtime.compilation_cache"}
    upgraded = config_files.upgrade(old)
    assert stages.changed_values(upgraded, new) == {}
    assert upgraded["model"]["embeddings"] == baseline.get_config().model.embeddings.to_dict()
    assert "fold_batch_norm" not in old["model"]  # a copy: the config read stays as it was
    assert config_files.upgrade({"seed": 7, "pass1": {"num_epochs": 3}})["pass1"] == {
        **json.loads(baseline.get_config().pass1.to_json()), "num_epochs": 3}
    with pytest.raises(TypeError):
        config_files.upgrade([1, 2])


def _mtimes(path):
    return {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A tiny two-pass run (pass 2's checkpoint chosen on the validation split's events)."""
    path = tmp_path_factory.mktemp("stages")
    run.train_and_evaluate(tiny.get_config(), path)
    return path


def test_tuned_median_filters_rescore_without_retraining(first, capsys):
    probs = first / "predictions" / "test_probs.npy"
    trained = {p: t for p, t in _mtimes(first).items()
               if "checkpoints" in p.parts or p == probs}
    events = first / "predictions" / "test_events.csv"
    events_written = events.stat().st_mtime_ns
    config = tiny.get_config()
    config.postprocess.tune.median_filters = (3, 5)
    results = run.train_and_evaluate(config, first)
    out = capsys.readouterr().out
    assert "postprocess.tune.median_filters: [] -> [3, 5]); redoing scoring (the trained" in out
    assert {p: t for p, t in _mtimes(first).items() if p in trained} == trained  # untouched
    # scored again with the lengths chosen on validation (whether they change this tiny
    # model's events depends on its probabilities: near-flat ones are left as they were)
    assert events.stat().st_mtime_ns != events_written
    assert json.loads((first / "postprocess.json").read_text())["tuned_on"] == "validation"
    assert results["postprocess"]["tuned_on"] == "validation"
    written = json.loads((first / "config.json").read_text())
    assert written["postprocess"]["tune"]["median_filters"] == [3, 5]
    replaced = list((first / "replaced").iterdir())
    assert [sorted(p.name for p in r.iterdir()) for r in replaced] == [
        ["results.json", "results.txt"]]


def test_a_new_learning_rate_retrains_and_keeps_the_old_outputs(tmp_path, capsys):
    run.train_and_evaluate(tiny.get_config(), tmp_path)
    old_probs = np.load(tmp_path / "predictions" / "test_probs.npy")
    features = _mtimes(tmp_path / "features")
    capsys.readouterr()
    config = tiny.get_config()
    config.pass2.learning_rate = 3e-3
    run.train_and_evaluate(config, tmp_path)
    out = capsys.readouterr().out
    assert "pass2.learning_rate: 0.001 -> 0.003); redoing training and scoring" in out
    new_probs = np.load(tmp_path / "predictions" / "test_probs.npy")
    assert not np.array_equal(old_probs, new_probs)  # trained again, with the new rate
    assert _mtimes(tmp_path / "features") == features  # the features were reused
    (moved,) = (tmp_path / "replaced").iterdir()
    assert {"pass1", "pass2", "predictions", "model", "training.json", "results.json",
            "pseudo_labels.npy"} <= {p.name for p in moved.iterdir()}
    np.testing.assert_array_equal(np.load(moved / "predictions" / "test_probs.npy"), old_probs)
    trained = json.loads((tmp_path / "config.json").read_text())
    assert trained["pass2"]["learning_rate"] == 3e-3


def test_the_same_config_reuses_everything(first, capsys):
    capsys.readouterr()
    before = len(list((first / "replaced").iterdir())) if (first / "replaced").exists() else 0
    config = tiny.get_config()
    config.postprocess.tune.median_filters = (3, 5)  # as the test above left it
    run.train_and_evaluate(config, first)
    assert "the config differs" not in capsys.readouterr().out
    after = len(list((first / "replaced").iterdir())) if (first / "replaced").exists() else 0
    assert after == before


def test_regenerated_synthetic_audio_gets_new_features(tmp_path):
    config = tiny.get_config()
    config.pass1.num_epochs = config.pass2.num_epochs = 1
    run.train_and_evaluate(config, tmp_path)
    first = {p.name for p in (tmp_path / "features").glob("test-*.npy")}
    config.data.synthetic.seed += 1  # other audio under the same file names
    run.train_and_evaluate(config, tmp_path)
    second = {p.name for p in (tmp_path / "features").glob("test-*.npy")}
    assert first and second - first, (first, second)
    assert os.path.exists(tmp_path / "replaced")  # the training on the old audio moved aside


def test_feature_caches_are_keyed_by_where_the_audio_came_from(tmp_path):
    """Real data: the dataset folder (other audio may carry the same names); generated data:
    the generator's settings."""
    config = tiny.get_config()
    config.data.dataset = "dcase2018"
    sources = []
    for root in ("a", "b"):
        config.data.root = str(tmp_path / root)
        sources.append(prepare.audio_source(config, tmp_path / "workdir"))
    assert sources[0] != sources[1]
    config.data.dataset = "synthetic"
    for seed, folder in ((1, "one"), (2, "two")):
        (tmp_path / folder / "synthetic").mkdir(parents=True)
        (tmp_path / folder / "synthetic" / ".complete").write_text(f"seed={seed}")
    one, two = (prepare.audio_source(config, tmp_path / f) for f in ("one", "two"))
    assert one != two
