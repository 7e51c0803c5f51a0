"""sedjax's BEATs (sedjax.models.beats) against BEATs' own code, as DESED_task ships it
(recipes/dcase2023_task4_baseline/local/beats/, microsoft/unilm's beats/):

- the front end: sedjax's jax.numpy Kaldi fbank against torchaudio.compliance.kaldi.fbank,
  normalized as BEATs.preprocess (and the mel filters, the window, the position buckets);
- the encoder: a BEATs(BEATsConfig(cfg)) of AS2M's architecture with random weights (every
  tensor perturbed, biases and norms included), torch.save'd as a BEATs checkpoint, converted
  by `python -m sedjax.convert beats`; BEATs' extract_features(waveform, padding_mask) and
  sedjax's Beats give the same embeddings for 10-s clips, a batch of two, one padded.

SEDJAX_BEATS_LAYERS (default 2) sets the encoder's depth; AS2M's is 12:

    SEDJAX_DESED_TASK=/path/to/DESED_task SEDJAX_BEATS_LAYERS=12 \\
        python -m pytest tests/parity/test_beats.py -q -s

Figures (-s prints them): max |sedjax - BEATs| over all tokens and channels.
"""

from __future__ import annotations

from .conftest import import_desed_task

import_desed_task()  # skips this module without DESED_task, torch or torchaudio

import copy  # noqa: E402
import dataclasses  # noqa: E402
import os  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torchaudio.compliance.kaldi as ta_kaldi  # noqa: E402
from local.beats.BEATs import BEATs, BEATsConfig  # noqa: E402
from local.beats.backbone import MultiheadAttention  # noqa: E402

from sedjax import convert  # noqa: E402
from sedjax.interop import beats_checkpoint  # noqa: E402
from sedjax.models import beats  # noqa: E402

TOL = 1e-4  # float32, on the embeddings
# On the normalized fbank (x 13.1 in log mel): the largest differences are float32 FFT
# rounding in bands 50-60 dB below their frame's peak, where torchaudio's own fbank is as far
# from a float64 computation (printed beside); 99.9 % of the values agree to 1e-5.
FBANK_TOL, FBANK_TOL_999 = 3e-4, 1e-5
LAYERS = int(os.environ.get("SEDJAX_BEATS_LAYERS", "2"))
RATE = 16000
VALID = 63_000  # samples of the padded clip (3.9375 s of 10 s)


def waveforms() -> tuple[np.ndarray, np.ndarray]:
    """(2, 160000) float32 clips in [-1, 1] (tones in noise) and their padding mask: the
    first clip whole, the second VALID samples then zeros (mask True there)."""
    rng = np.random.default_rng(0)
    t = np.arange(10 * RATE) / RATE
    x = np.stack([0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size),
                  0.2 * np.sin(2 * np.pi * 2500 * t * (1 + 0.1 * t))
                  + 0.1 * rng.standard_normal(t.size)]).astype(np.float32)
    mask = np.zeros(x.shape, bool)
    mask[1, VALID:] = True
    x[mask] = 0.0
    return x, mask


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def fbank_float64(x: np.ndarray) -> np.ndarray:
    """Kaldi's fbank steps in float64 with numpy (sedjax's mel filters and window): what both
    float32 implementations approximate."""
    frames = (x.astype(np.float64) * 2 ** 15)[..., beats._frame_starts(x.shape[-1])]
    frames = frames - frames.mean(axis=-1, keepdims=True)
    previous = np.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
    frames = (frames - 0.97 * previous) * beats.povey_window()
    power = np.abs(np.fft.rfft(frames, n=512)[..., :256]) ** 2
    return np.log(np.maximum(power @ beats.kaldi_mel_banks().T.astype(np.float64),
                             beats.LOG_FLOOR))


