"""Fine-tuning sedjax's BEATs with the CRNN (model.beats.trainable): the encoder's weights in the
model's params, its learning rates with layer-wise decay, the cached fbank it reads, the mean
teacher's EMA over it, and configs/demo_desed_beats.py:tiny_finetune end to end."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile

from configs import demo_desed_beats
from sedjax import convert, models, run
from sedjax.config import stages, validate
from sedjax.data import beats_embeddings
from sedjax.models import beats
from sedjax.recipes import common, mean_teacher as mt
from sedjax.system import cli, sharding
from sedjax.train import checkpoint, parallel, stacked_runs

TOKENS, WIDTH, FRAMES = 96, 32, 198  # 2-s clips: 12 rows x 8 bands of 32; 198 fbank frames
TOL = 1e-4  # one computation compiled two ways (XLA's CPU kernels)
LR, DECAY = demo_desed_beats.FINETUNE_LEARNING_RATE, demo_desed_beats.FINETUNE_LAYER_DECAY


def finetune_config(**beats_values):
    c = demo_desed_beats.get_config("tiny_finetune")
    for k, v in beats_values.items():
        c.model.beats[k] = v
    return c


def _leaves(tree) -> dict[str, np.ndarray]:
    """{'a/b/c': array} of a params tree."""
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_leaves_with_path(tree)}


# ---------------------------------------------------------------------------- the rates
def test_layer_learning_rates_decay_from_the_top_layer_down():
    config = beats.BeatsConfig.tiny()  # 2 layers
    params = beats_embeddings.load_params(finetune_config().model.beats, config)
    rates = _leaves(beats.layer_learning_rates(params, config, 1e-3, 0.5))
    assert rates and set(rates) == set(_leaves(params))
    for name, rate in rates.items():
        if name.startswith("encoder/layers_1/"):
            expected = 1e-3 * 0.5  # the last layer: decay ** (L - 1)
        elif name.startswith("encoder/layers_0/"):
            expected = 1e-3 * 0.5 ** 2
        else:  # patch embedding, its norm and projection, position conv, post-LN norm, table
            expected = 1e-3 * 0.5 ** 3
        assert rate == pytest.approx(expected, rel=1e-12), name
    assert {n.split("/")[0] for n in rates} == {"patch_embedding", "layer_norm",
                                                "post_extract_proj", "encoder"}
    # a pre-LN encoder's final LayerNorm comes after the layers: the encoder's own rate
    pre_ln = beats.BeatsConfig.tiny(layer_norm_first=True, deep_norm=False)
    assert beats.layer_depth(("encoder", "layer_norm", "scale"), pre_ln) == 3
    assert beats.layer_depth(("encoder", "layer_norm", "scale"), config) == 0
    flat = _leaves(beats.layer_learning_rates(params, config, 1e-3, 1.0))
    assert {float(v) for v in flat.values()} == {1e-3}  # no decay: one rate


def _first_update(config, rampup_steps=0):
    """{name: update} of the optimizer's first update from random gradients (nonzero
    everywhere): Adam's first step moves every parameter by its learning rate."""
    config.mean_teacher.adam_eps = 1e-30  # |update| = |g| / (|g| + eps) = 1
    config.mean_teacher.step_timing = "sedjax"  # the ramp's first update at exp(-5)
    state = common.init_state(config, "mean_teacher", rampup_steps=rampup_steps)
    leaves, tree = jax.tree_util.tree_flatten(state.params)
    keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
    grads = jax.tree_util.tree_unflatten(
        tree, [jax.random.normal(k, x.shape) + 0.1 for k, x in zip(keys, leaves)])
    updates, _ = state.tx.update(grads, state.opt_state, state.params)
    return _leaves(updates)


def _expected_rate(name: str, head: float) -> float:
    if not name.startswith("beats/"):
        return head  # the CRNN: the recipe's rate
    if name.startswith("beats/encoder/layers_1/"):
        return LR * DECAY
    if name.startswith("beats/encoder/layers_0/"):
        return LR * DECAY ** 2
    return LR * DECAY ** 3


