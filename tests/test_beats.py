"""sedjax.models.beats (BEATs in Flax) and sedjax.interop.beats_checkpoint, in JAX alone: the
Kaldi fbank's properties, token counts, padding masks, training mode, bfloat16, the weight
conversion both ways and `python -m sedjax.convert beats` (torch only to write its .pt).
tests/parity/test_beats.py compares the numbers with BEATs' own code."""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sedjax import convert
from sedjax.interop import beats_checkpoint
from sedjax.models import beats

TINY = beats.BeatsConfig.tiny()
RATE = beats.SAMPLE_RATE
TRAINING_ONLY = ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop",
                 "dropout_input", "layer_wise_gradient_decay_ratio")


def noise(n: int, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    # RandomState: numpy's frozen stream, so that the regression value below stays valid
    return (np.random.RandomState(seed).standard_normal(n) * scale).astype(np.float32)


def random_params(config: beats.BeatsConfig, seed: int = 0) -> dict:
    """Params of Beats(config) drawn with numpy (faster than compiling Beats.init, which
    test_initialization_follows_beats checks): weights N(0, 1 / fan_in), biases N(0, 0.02^2),
    norm scales, weight norms and gate scales 1 + N(0, 0.1^2)."""
    shapes = jax.eval_shape(lambda: beats.Beats(config).init(jax.random.PRNGKey(0),
                                                             jnp.zeros((1, 4000))))["params"]
    rng = np.random.RandomState(seed)

    def draw(path, leaf):
        name, shape = path[-1].key, leaf.shape
        if name in ("scale", "weight_g", "grep_a"):
            x = 1 + 0.1 * rng.standard_normal(shape)
        elif name == "bias":
            x = 0.02 * rng.standard_normal(shape)
        else:
            x = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
        return x.astype(np.float32)
    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def tiny_params():
    return random_params(TINY)


@functools.lru_cache(maxsize=None)
def _compiled(config: beats.BeatsConfig, train: bool):
    model = beats.Beats(config)

    def apply(params, waveform, padding_mask, rng):
        rngs = None if rng is None else {"dropout": rng}
        return model.apply({"params": params}, waveform, padding_mask, train=train, rngs=rngs)
    return jax.jit(apply)


def run(config, params, waveform, padding_mask=None, train=False, rng=None):
    """Beats(config) on waveform (B, samples), compiled once per config, mode and shapes:
    (embeddings, token mask) as numpy."""
    # fewer programs to compile: the rule only matters with a mask, the training-only fields
    # only in training
    if padding_mask is None:
        config = dataclasses.replace(config, padding_mask_rule="beats")
    if not train:
        config = dataclasses.replace(config, **{f: getattr(TINY, f) for f in TRAINING_ONLY})
    if padding_mask is not None:
        padding_mask = jnp.asarray(padding_mask)
    out, mask = _compiled(config, train)(params, jnp.asarray(waveform), padding_mask, rng)
    return np.asarray(out, np.float32), None if mask is None else np.asarray(mask)


# ---------------------------------------------------------------------------- the fbank
def test_frame_and_token_counts():
    # Kaldi's whole 25-ms windows every 10 ms; 16 x 16 patches over 128 mel bins: 8 per row
    assert [beats.num_frames(n) for n in (400, 559, 560, RATE, 10 * RATE)] == [1, 1, 2, 98, 998]
    assert beats.num_tokens(10 * RATE) == 62 * 8 == 496
    assert beats.kaldi_fbank(jnp.zeros((3, 560))).shape == (3, 2, 128)
    with pytest.raises(ValueError, match="at least 400 samples"):
        beats.num_frames(399)


def test_mel_filters_are_kaldis_triangles():
    banks = beats.kaldi_mel_banks()
    assert banks.shape == (128, 256) and banks.min() == 0 and banks.max() <= 1
    # filter 3 (63 to 93 Hz) lies between two FFT bins (62.5 and 93.75 Hz): it is empty, its
    # band always the log floor, in Kaldi as here
    assert np.flatnonzero(banks.sum(axis=1) == 0).tolist() == [3]
    for row in np.delete(banks, 3, axis=0):  # one run of nonzero weights, rising then falling
        nz = np.flatnonzero(row)
        assert np.all(np.diff(nz) == 1)
        peak = np.argmax(row[nz])
        assert np.all(np.diff(row[nz][:peak + 1]) >= 0) and np.all(np.diff(row[nz][peak:]) <= 0)
    # neighbouring triangles share their edges on the mel scale, so between the first and the
    # last centre the weights of each FFT bin sum to 1
    centers = beats.kaldi_mel_centers()
    freqs = np.arange(256) * RATE / 512
    inside = (freqs > centers[0]) & (freqs < centers[-1])
    np.testing.assert_allclose(banks.sum(axis=0)[inside], 1.0, atol=1e-5)
    assert np.all(banks.sum(axis=0)[freqs < 20] == 0)  # nothing below low_freq (20 Hz)


@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0, 6500.0])
def test_a_sine_peaks_in_its_band(freq):
    t = np.arange(RATE) / RATE
    fbank = np.asarray(beats.preprocess(0.5 * np.sin(2 * np.pi * freq * t)[None]))[0]
    nearest = np.argmin(np.abs(beats.kaldi_mel_centers() - freq))
    assert abs(int(np.argmax(fbank.mean(axis=0))) - nearest) <= 1