# ---------------------------------------------------------------------------- front end
def test_fbank_equals_torchaudio_kaldi():
    x, _ = waveforms()
    ours = np.asarray(beats.preprocess(x))
    # preprocess uses no weights: a small BEATs will do
    model = BEATs(BEATsConfig({"input_patch_size": 16, "encoder_layers": 1, "embed_dim": 16,
                               "encoder_embed_dim": 16, "encoder_ffn_embed_dim": 16,
                               "encoder_attention_heads": 2, "conv_pos": 4,
                               "conv_pos_groups": 2}))
    with torch.no_grad():
        theirs = model.preprocess(torch.from_numpy(x)).numpy()  # BEATs' own normalization
        raw = torch.stack([ta_kaldi.fbank(torch.from_numpy(c)[None] * 2 ** 15,
                                          num_mel_bins=128, sample_frequency=16000,
                                          frame_length=25, frame_shift=10) for c in x]).numpy()
    assert ours.shape == theirs.shape == (2, 998, 128)
    diff = np.abs(ours.astype(np.float64) - theirs)
    d_norm, d_999 = float(diff.max()), float(np.percentile(diff, 99.9))
    log_mel = np.asarray(beats.kaldi_fbank(x * 2 ** 15))
    exact = fbank_float64(x)
    d_raw, ours_exact, theirs_exact = (max_diff(log_mel, raw), max_diff(log_mel, exact),
                                       max_diff(raw, exact))
    banks, _ = ta_kaldi.get_mel_banks(128, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)
    d_banks = max_diff(beats.kaldi_mel_banks(), banks.numpy())
    window = torch.hann_window(400, periodic=False).pow(0.85).numpy()
    d_window = max_diff(beats.povey_window(), window)
    print(f"\nfbank: max |sedjax - BEATs.preprocess| = {d_norm:.2e} normalized (99.9th "
          f"percentile {d_999:.1e}), {d_raw:.2e} in log mel (range {raw.min():.1f}.."
          f"{raw.max():.1f}); from float64: sedjax {ours_exact:.2e}, torchaudio "
          f"{theirs_exact:.2e}; mel filters {d_banks:.1e}, povey window {d_window:.1e}")
    assert d_norm <= FBANK_TOL and d_999 <= FBANK_TOL_999
    assert d_banks == 0 and d_window <= 1.2e-7  # the window: PyTorch's cos and pow, 1 ulp


def test_position_buckets_equal_beats():
    attention = MultiheadAttention(64, 4, self_attention=True,
                                   has_relative_attention_bias=True, num_buckets=320,
                                   max_distance=800)
    length = 2000  # every distance up to 1999 tokens (250 patch rows, 40 s)
    relative = torch.arange(length)[None, :] - torch.arange(length)[:, None]
    theirs = attention._relative_positions_bucket(relative, bidirectional=True).numpy()
    np.testing.assert_array_equal(beats.relative_position_buckets(length, 320, 800), theirs)


