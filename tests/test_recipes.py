"""A recipe is one module plus its config: a throwaway third recipe, built here and nowhere else,
registers itself and runs end to end through the shared stages (sedjax.run) at tiny size."""

import dataclasses
import json

import jax
import ml_collections
import numpy as np
import pytest

from configs import tiny
from sedjax import recipes, run
from sedjax.config import validate
from sedjax.config.validate import ConfigError
from sedjax.metrics import clip_scores
from sedjax.recipes import common
from sedjax.reporting import outputs, summary
from sedjax.system import sharding
from sedjax.train import loop, state as state_lib, streams

NAME = "throwaway_clip"  # clip-level BCE on the weak clips, one stage


def check(config, num_devices: int) -> None:
    if config[NAME].num_epochs < 1:
        raise ConfigError(f"{NAME}.num_epochs: expected at least 1, got "
                          f"{config[NAME].num_epochs}")


def train_step(state, batch):
    """Per-device step: BCE of the clip labels against the clip output."""
    rng = state_lib.step_key(state)

    def loss_fn(params):
        (_, clip), batch_stats = state_lib.apply_train(state, params, batch["features"], rng)
        loss = state_lib.bce(clip, batch["labels"], 1e-7).mean()
        return loss, (batch_stats, {})
    return state_lib.gradient_step(state, loss_fn, batch["features"].shape[0])


def train(inputs: common.Inputs) -> common.Trained:
    section, runs = inputs.config[NAME], inputs.runs
    batches = inputs.run_batches("weak")
    rows = np.arange(len(batches.arrays))
    step_fn = runs.train_step_fn(train_step, batches)

    def train_epoch(state, epoch, resume):
        orders = [streams.numpy_rng(c.seed, NAME, "order", counter=epoch).permutation(rows)
                  for c in runs.configs]
        return runs.run_epoch(step_fn, batches, orders, section.batch_size, state, resume)

    def validate_clips(state):  # the weak clips themselves: a throwaway rule
        probs = runs.predict(common.eval_fn("clip", batches), state, batches,
                             [rows] * runs.count, section.batch_size)
        return [clip_scores.macro_f1(p, batches.arrays.labels, 0.5) for p in probs]

    state = runs.state(lambda c: common.init_state(c, NAME))
    state, records = loop.fit(NAME, state, section.num_epochs, loop.EarlyStopping(5, 0.0, 0),
                              train_epoch, validate_clips, inputs.workdir / NAME, inputs.writer)
    for d, r in zip(inputs.run_dirs, records):
        if sharding.is_primary():
            outputs.write_json(d / NAME / "result.json", dataclasses.asdict(r))
    return common.Trained(state, [summary.TrainingSummary(
        NAME, {NAME: summary.StageSummary(r.best_score, r.best_epoch)}) for r in records])


def throwaway_config(num_epochs=2):
    c = tiny.get_config()
    c.recipe = NAME
    c[NAME] = ml_collections.ConfigDict(dict(
        learning_rate=1e-3, adam_b1=0.9, adam_b2=0.999, adam_eps=1e-7,
        num_epochs=num_epochs, batch_size=8))
    return c


@pytest.fixture(scope="module")
def registered():
    recipe = recipes.register(recipes.Recipe(NAME, train, sections=(NAME,), stages=(NAME,),
                                             check=check))
    yield recipe
    recipes._REGISTERED.pop(NAME)


def test_an_unregistered_recipe_is_a_config_error_listing_the_known_ones():
    with pytest.raises(ConfigError, match=r"recipe: unknown value 'throwaway_clip'.*two_pass"):
        validate.validate(throwaway_config())


def test_the_recipes_own_checks_run_in_validate(registered):
    validate.validate(throwaway_config())
    with pytest.raises(ConfigError, match=f"{NAME}.num_epochs: expected at least 1"):
        validate.validate(throwaway_config(num_epochs=0))


def test_a_third_recipe_runs_end_to_end(registered, tmp_path):
    result = run.train_and_evaluate(throwaway_config(), tmp_path)
    assert result["recipe"] == NAME
    assert result["test"]["event_based"]["f_measure_macro"] is not None
    written = json.loads((tmp_path / "results.json").read_text())
    assert written[NAME]["best_epoch"] in (0, 1)
    stage = json.loads((tmp_path / NAME / "result.json").read_text())
    assert [h["epoch"] for h in stage["history"]] == [1, 2]
    assert written[NAME]["best_score"] == max(h["val_score"] for h in stage["history"])
    for rel in ("model/variables.msgpack", "predictions/test_probs.npy",
                "training_curves.png", "piano_roll.png", "results.txt"):
        assert (tmp_path / rel).exists(), rel
    # a rerun reads the typed training summary back and trains nothing
    again = run.train_and_evaluate(throwaway_config(), tmp_path)
    assert again[NAME] == written[NAME]
    assert stage == json.loads((tmp_path / NAME / "result.json").read_text())


def test_init_keys_follow_the_recipe_and_section_names(registered):
    def first_kernel(config, section):  # every weight, biases (zeros) included
        state = common.init_state(config, section)
        return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(state.params)])

    config = throwaway_config()
    np.testing.assert_array_equal(first_kernel(config, NAME), first_kernel(config, NAME))
    assert not np.array_equal(first_kernel(config, NAME), first_kernel(config, "pass1"))
    renamed = throwaway_config()
    renamed.recipe = "two_pass"  # same seed and section, another recipe's stream
    assert not np.array_equal(first_kernel(config, "pass1"), first_kernel(renamed, "pass1"))