def test_fbank_gain_offset_and_silence():
    x = noise(RATE)
    base = np.asarray(beats.kaldi_fbank(x * beats.WAVEFORM_SCALE))
    # power spectrum: twice the amplitude adds log 4 to every log energy
    double = np.asarray(beats.kaldi_fbank(2 * x * beats.WAVEFORM_SCALE))
    bands = np.delete(np.arange(128), 3)  # filter 3 is empty: its band stays on the floor
    np.testing.assert_allclose((double - base)[:, bands], np.log(4.0), atol=1e-4)
    # each frame's DC offset is removed before anything else
    offset = np.asarray(beats.kaldi_fbank((x + 0.25) * beats.WAVEFORM_SCALE))
    np.testing.assert_allclose(offset, base, atol=2e-3)
    # silence sits on the log floor, normalized as BEATs normalizes
    silence = np.asarray(beats.preprocess(np.zeros((1, RATE), np.float32)))
    want = (np.log(np.finfo(np.float32).eps) - beats.FBANK_MEAN) / (2 * beats.FBANK_STD)
    np.testing.assert_allclose(silence, want, rtol=1e-6)


# ---------------------------------------------------------------------------- the encoder
def test_tiny_shapes_and_layout(tiny_params):
    x = np.stack([noise(RATE, 1), noise(RATE, 2)])
    out, mask = run(TINY, tiny_params, x)
    assert out.shape == (2, 6 * 8, TINY.encoder_embed_dim) and mask is None  # 98 frames
    assert np.all(np.isfinite(out))
    assert beats.time_frequency(jnp.asarray(out)).shape == (2, 6, 8, 32)
    # the same numbers from a caller's own fbank
    encode = jax.jit(lambda p, f: beats.Beats(TINY).apply({"params": p}, f, method="encode"))
    np.testing.assert_allclose(np.asarray(encode(tiny_params, beats.preprocess(x))[0]), out,
                               atol=1e-5)


def test_initialization_follows_beats():
    config = dataclasses.replace(TINY, encoder_layers=1)  # one layer: a shorter compile
    params = jax.jit(beats.Beats(config).init)(jax.random.PRNGKey(0),
                                               jnp.zeros((1, 2800)))["params"]
    pos = params["encoder"]["pos_conv"]
    # weight norm starts as the identity: g = |v| per tap
    np.testing.assert_allclose(pos["weight_g"], np.sqrt((pos["weight_v"] ** 2).sum(axis=(1, 2))),
                               rtol=1e-5)
    layer = params["encoder"]["layers_0"]
    attn = layer["self_attn"]
    xavier = np.sqrt(2 / (32 + 32))  # xavier_normal's std for 32 x 32 at gain 1
    beta = (8 * config.encoder_layers) ** -0.25  # DeepNorm's gain of v, out, fc1, fc2
    assert np.std(attn["q_proj"]["kernel"]) == pytest.approx(xavier, rel=0.15)
    assert np.std(attn["v_proj"]["kernel"]) == pytest.approx(beta * xavier, rel=0.15)
    assert np.std(attn["grep_linear"]["kernel"]) == pytest.approx(0.02, rel=0.3)
    assert np.std(params["encoder"]["relative_attention_bias"]) == pytest.approx(0.02, rel=0.3)
    assert np.all(attn["grep_a"] == 1) and np.all(layer["fc1"]["bias"] == 0)
    assert np.all(layer["final_layer_norm"]["scale"] == 1)


