"""DESED_task CRNN state dicts <-> sedjax desed_crnn variables (sedjax.interop.desed_task), and
`python -m sedjax.convert`. Without torch; the command's tests that write .pt files need it.
tests/parity/test_crnn.py checks the same mapping against DESED_task's own CRNN."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs import desed_baseline
from sedjax import convert, detect
from sedjax.interop import desed_task as interop
from sedjax import models
from sedjax.train import checkpoint

# DESED_task's CRNN with confs/default.yaml (desed_task/nnet/{CNN,RNN,CRNN}.py): a few names
# and shapes, read off its nn.Sequential / nn.GRU / nn.Linear modules
DESED_KEYS = {
    "cnn.cnn.conv0.weight": (16, 1, 3, 3),
    "cnn.cnn.conv0.bias": (16,),
    "cnn.cnn.batchnorm0.weight": (16,),
    "cnn.cnn.batchnorm0.running_var": (16,),
    "cnn.cnn.batchnorm0.num_batches_tracked": (),
    "cnn.cnn.glu0.linear.weight": (16, 16),
    "cnn.cnn.conv1.weight": (32, 16, 3, 3),
    "cnn.cnn.conv6.weight": (128, 128, 3, 3),
    "cnn.cnn.batchnorm6.running_mean": (128,),
    "cnn.cnn.glu6.linear.bias": (128,),
    "rnn.rnn.weight_ih_l0": (384, 128),
    "rnn.rnn.weight_hh_l0": (384, 128),
    "rnn.rnn.bias_ih_l0_reverse": (384,),
    "rnn.rnn.weight_ih_l1": (384, 256),
    "rnn.rnn.weight_hh_l1_reverse": (384, 128),
    "rnn.rnn.bias_hh_l1": (384,),
    "dense.weight": (10, 256),
    "dense.bias": (10,),
    "dense_softmax.weight": (10, 256),
    "dense_softmax.bias": (10,),
}
# 7 blocks x (conv 2 + batchnorm 5 + glu 2) + 2 GRU layers x 2 directions x 4 + 2 heads x 2
DESED_KEY_COUNT = 7 * 9 + 2 * 2 * 4 + 2 * 2


def random_variables(model, shape, seed=0, **kwargs) -> dict:
    """The model's variables (shapes from eval_shape: nothing compiled), random values."""
    tree = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape),
                                             train=False, **kwargs))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32),
        {c: tree[c] for c in ("params", "batch_stats")})


def flat(tree) -> dict:
    return traverse_util.flatten_dict(tree)


def assert_same_tree(a, b):
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        assert fa[k].dtype == np.float32 and np.array_equal(fa[k], fb[k]), k


@pytest.fixture(scope="module")
def default_model():
    return models.from_config(desed_baseline.get_config().model, 10)


@pytest.fixture(scope="module")
def default_variables(default_model):
    return random_variables(default_model, (1, 626, 128))


def small_model():
    """A 3-block, 3-class, 1-layer, mean-pooling desed_crnn."""
    m = desed_baseline.get_config().model
    m.conv_features, m.pool_sizes = (4, 8, 8), ((2, 4), (2, 4), (1, 8))
    m.gru_units, m.gru_layers, m.pooling = 5, 1, "mean"
    return models.from_config(m, 3)