@pytest.mark.parametrize("rampup", [0, 10])
def test_one_update_moves_each_group_by_its_learning_rate(rampup):
    config = finetune_config()
    updates = _first_update(config, rampup)
    head = config.mean_teacher.learning_rate
    ramp = 1.0 if rampup == 0 else float(np.exp(-5.0))  # the ramp's first factor, all groups
    groups = set()
    for name, update in updates.items():
        step = np.abs(update)
        expected = _expected_rate(name, head) * ramp
        np.testing.assert_allclose(step, expected, rtol=1e-5, err_msg=name)
        groups.add(expected)
    assert len(groups) == 4  # the CRNN, the two layers, the parts before them


def test_runs_with_their_own_learning_rates_keep_the_encoders():
    """num_runs with mean_teacher.learning_rates: each run's CRNN at its rate, the encoder at
    model.beats' in every run (the rates live in the optimizer state, stacked by run)."""
    config = finetune_config()
    config.num_runs = 2
    config.mean_teacher.learning_rates = (1e-3, 3e-3)
    config.mean_teacher.adam_eps = 1e-30
    validate.validate(config)
    runs = stacked_runs.StackedRuns(config, sharding.make_mesh(jax.devices()[:1]))
    stacked = stacked_runs.stack([common.init_state(c, "mean_teacher") for c in runs.configs])
    grads = jax.tree_util.tree_map(lambda x: jnp.ones_like(x) * 0.3, stacked.params)
    updates, _ = jax.vmap(lambda s, g: s.tx.update(g, s.opt_state, s.params))(stacked, grads)
    for name, update in _leaves(updates).items():
        for k, head in enumerate((1e-3, 3e-3)):
            np.testing.assert_allclose(np.abs(update[k]), _expected_rate(name, head),
                                       rtol=1e-5, err_msg=f"{name} run {k}")