def test_other_structures_run():
    """Pre-LN without DeepNorm, no position bias, a bias in the patch embedding and no
    projection after it (embed_dim = encoder_embed_dim), ReLU."""
    config = dataclasses.replace(TINY, layer_norm_first=True, deep_norm=False,
                                 activation_fn="relu", relative_position_embedding=False,
                                 embed_dim=32, conv_bias=True)
    params = random_params(config)
    assert "post_extract_proj" not in params and "bias" in params["patch_embedding"]
    out, _ = run(config, params, noise(4000)[None])
    assert out.shape == (1, 8, 32) and np.all(np.isfinite(out))
    # the converter's table has exactly this model's parameters too
    state = beats_checkpoint.state_dict_from_params(params, config)
    assert_same_tree(beats_checkpoint.params_from_state_dict(state, config), params)


def test_relative_position_buckets():
    b = beats.relative_position_buckets(1000, 320, 800)
    row = b[500]  # query 500; key - query = j - 500
    # j <= i: buckets 0-159, j > i: 160-319; distances below 80 exact, then logarithmic
    assert row[500] == 0 and row[499] == 1 and row[501] == 161
    assert row[421] == 79 and row[420] == 80 and row[579] == 160 + 79 and row[580] == 160 + 80
    assert row[0] == 80 + 63  # distance 500: 80 + floor(80 log10(500 / 80))
    assert b[0, 999] == 319 and b[999, 0] == 159  # beyond max_distance: the last bucket
    assert np.all(np.diff(row[500:]) >= 0) and np.all(np.diff(row[:501]) <= 0)


def test_deep_norm_scale():
    assert beats.BeatsConfig().deep_norm_alpha == pytest.approx(24 ** 0.25)  # (2 N)^(1/4)
    assert dataclasses.replace(TINY, deep_norm=False).deep_norm_alpha == 1.0


# ---------------------------------------------------------------------------- padding
def test_strict_rule_padded_batch_equals_each_clip_alone(tiny_params):
    config = dataclasses.replace(TINY, padding_mask_rule="strict")
    short = 9000  # 54 frames, 3 patch rows, 24 tokens
    clips = [noise(RATE, 3), noise(short, 4)]
    batch = np.zeros((2, RATE), np.float32)
    mask = np.ones((2, RATE), bool)
    for i, c in enumerate(clips):
        batch[i, :len(c)], mask[i, :len(c)] = c, False
    out, token_mask = run(config, tiny_params, batch, mask)
    assert not token_mask[0].any() and token_mask[1].tolist() == [False] * 24 + [True] * 24
    for i, c in enumerate(clips):
        alone, _ = run(config, tiny_params, c[None])
        n = beats.num_tokens(len(c))
        assert alone.shape[1] == n
        np.testing.assert_allclose(out[i, :n], alone[0], atol=2e-5)


def test_beats_rule_splits_the_axis_evenly(tiny_params):
    """BEATs' own rule (the default): samples split into as many equal chunks as frames, then
    frames into as many as tokens. For 16000 samples with 9000 valid: frames of 163 samples,
    the first all-padding one is frame 56 (not 54, Kaldi's); tokens of 2 frames, the first
    all-padding one is token 28 (not 24: tokens are 8 per 16-frame row)."""
    mask = np.zeros((1, RATE), bool)
    mask[:, 9000:] = True
    frames = np.asarray(beats.split_all(jnp.asarray(mask), beats.num_frames(RATE)))
    assert np.argmax(frames[0]) == 56 and frames[0, 56:].all()
    # with a second clip of padding only (finite numbers, not NaN: no key to attend to)
    x = np.zeros((2, RATE), np.float32)
    x[0, :9000] = noise(9000, 4)
    out, token_mask = run(TINY, tiny_params, x, np.concatenate([mask, np.ones_like(mask)]))
    assert token_mask[0].tolist() == [False] * 28 + [True] * 20 and token_mask[1].all()
    assert np.all(np.isfinite(out))
    # so tokens of the partly padded row take part: the valid part is not the clip alone
    alone, _ = run(TINY, tiny_params, x[:1, :9000])
    assert np.abs(out[0, :24] - alone[0]).max() > 1e-3