# ---------------------------------------------------------------------------- the encoder
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(BEATs module in eval mode, cfg, path of its .pt, sedjax config, converted params)."""
    cfg = {**beats.BeatsConfig(encoder_layers=LAYERS).beats_cfg(), "finetuned_model": False}
    torch.manual_seed(0)
    model = BEATs(BEATsConfig(cfg)).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # every tensor away from its init (zero biases, unit norms, ...)
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=generator))
        # position bias and gates of a trained model's size (their init is 0.02), so that
        # the comparison sees them: biases ~1.4 on the logits, gates from ~1 to ~3
        model.encoder.layers[0].self_attn.relative_attention_bias.weight.mul_(50)
        for layer in model.encoder.layers:
            layer.self_attn.grep_linear.weight.mul_(10)
    folder = tmp_path_factory.mktemp("beats")
    ckpt = folder / "BEATs_random.pt"
    torch.save({"cfg": cfg, "model": model.state_dict()}, ckpt)
    out = folder / "beats.msgpack"
    assert convert.main(["beats", str(ckpt), str(out)]) == 0
    config, params = beats_checkpoint.load(out)
    assert config.encoder_layers == LAYERS and config.deep_norm and not config.layer_norm_first
    return model, cfg, ckpt, config, params


def test_embeddings_equal_beats(reference):
    model, _, _, config, params = reference
    x, mask = waveforms()
    with torch.no_grad():
        theirs, their_mask = model.extract_features(torch.from_numpy(x),
                                                    padding_mask=torch.from_numpy(mask))
        theirs_whole, _ = model.extract_features(torch.from_numpy(x[:1]))
    apply = jax.jit(lambda p, w, m: beats.Beats(config).apply({"params": p}, w, m))
    ours, our_mask = apply(params, jnp.asarray(x), jnp.asarray(mask))
    ours_whole, _ = jax.jit(lambda p, w: beats.Beats(config).apply({"params": p}, w))(
        params, jnp.asarray(x[:1]))
    np.testing.assert_array_equal(np.asarray(our_mask), their_mask.numpy())
    valid = ~their_mask.numpy()
    d_whole = max_diff(ours[0], theirs[0])
    d_padded = max_diff(np.asarray(ours[1])[valid[1]], theirs[1].numpy()[valid[1]])
    d_all = max_diff(ours, theirs)
    d_nomask = max_diff(ours_whole, theirs_whole)
    scale = float(theirs.abs().max())
    print(f"\nBEATs {LAYERS} layers x {config.encoder_embed_dim}, 10 s, {ours.shape[1]} tokens "
          f"(|embedding| up to {scale:.1f}): max |sedjax - BEATs| = {d_whole:.2e} (whole clip "
          f"in a padded batch), {d_padded:.2e} (padded clip, {int(valid[1].sum())} valid "
          f"tokens), {d_all:.2e} (all tokens), {d_nomask:.2e} (no mask, batch of one)")
    assert max(d_whole, d_padded, d_all, d_nomask) <= TOL


def test_padded_clip_against_the_clip_alone(reference):
    """BEATs' padding rule (sedjax's default, above) keeps the partly padded patch row's first
    tokens, so BEATs' padded clip is not the clip alone; sedjax's 'strict' rule gives the clip
    alone's embeddings (BEATs' own, no padding) on the valid tokens."""
    model, _, _, config, params = reference
    x, mask = waveforms()
    n = beats.num_tokens(VALID)
    with torch.no_grad():
        padded, their_mask = model.extract_features(torch.from_numpy(x),
                                                    padding_mask=torch.from_numpy(mask))
        alone, _ = model.extract_features(torch.from_numpy(x[1:, :VALID]))
    strict = dataclasses.replace(config, padding_mask_rule="strict")
    ours, our_mask = jax.jit(lambda p, w, m: beats.Beats(strict).apply({"params": p}, w, m))(
        params, jnp.asarray(x), jnp.asarray(mask))
    assert alone.shape[1] == n and int((~their_mask[1]).sum()) > n
    assert np.asarray(our_mask[1]).tolist() == [False] * n + [True] * (ours.shape[1] - n)
    d_beats = max_diff(padded[1, :n], alone[0])
    d_strict = max_diff(ours[1, :n], alone[0])
    print(f"\nclip of {VALID} samples ({n} tokens) padded to 10 s vs alone: BEATs' rule keeps "
          f"{int((~their_mask[1]).sum())} tokens, max |BEATs padded - BEATs alone| = "
          f"{d_beats:.2e}; sedjax 'strict' keeps {n}, max |sedjax strict - BEATs alone| = "
          f"{d_strict:.2e}")
    assert d_strict <= TOL


def test_state_dict_from_params_loads_into_beats(reference):
    """sedjax's params back to a state dict: exactly BEATs' keys (strict load), the same
    tensors as the checkpoint's."""
    model, cfg, _, _, params = reference
    state = beats_checkpoint.state_dict_from_params(params, cfg)
    theirs = model.state_dict()
    assert sorted(state) == sorted(theirs)
    for k, v in state.items():
        np.testing.assert_array_equal(v, theirs[k].numpy(), err_msg=k)
    copy.deepcopy(model).load_state_dict({k: torch.from_numpy(np.array(v))
                                          for k, v in state.items()})


def test_parametrized_weight_norm_converts_to_the_same_kernel(reference):
    """torch.nn.utils.parametrizations.weight_norm (PyTorch >= 2.1's) names g and v
    original0 and original1: the converted position conv is the same function."""
    model, cfg, _, _, params = reference
    new = copy.deepcopy(model)
    conv = new.encoder.pos_conv[0]
    torch.nn.utils.remove_weight_norm(conv)
    torch.nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
    state = new.state_dict()
    assert "encoder.pos_conv.0.parametrizations.weight.original0" in state
    converted = beats_checkpoint.params_from_state_dict(state, cfg)

    def kernel(p):
        v, g = np.asarray(p["weight_v"], np.float64), np.asarray(p["weight_g"], np.float64)
        return v * (g / np.sqrt((v ** 2).sum(axis=(1, 2))))[:, None, None]

    pos, pos_new = params["encoder"]["pos_conv"], converted["encoder"]["pos_conv"]
    np.testing.assert_allclose(kernel(pos_new), kernel(pos), atol=1e-6)
    np.testing.assert_array_equal(pos_new["bias"], pos["bias"])