def test_keys_and_shapes_are_desed_tasks(default_variables):
    state = interop.state_dict_from_variables(default_variables)
    assert len(state) == DESED_KEY_COUNT
    for key, shape in DESED_KEYS.items():
        assert state[key].shape == shape, key
    assert state["cnn.cnn.batchnorm3.num_batches_tracked"].dtype == np.int64
    # torch Linear (out, in) is flax Dense (in, out); Conv2d OIHW is HWIO
    p = default_variables["params"]
    np.testing.assert_array_equal(state["dense.weight"], p["dense"]["kernel"].T)
    np.testing.assert_array_equal(state["cnn.cnn.conv1.weight"],
                                  p["GatedConvBlock_1"]["Conv_0"]["kernel"].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(state["rnn.rnn.weight_hh_l1_reverse"],
                                  p["gru1_backward"]["step"]["hidden_kernel"].T)
    np.testing.assert_array_equal(state["cnn.cnn.batchnorm2.running_var"],
                                  default_variables["batch_stats"]["GatedConvBlock_2"]
                                  ["BatchNorm_0"]["var"])


def test_round_trip_is_exact(default_variables):
    state = interop.state_dict_from_variables(default_variables, prefix="sed_student.")
    assert all(k.startswith("sed_student.") for k in state)
    back = interop.variables_from_state_dict(state, prefix="sed_student.")
    assert_same_tree(back, default_variables)
    again = interop.state_dict_from_variables(back, prefix="sed_student.")
    assert again.keys() == state.keys()
    assert all(np.array_equal(again[k], state[k]) for k in state)


def test_small_model_with_embeddings_round_trips_and_runs():
    model = small_model()
    x, emb = jnp.ones((2, 8, 128)), jnp.ones((2, 6, 7))
    variables = random_variables(model, x.shape, embeddings=emb)
    state = interop.state_dict_from_variables(variables)
    assert state["cat_tf.weight"].shape == (8, 8 + 7)  # Linear(nb_in + embedding, nb_in)
    assert "dense_softmax.weight" not in state and "rnn.rnn.weight_ih_l1" not in state
    back = interop.variables_from_state_dict(state)
    assert_same_tree(back, variables)
    frames, clip = jax.jit(lambda v: model.apply(v, x, embeddings=emb))(back)
    assert frames.shape == (2, 2, 3) and clip.shape == (2, 3)


def test_model_config_from_state_dict(default_variables):
    state = {**interop.state_dict_from_variables(default_variables, "sed_teacher."),
             "mel_spec.mel_scale.fb": np.zeros((1025, 128), np.float32)}
    got = interop.model_config_from_state_dict(state, "sed_teacher.")
    assert got == {"num_classes": 10, "conv_features": (16, 32, 64, 128, 128, 128, 128),
                   "conv_kernel": (3, 3), "gru_units": 128, "gru_layers": 2,
                   "pooling": "attention", "use_embeddings": False, "embedding_size": None,
                   "cnn_output_bands": 1}
    small = interop.state_dict_from_variables(random_variables(
        small_model(), (1, 8, 128), embeddings=jnp.ones((1, 6, 7))))
    got = interop.model_config_from_state_dict(small)
    assert (got["conv_features"], got["num_classes"], got["gru_units"], got["gru_layers"],
            got["pooling"], got["embedding_size"]) == ((4, 8, 8), 3, 5, 1, "mean", 7)


def test_prefix_picks_one_model_and_ignores_other_keys(default_variables):
    other = jax.tree_util.tree_map(lambda a: a + 1, default_variables)
    state = {**interop.state_dict_from_variables(default_variables, "sed_student."),
             **interop.state_dict_from_variables(other, "sed_teacher."),
             "mel_spec.spectrogram.window": np.ones(2048, np.float32)}
    assert_same_tree(interop.variables_from_state_dict(state, "sed_teacher."), other)
    assert_same_tree(interop.variables_from_state_dict(state, "sed_student."), default_variables)
    # a state dict without num_batches_tracked (optional: DESED's momentum is fixed) reads too
    bare = {k: v for k, v in interop.state_dict_from_variables(default_variables).items()
            if not k.endswith("num_batches_tracked")}
    assert_same_tree(interop.variables_from_state_dict(bare), default_variables)


def test_clear_errors(default_variables):
    state = interop.state_dict_from_variables(default_variables, "sed_student.")
    missing = {k: v for k, v in state.items() if k != "sed_student.rnn.rnn.bias_hh_l1_reverse"}
    with pytest.raises(ValueError, match=r"missing key sed_student\.'rnn\.rnn\.bias_hh_l1_"
                                         r"reverse'"):
        interop.variables_from_state_dict(missing, "sed_student.")
    with pytest.raises(ValueError, match=r"unexpected key 'shrink_emb\.0\.weight'.*'frame' or "
                                         r"'global'"):
        interop.variables_from_state_dict(
            {**interop.state_dict_from_variables(default_variables),
             "shrink_emb.0.weight": np.zeros((128, 1024), np.float32)})
    wrong = {**state, "sed_student.cnn.cnn.glu2.linear.weight": np.zeros((64, 32), np.float32)}
    with pytest.raises(ValueError, match=r"cnn\.cnn\.glu2\.linear\.weight: shape \(64, 32\), "
                                         r"expected \(64, 64\)"):
        interop.variables_from_state_dict(wrong, "sed_student.")
    with pytest.raises(ValueError, match=r"no key starts with 'sed_teacher\.' \(the keys start "
                                         r"with 'sed_student\.'\)"):
        interop.variables_from_state_dict(state, "sed_teacher.")
    with pytest.raises(ValueError, match=r"missing key 'cnn\.cnn\.conv0\.weight'"):
        interop.variables_from_state_dict({"dense.weight": np.zeros((10, 256))})
    no_dense = dict(default_variables, params={k: v for k, v in
                                               default_variables["params"].items()
                                               if k != "attention"})
    assert "dense_softmax.weight" not in interop.state_dict_from_variables(no_dense)
    with pytest.raises(ValueError, match="expected {'params'"):
        interop.state_dict_from_variables({"params": {}})


def test_reading_a_checkpoint_without_torch_says_so(monkeypatch, tmp_path):
    import builtins

    real = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(ValueError, match=r"needs PyTorch: pip install -e '\.\[reference\]'"):
        interop.read_lightning_checkpoint(tmp_path / "x.ckpt")


# ---------------------------------------------------------------------------- the command
def test_convert_help(capsys):
    assert convert.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "python -m sedjax.convert desed_task CKPT --workdir=W" in out and "--which" in out


@pytest.mark.parametrize("argv, message", [
    (["--workdir=w"], "expected desed_task, to_desed_task, desed_task_config or beats first"),
    (["--workdir=w", "desed_task"], "desed_task takes one file (CKPT), got 0"),
    (["--workdir=w", "to_desed", "x.pt"], "expected desed_task, to_desed_task, "
                                          "desed_task_config or beats first"),
    (["desed_task", "x.ckpt"], "desed_task needs --workdir"),
    (["desed_task_config"], "desed_task_config takes one file (YAML), got 0"),
])
def test_convert_usage_errors(argv, message, capsys):
    assert convert.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_convert_both_ways(default_variables, tmp_path, capsys):
    """A Lightning-style checkpoint (torch.save'd dict) -> sedjax model folder -> state dict."""
    torch = pytest.importorskip("torch")
    teacher = jax.tree_util.tree_map(lambda a: a * 0.5, default_variables)
    state = {**interop.state_dict_from_variables(default_variables, "sed_student."),
             **interop.state_dict_from_variables(teacher, "sed_teacher."),
             "mel_spec.mel_scale.fb": np.zeros((1025, 128), np.float32)}
    ckpt = tmp_path / "epoch=1.ckpt"
    torch.save({"state_dict": {k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                "epoch": 1, "hyper_parameters": {
                    "feats": {"n_mels": 128},
                    "scaler": {"statistic": "instance", "normtype": "minmax", "dims": [1, 2]}}},
               ckpt)
    work = tmp_path / "converted"
    assert convert.main(["desed_task", str(ckpt), f"--workdir={work}", "--which=teacher"]) == 0
    assert "wrote" in capsys.readouterr().out
    config = json.loads((work / "config.json").read_text())
    assert config["data"]["classes"] == list(convert.DESED_CLASSES)
    m = config["model"]
    assert (m["arch"], m["conv_features"], m["gru_units"], m["gru_layers"], m["pooling"]) == (
        "desed_crnn", [16, 32, 64, 128, 128, 128, 128], 128, 2, "attention")
    variables, norm = checkpoint.load_model(work)
    assert_same_tree(variables, teacher)
    # the normalization maps sedjax's instance min-max features onto DESED's [-1, 1]
    fc = desed_baseline.get_config().features
    from sedjax.data import features
    noise = np.random.default_rng(1).standard_normal(160000).astype(np.float32)  # 10 s
    x = (features.log_mel(noise, 16000, fc) - norm[0]) / norm[1]
    assert abs(x.min() + 1) < 1e-5 and abs(x.max() - 1) < 1e-5
    detector = detect.Detector.from_workdir(work)  # what sedjax.detect loads
    assert detector.classes == list(convert.DESED_CLASSES)

    out = tmp_path / "back.pt"
    assert convert.main(["to_desed_task", str(out), f"--workdir={work}"]) == 0
    back = torch.load(out, weights_only=True)
    want = interop.state_dict_from_variables(teacher)
    assert list(back) == list(want)
    assert all(np.array_equal(back[k].numpy(), want[k]) for k in want)

    # a bare CRNN state dict (what to_desed_task writes) converts too
    again = tmp_path / "again"
    assert convert.main(["desed_task", str(out), f"--workdir={again}"]) == 0
    assert_same_tree(checkpoint.load_model(again)[0], teacher)


def test_convert_errors_are_one_line(default_variables, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    assert convert.main(["desed_task", str(tmp_path / "none.ckpt"), f"--workdir={tmp_path}"]
                        ) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'none.ckpt'}: no such file"
    state = interop.state_dict_from_variables(default_variables)
    del state["dense.bias"]
    bad = tmp_path / "bad.pt"
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, bad)
    assert convert.main(["desed_task", str(bad), f"--workdir={tmp_path / 'w'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing key 'dense.bias'" in err[0]
    assert not (tmp_path / "w").exists()
    assert convert.main(["to_desed_task", str(tmp_path / "o.pt"), f"--workdir={tmp_path}"]) == 2
    assert "no config.json" in capsys.readouterr().err


class _Unknown:
    """A class no weights-only read may unpickle."""


def test_checkpoint_reads_are_weights_only(default_variables, tmp_path):
    torch = pytest.importorskip("torch")
    state = {k: torch.from_numpy(np.array(v))
             for k, v in interop.state_dict_from_variables(default_variables).items()}
    path = tmp_path / "odd.ckpt"
    torch.save({"state_dict": state, "extra": _Unknown()}, path)
    with pytest.raises(ValueError, match=r"holds a .*_Unknown object, which a weights-only "
                                         r"read does not unpickle"):
        interop.read_lightning_checkpoint(path)
    # Lightning's AttributeDict (hyper_parameters in some Lightning versions) reads as a dict
    parsing = pytest.importorskip("pytorch_lightning.utilities.parsing")
    torch.save({"state_dict": state, "hyper_parameters": parsing.AttributeDict(
        {"net": {"nclass": 10}})}, path)
    read = interop.read_lightning_checkpoint(path)
    assert read["hyper_parameters"] == {"net": {"nclass": 10}}
    assert type(read["hyper_parameters"]) is dict and read["scaler"] == {}