# ---------------------------------------------------------------------------- training, dtype
def test_training_mode_draws_dropout_and_layer_drop():
    config = dataclasses.replace(TINY, dropout=0.2, attention_dropout=0.2, encoder_layerdrop=0.5,
                                 dropout_input=0.1, layer_wise_gradient_decay_ratio=0.6)
    x = jnp.asarray(noise(RATE)[None])
    params = random_params(config)

    def loss(p, rng):  # a training step's forward and backward, its output beside
        out, _ = beats.Beats(config).apply({"params": p}, x, train=True, rngs={"dropout": rng})
        return jnp.square(out).mean(), out

    step = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (_, a), grads = step(params, jax.random.PRNGKey(1))
    (_, b), _ = step(params, jax.random.PRNGKey(2))
    (_, again), _ = step(params, jax.random.PRNGKey(1))
    infer, _ = run(config, params, x)
    np.testing.assert_array_equal(a, again)
    assert np.abs(a - b).max() > 1e-3 and np.abs(a - infer).max() > 1e-3
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
    assert np.abs(grads["patch_embedding"]["kernel"]).max() > 0  # (a layer may be dropped)


def test_scale_gradient():
    f = jax.grad(lambda x: (beats.scale_gradient(x, 0.6) ** 2).sum())
    np.testing.assert_allclose(f(jnp.ones(3)), 1.2)
    assert beats.scale_gradient(jnp.float32(2.0), 0.6) == 2.0


def test_bfloat16_is_close_to_float32(tiny_params):
    x = noise(RATE, 5)[None]
    full, _ = run(TINY, tiny_params, x)
    half, _ = _compiled(dataclasses.replace(TINY, dtype="bfloat16"), False)(
        tiny_params, jnp.asarray(x), None, None)
    assert half.dtype == jnp.bfloat16
    # post-LN outputs are of unit scale; bfloat16 keeps ~3 significant digits
    assert np.abs(np.asarray(half, np.float32) - full).max() < 0.15


# ---------------------------------------------------------------------------- config
def test_config_from_a_beats_cfg():
    cfg = {**beats.BeatsConfig().beats_cfg(), "finetuned_model": True, "predictor_class": 527,
           "predictor_dropout": 0.0, "encoder_layers": 4}
    config = beats.BeatsConfig.from_beats_cfg(cfg)
    assert config.encoder_layers == 4 and config.max_distance == 800
    assert beats.encoder_from_config(cfg).config == config
    assert beats.encoder_from_config(ml_collections.ConfigDict(
        {**TINY.beats_cfg(), "dtype": "bfloat16"})).config.dtype == "bfloat16"
    with pytest.raises(ValueError, match="unknown keys \\['mystery'\\]"):
        beats.BeatsConfig.from_beats_cfg({**cfg, "mystery": 1})
    with pytest.raises(ValueError, match="deep_norm applies to post-LN"):
        beats.BeatsConfig(layer_norm_first=True)
    with pytest.raises(ValueError, match="'glu' FFN is not implemented"):
        beats.BeatsConfig(activation_fn="glu")
    with pytest.raises(ValueError, match="dtype"):
        beats.BeatsConfig(dtype="float16")