# ---------------------------------------------------------------------------- the data path
@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two 2-s clips and a 1.3-s one (zero-padded to 2 s)."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    paths = []
    for i, n in enumerate([32000, 20800, 32000]):
        path = folder / f"clip{i}.wav"
        soundfile.write(path, (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
        paths.append(path)
    return paths


def test_at_step_0_the_model_encodes_as_the_frozen_stage(clips, tmp_path):
    frozen, trained = demo_desed_beats.get_config("tiny"), finetune_config()
    names = [p.name for p in clips]
    tokens, valid, errors = beats_embeddings.extract_split("weak", clips, names, frozen,
                                                           tmp_path)
    fbank, fbank_errors = beats_embeddings.extract_fbank_split("weak", clips, names, trained,
                                                               tmp_path)
    assert not errors and not fbank_errors and valid.tolist() == [TOKENS] * 3
    assert fbank.shape == (3, FRAMES, 128) and fbank.dtype == np.float32
    assert beats_embeddings.model_input_shape(trained) == (FRAMES, 128)
    assert beats_embeddings.model_input_shape(frozen) == (TOKENS, WIDTH)
    state = common.init_state(trained, "mean_teacher")
    # the encoder's weights are model.beats' (the frozen stage's), placed in the params
    arch, weights = beats_embeddings.encoder_weights(trained)
    for name, value in _leaves(weights).items():
        np.testing.assert_array_equal(_leaves(state.params["beats"])[name], value)
    encoded, _ = jax.jit(functools.partial(beats.Beats(arch).apply, method="encode"))(
        {"params": state.params["beats"]}, np.asarray(fbank))
    assert np.abs(np.asarray(encoded) - tokens).max() < TOL
    # the whole model: the same outputs as the frozen model given the stage's tokens
    features = np.random.default_rng(1).standard_normal((3, 126, 128)).astype(np.float32)
    crnn = {k: v for k, v in state.params.items() if k != "beats"}
    frozen_model = models.from_config(frozen.model, len(frozen.data.classes))
    want = frozen_model.apply({"params": crnn, "batch_stats": state.batch_stats}, features,
                              train=False, embeddings=np.asarray(tokens))
    got = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, features,
                         train=False, embeddings=np.asarray(fbank))
    for a, b in zip(got, want):
        assert np.abs(np.asarray(a) - np.asarray(b)).max() < TOL


def test_the_fbank_cache_is_keyed_by_the_clips_not_the_weights(clips):
    names = [p.name for p in clips]
    key = beats_embeddings.fbank_cache_key(finetune_config(), names, "src")
    for other in (finetune_config(seed=3), finetune_config(learning_rate=1e-3),
                  finetune_config(layer_decay=0.5), demo_desed_beats.get_config("tiny")):
        assert beats_embeddings.fbank_cache_key(other, names, "src") == key
    assert beats_embeddings.fbank_cache_key(finetune_config(), names[:2], "src") != key
    assert beats_embeddings.fbank_cache_key(finetune_config(), names, "other") != key
    # and the new fields leave the frozen stage's embeddings where they were
    frozen = demo_desed_beats.get_config("tiny")
    assert (beats_embeddings.cache_key(finetune_config(learning_rate=1e-3, layer_decay=0.5),
                                       names) == beats_embeddings.cache_key(frozen, names))


def test_the_new_fields_change_training_only():
    for field in ("model.beats.trainable", "model.beats.learning_rate",
                  "model.beats.layer_decay"):
        assert stages.feeds_training(field, checkpoint_scores_events=False)
    old = json.loads(demo_desed_beats.get_config("tiny").to_json_best_effort())
    new = json.loads(finetune_config().to_json_best_effort())
    assert set(stages.changed_values(old, new)) == {
        "model.beats.trainable", "model.beats.learning_rate", "model.beats.layer_decay"}


# ---------------------------------------------------------------------------- the teacher
def test_the_teacher_averages_the_encoder_as_every_weight():
    config = finetune_config()
    config.model.beats.learning_rate = 1e-3
    config.mean_teacher.step_timing = "sedjax"  # the teacher averages the updated weights
    mesh = sharding.make_mesh(jax.devices()[:1])
    state = mt.new_state(config, mesh)
    rng = np.random.default_rng(0)
    b = 4
    batch = {"features": rng.standard_normal((b, 126, 128)).astype(np.float32),
             "frames": np.full(b, 126, np.int32),
             "labels": (rng.random((b, 10)) < 0.3).astype(np.float32),
             "kind": np.array([0, 1, 2, 0], np.int32),
             "strong": (rng.random((b, 31, 10)) < 0.3).astype(np.uint8),
             "embeddings": rng.standard_normal((b, FRAMES, 128)).astype(np.float32)}
    settings = mt.step_settings(config, 8)
    step = parallel.train_step_fn(functools.partial(mt.train_step, settings=settings), mesh,
                                  resident=False)
    stats = sharding.replicate((np.zeros(128, np.float32), np.ones(128, np.float32)), mesh)
    init = _leaves(jax.device_get(state.params["beats"]))
    for _ in range(2):
        before = jax.device_get(state)
        state, _ = step(state, stats, sharding.shard_batch(batch, mesh))
        after = jax.device_get(state)
        decay = float(mt.ema_decay(jnp.array(after.step), settings.ema_decay))
        e0, p1, e1 = (_leaves(t["beats"]) for t in (before.ema_params, after.params,
                                                    after.ema_params))
        for name in e0:
            np.testing.assert_allclose(e1[name], decay * e0[name] + (1 - decay) * p1[name],
                                       rtol=1e-5, atol=1e-7, err_msg=name)
    student, teacher = _leaves(after.params["beats"]), _leaves(after.ema_params["beats"])
    assert max(np.abs(student[n] - init[n]).max() for n in init) > 1e-4  # it trained
    assert max(np.abs(teacher[n] - student[n]).max() for n in init) > 1e-5


# ---------------------------------------------------------------------------- validation
BAD = {  # field, value -> the start of the one-line error
    ("model.beats.trainable", "yes"): "model.beats.trainable: expected True or False",
    ("model.beats.learning_rate", 0.0): "model.beats.learning_rate: expected a positive",
    ("model.beats.learning_rate", "1e-5"): "model.beats.learning_rate: expected a positive",
    ("model.beats.layer_decay", 0.0): "model.beats.layer_decay: expected a factor in (0, 1]",
    ("model.beats.layer_decay", 1.5): "model.beats.layer_decay: expected a factor in (0, 1]",
    ("model.embeddings.source", "files"): "model.beats.trainable: fine-tuning BEATs needs "
                                          "model.embeddings.source 'beats'",
    ("model.beats.padding_mask_rule", "strict"): "model.beats.padding_mask_rule: a trained "
                                                 "encoder reads",
}


@pytest.mark.parametrize("field,value", list(BAD), ids=[f"{f}={v}" for f, v in BAD])
def test_bad_values_are_one_line_naming_the_field(field, value):
    config = finetune_config()
    section, _, name = field.rpartition(".")
    node = config
    for part in section.split("."):
        node = node[part]
    with node.ignore_type():
        node[name] = value
    with pytest.raises(cli.ConfigError) as error:
        validate.validate(config)
    message = str(error.value)
    assert message.startswith(BAD[(field, value)]) and "\n" not in message


def test_the_variants_differ_from_the_frozen_ones_in_the_encoder_fields_only():
    for frozen, trained in (("", "finetune"), ("tiny", "tiny_finetune")):
        a, b = demo_desed_beats.get_config(frozen), demo_desed_beats.get_config(trained)
        validate.validate(b)
        assert b.model.beats.trainable and not a.model.beats.trainable
        old, new = (json.loads(c.to_json_best_effort()) for c in (a, b))
        assert set(stages.changed_values(old, new)) == {
            "model.beats.trainable", "model.beats.learning_rate", "model.beats.layer_decay"}


# ---------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def finetune_run(tmp_path_factory):
    """configs/demo_desed_beats.py:tiny_finetune through sedjax.main's stages."""
    workdir = tmp_path_factory.mktemp("finetune") / "w"
    config = finetune_config()
    config.data.synthetic.num_workers = 1
    summary = run.train_and_evaluate(config, workdir)
    return workdir, config, summary


def test_the_finetune_demo_trains_the_encoder_end_to_end(finetune_run):
    workdir, config, summary = finetune_run
    results = json.loads((workdir / "results.json").read_text())
    assert results["test"]["threshold_independent"]["num_files"] == 8
    assert summary["split_sources"]["test"]
    # the encoder's input is cached, its tokens are not (they change as it trains)
    cached = {p.name.split("-")[1] for p in (workdir / "features").glob("beats_fbank-*.npy")}
    assert cached == {"weak", "unlabel_in_domain", "synthetic", "validation", "test"}
    assert not list((workdir / "features").glob("embeddings-*"))
    # the student's and the teacher's encoders both moved from the start, and differ
    mesh = sharding.make_mesh()
    runs = stacked_runs.StackedRuns(config, mesh)
    ckpts = checkpoint.PassCheckpoints(workdir / "mean_teacher")
    state, _ = ckpts.restore("latest", runs.state(mt.init_state))
    ckpts.close()
    init = _leaves(beats_embeddings.encoder_weights(config)[1])
    student = {k: v[0] for k, v in _leaves(jax.device_get(state.params["beats"])).items()}
    teacher = {k: v[0] for k, v in _leaves(jax.device_get(state.ema_params["beats"])).items()}
    assert set(student) == set(teacher) == set(init)

    def distance(a, b):
        return max(float(np.abs(a[n] - b[n]).max()) for n in init)
    # 4 updates of at most 1e-4 * 0.8 (Adam): the student moved ~3e-4, its EMA ~1e-4
    assert distance(student, init) > 1e-4 and distance(teacher, init) > 1e-5
    assert distance(teacher, student) > 1e-5
    # the exported model (what sedjax.detect would load) holds the encoder it predicted with
    variables, _ = checkpoint.load_model(workdir)
    assert set(_leaves(variables["params"]["beats"])) == set(init)
    assert variables["params"]["embeddings_projection"]["kernel"].shape == (128 + WIDTH, 128)


def test_a_finetuned_model_does_not_convert_to_desed_task(finetune_run, tmp_path):
    workdir, _, _ = finetune_run
    with pytest.raises(cli.UserError, match="model.beats.trainable"):
        convert.to_desed_task(str(workdir), str(tmp_path / "out.pt"))