# ---------------------------------------------------------------------------- conversion
def assert_same_tree(a, b):
    flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
    flat_b = jax.tree_util.tree_flatten_with_path(b)[0]
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
    for (path, x), (_, y) in zip(flat_a, flat_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


def test_state_dict_both_ways(tiny_params):
    state = beats_checkpoint.state_dict_from_params(tiny_params, TINY)
    shapes = {k: v.shape for k, v in state.items()}
    assert shapes["patch_embedding.weight"] == (24, 1, 16, 16)  # OIHW
    assert shapes["post_extract_proj.weight"] == (32, 24)  # (out, in)
    assert shapes["encoder.pos_conv.0.weight_v"] == (32, 8, 16)  # (out, in / groups, K)
    assert shapes["encoder.pos_conv.0.weight_g"] == (1, 1, 16)
    assert shapes["encoder.layers.1.self_attn.grep_a"] == (1, 4, 1, 1)
    assert shapes["encoder.layers.1.self_attn.relative_attention_bias.weight"] == (32, 4)
    # patch embedding, its norm and projection; pos conv; final norm; the relative position
    # table under both layers; per layer q, k, v, out, grep (3), 2 norms, fc1, fc2
    assert len(state) == 5 + 3 + 2 + 2 + 2 * (8 + 3 + 4 + 4)
    assert_same_tree(beats_checkpoint.params_from_state_dict(state, TINY.beats_cfg()),
                     tiny_params)
    # torch.nn.utils.parametrizations.weight_norm's names, and a fine-tuned model's head
    renamed = {k.replace("pos_conv.0.weight_g", "pos_conv.0.parametrizations.weight.original0")
               .replace("pos_conv.0.weight_v", "pos_conv.0.parametrizations.weight.original1"): v
               for k, v in state.items()}
    renamed["predictor.weight"] = np.zeros((527, 32), np.float32)
    assert_same_tree(beats_checkpoint.params_from_state_dict(renamed, TINY), tiny_params)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("encoder.layers.1.fc2.bias"), "missing key 'encoder.layers.1.fc2.bias'"),
    (lambda s: s.pop("encoder.pos_conv.0.weight_g"), "missing key 'encoder.pos_conv.0.weight_g'"),
    (lambda s: s.update({"encoder.layers.0.fc1.weight": np.zeros((64, 33))}),
     r"'encoder.layers.0.fc1.weight' has shape \(64, 33\); the cfg's model needs \(64, 32\)"),
    (lambda s: s.update({"encoder.layers.2.fc1.weight": np.zeros((64, 32))}),
     "unexpected keys for the cfg's encoder: encoder.layers.2.fc1.weight"),
    (lambda s: s.update({"encoder.layers.1.self_attn.relative_attention_bias.weight":
                         np.ones((32, 4))}), "differs from"),
])
def test_state_dict_mistakes(tiny_params, change, message):
    state = beats_checkpoint.state_dict_from_params(tiny_params, TINY)
    change(state)
    with pytest.raises(beats_checkpoint.BeatsCheckpointError, match=message):
        beats_checkpoint.params_from_state_dict(state, TINY)


def test_convert_command(tiny_params, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    state = beats_checkpoint.state_dict_from_params(tiny_params, TINY)
    ckpt = tmp_path / "BEATs_tiny.pt"
    torch.save({"cfg": {**TINY.beats_cfg(), "finetuned_model": False},
                "model": {k: torch.from_numpy(np.array(v)) for k, v in state.items()}}, ckpt)
    out = tmp_path / "out" / "beats.msgpack"
    assert convert.main(["beats", str(ckpt), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    config, params = beats_checkpoint.load(out)
    assert config == TINY
    assert json.loads((tmp_path / "out" / "beats.json").read_text())["encoder_layers"] == 2
    assert_same_tree(params, jax.tree_util.tree_map(np.asarray, tiny_params))


def test_convert_command_errors_are_one_line(tmp_path, capsys):
    torch = pytest.importorskip("torch")

    def error(argv):
        assert convert.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ")
        return err[0]

    assert "beats takes two files (CKPT OUT), got 1" in error(["beats", "x.pt"])
    assert error(["beats", str(tmp_path / "none.pt"), str(tmp_path / "o.msgpack")]) == (
        f"error: {tmp_path / 'none.pt'}: no such file")
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    assert "not a BEATs checkpoint" in error(["beats", str(other), str(tmp_path / "o.msgpack")])
    assert "cannot end in .json" in error(["beats", str(other), str(tmp_path / "o.json")])
    assert not list(tmp_path.glob("o.*"))


# ---------------------------------------------------------------------------- regression
def test_fixed_seed_checksum(tiny_params):
    """A regression value, computed once by this code (2026-12-06): it guards against
    unintended changes of the numbers; the tests above (and tests/parity/test_beats.py
    against BEATs itself) say why the numbers are right. (The plain sum is ~0: every token
    leaves a LayerNorm of zero bias; a fixed random projection sees order and sign.)"""
    out, _ = run(TINY, tiny_params, noise(RATE, 7)[None])
    projection = np.random.RandomState(0).standard_normal(out.shape)
    assert float(np.abs(out).sum()) == pytest.approx(1237.77356, rel=1e-5)
    assert float((out * projection).sum()) == pytest.approx(-2.24642, abs=2e-3)
