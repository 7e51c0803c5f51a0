"""BEATs (Chen et al., 2022, "Audio Pre-Training with Acoustic Tokenizers") as a Flax encoder.

Since 2023 the DESED baselines feed their CRNN with frame embeddings of BEATs (microsoft/unilm
`beats/`, MIT; the copy in DESED_task's recipes/dcase2023_task4_baseline/local/beats/). This is
the same encoder written for sedjax, with the numbers of `BEATs.extract_features` (embeddings
to 1e-4, the fbank to float32 FFT rounding, in tests/parity/test_beats.py, on weights
converted by sedjax.interop.beats_checkpoint):

    waveform (B, samples) at 16 kHz, in [-1, 1]
    -> Kaldi fbank of waveform * 2^15 (128 mel bins, 25 ms frames every 10 ms), jax.numpy only
       (`kaldi_fbank`; no torch at run time), normalized (fbank - 15.41663) / (2 * 6.55582)
    -> 16 x 16 patches (frames x mel bins, no overlap) -> linear patch embedding (512)
       -> LayerNorm -> Linear to 768: tokens in time-major order, token = t * 8 + f for
       patch row t (16 frames, 160 ms) and mel-band group f (of 128 / 16 = 8)
    -> + convolutional position embedding (grouped Conv1d over the tokens, weight-normalized,
       kernel 128, 16 groups, GELU) -> LayerNorm (post-LN) -> 12 transformer layers
       (768-d, 12 heads, 3072 FFN) with a bucketed relative position bias (320 buckets,
       max distance 800) shared by all layers and gated per layer by the query
       (`gru_rel_pos`), residuals scaled by DeepNorm's alpha = (2 N)^(1/4)
    -> (B, tokens, 768) embeddings and the tokens' padding mask (True: padding).

10 s give 998 frames, 62 patch rows, 496 tokens (DESED_task's BEATs "frames" are these 496
tokens, rows and band groups interleaved). `encoder_from_config` builds the module from a
`BeatsConfig` (BEATs' own cfg names: a checkpoint's cfg dict converts field for field).

Padding: `padding_mask` (B, samples), True on padded samples, as BEATs' `extract_features`
takes it. BEATs maps it to frames, then to tokens, by splitting the axis evenly into as many
chunks as there are frames (tokens) and marking a chunk padded when all of it is
(`padding_mask_rule='beats'`, the default: the reference's numbers). Its token chunks do not
follow the token layout (tokens come 8 per 16-frame row; a chunk of 10 s is 2 frames), so the
first tokens of the partly padded row stay unmasked, and a clip's valid tokens in a padded
batch differ from the clip alone's (by up to 0.7 in tests/parity/test_beats.py, in BEATs as
here). `padding_mask_rule='strict'` marks a frame padded when any sample under its window is,
and a patch row when any of its frames is: then the valid tokens equal those of the unpadded
clip (to float rounding; tests/test_beats.py, and against BEATs' own clip alone).

Inference (`train=False`) is deterministic; `train=True` draws dropout (BEATs' five rates) and
layer drop from the 'dropout' rng, and scales gradients at each layer's input by
`layer_wise_gradient_decay_ratio` (BEATs' GradMultiply). Fine-tuned inside the DESED CRNN
(model.beats.trainable), each parameter's learning rate follows its layer
(`layer_learning_rates`: layer-wise decay, as BEiT's). `dtype='bfloat16'` computes the
patches and the transformer in bfloat16 (parameters, fbank, layer-norm statistics and softmax
in float32).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sedjax.models.dropout import Dropout

# ---------------------------------------------------------------------------- the front end
SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms
FFT_SIZE = 512  # Kaldi zero-pads each frame to the next power of two
NUM_MEL_BINS = 128
PREEMPHASIS = 0.97
LOW_FREQ = 20.0  # Kaldi's default low cutoff; the high one is Nyquist
POVEY_POWER = 0.85  # Kaldi's "povey" window: a Hann window to the power 0.85
# Kaldi floors mel energies at float32's epsilon before the log
LOG_FLOOR = float(np.finfo(np.float32).eps)
WAVEFORM_SCALE = 2.0 ** 15  # BEATs feeds Kaldi 16-bit sample values
FBANK_MEAN, FBANK_STD = 15.41663, 6.55582  # BEATs.preprocess's normalization (AudioSet's)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
PADDING_MASK_RULES = ("beats", "strict")
ACTIVATIONS = ("gelu", "gelu_accurate", "gelu_fast", "relu", "tanh", "linear")
# keys of a BEATs cfg that only concern its classification head (not part of the encoder)
PREDICTOR_KEYS = ("finetuned_model", "predictor_dropout", "predictor_class")


def num_frames(num_samples: int) -> int:
    """Kaldi's frame count (snip_edges): the 25-ms windows that fit whole, 1 + (n - 400) // 160."""
    if num_samples < FRAME_LENGTH:
        raise ValueError(f"BEATs' fbank needs at least {FRAME_LENGTH} samples (25 ms), got "
                         f"{num_samples}")
    return 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


def num_tokens(num_samples: int, patch: int = 16, mel_bins: int = NUM_MEL_BINS) -> int:
    """Tokens out for `num_samples` samples: (frames // patch) rows x (mel bins // patch)."""
    return (num_frames(num_samples) // patch) * (mel_bins // patch)


def _rounded(fn, x: np.ndarray, *args) -> np.ndarray:
    """fn of float32 x, correctly rounded to float32 (computed in float64). PyTorch's float32
    log gives these values (its cos and pow are within 1 ulp); numpy's float32 log is 1 ulp
    off at times, which moved the mel filters by up to 2e-5."""
    return fn(x.astype(np.float64), *args).astype(np.float32)


@functools.lru_cache(maxsize=None)
def povey_window() -> np.ndarray:
    """(400,) float32: Kaldi's povey window, the symmetric Hann window ** 0.85, in
    torchaudio's float32 steps."""
    n = np.arange(FRAME_LENGTH, dtype=np.float32)
    cos = _rounded(np.cos, n * np.float32(2 * math.pi / (FRAME_LENGTH - 1)))
    return _rounded(np.power, np.float32(0.5) - np.float32(0.5) * cos, POVEY_POWER)


def _kaldi_mel(freq: np.ndarray) -> np.ndarray:
    return np.float32(1127.0) * _rounded(np.log, np.float32(1.0) + freq / np.float32(700.0))


@functools.lru_cache(maxsize=None)
def kaldi_mel_banks(num_bins: int = NUM_MEL_BINS, fft_size: int = FFT_SIZE,
                    sample_rate: int = SAMPLE_RATE, low_freq: float = LOW_FREQ) -> np.ndarray:
    """(num_bins, fft_size // 2) float32: Kaldi's triangular mel filters (torchaudio's
    get_mel_banks without VTLN), over the FFT bins below Nyquist (Kaldi's last, Nyquist, bin
    has weight 0 in every filter).

    The triangles are linear in Kaldi's mel scale 1127 ln(1 + f / 700), spaced evenly from
    low_freq to Nyquist with num_bins + 2 edges: filter b rises from edge b to 1 at edge b + 1
    and falls to 0 at edge b + 2. Computed in float32 in torchaudio's order of operations: the
    same bits as torchaudio's (tests/parity/test_beats.py).
    """
    mel_low = 1127.0 * math.log(1.0 + low_freq / 700.0)
    mel_high = 1127.0 * math.log(1.0 + sample_rate / 2 / 700.0)
    delta = np.float32((mel_high - mel_low) / (num_bins + 1))
    b = np.arange(num_bins, dtype=np.float32)[:, None]
    left = np.float32(mel_low) + b * delta
    center = np.float32(mel_low) + (b + np.float32(1.0)) * delta
    right = np.float32(mel_low) + (b + np.float32(2.0)) * delta
    mel = _kaldi_mel(np.float32(sample_rate / fft_size)
                     * np.arange(fft_size // 2, dtype=np.float32))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    return np.maximum(np.float32(0.0), np.minimum(up, down)).astype(np.float32)


def kaldi_mel_centers(num_bins: int = NUM_MEL_BINS, sample_rate: int = SAMPLE_RATE,
                      low_freq: float = LOW_FREQ) -> np.ndarray:
    """(num_bins,) the filters' centre frequencies in Hz (float64)."""
    mel_low = 1127.0 * math.log(1.0 + low_freq / 700.0)
    mel_high = 1127.0 * math.log(1.0 + sample_rate / 2 / 700.0)
    centers = mel_low + (np.arange(num_bins) + 1.0) * (mel_high - mel_low) / (num_bins + 1)
    return 700.0 * (np.exp(centers / 1127.0) - 1.0)


def _frame_starts(num_samples: int) -> np.ndarray:
    """(frames, 400) sample indices of each frame's window."""
    starts = np.arange(num_frames(num_samples)) * FRAME_SHIFT
    return starts[:, None] + np.arange(FRAME_LENGTH)[None, :]


def kaldi_fbank(waveform: jax.Array) -> jax.Array:
    """(..., samples) -> (..., frames, 128) log mel energies, float32: torchaudio.compliance.
    kaldi.fbank with BEATs' settings (16 kHz, 25/10 ms, 128 bins) and Kaldi's defaults for the
    rest (no dither, DC offset removed per frame, pre-emphasis 0.97, povey window, 512-point
    power spectrum, mel filters from 20 Hz to Nyquist, log floored at float32's epsilon)."""
    x = jnp.asarray(waveform, jnp.float32)
    frames = x[..., _frame_starts(x.shape[-1])]
    frames = frames - frames.mean(axis=-1, keepdims=True)
    # pre-emphasis x[j] - 0.97 x[j - 1], the first sample against itself (Kaldi's convention)
    previous = jnp.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
    frames = (frames - PREEMPHASIS * previous) * povey_window()
    spectrum = jnp.fft.rfft(frames, n=FFT_SIZE)  # zero-padded from 400 to 512 points
    power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
    banks = kaldi_mel_banks()
    # the mel energies' log is sensitive to their rounding: full float32 products on any device
    energies = jnp.matmul(power[..., :banks.shape[1]], banks.T,
                          precision=jax.lax.Precision.HIGHEST)
    return jnp.log(jnp.maximum(energies, LOG_FLOOR))


def preprocess(waveform: jax.Array, mean: float = FBANK_MEAN, std: float = FBANK_STD
               ) -> jax.Array:
    """BEATs.preprocess: (B, samples) in [-1, 1] -> (B, frames, 128) normalized fbank."""
    return (kaldi_fbank(jnp.asarray(waveform, jnp.float32) * WAVEFORM_SCALE) - mean) / (2 * std)


# ---------------------------------------------------------------------------- padding masks
def split_all(mask: jax.Array, parts: int) -> jax.Array:
    """BEATs' forward_padding_mask: (B, n) -> (B, parts). The last n % parts entries are
    dropped and the rest split into `parts` equal consecutive chunks; a chunk is padding when
    all its entries are."""
    b, n = mask.shape
    usable = n - n % parts
    return mask[:, :usable].reshape(b, parts, usable // parts).all(axis=-1)


def strict_frame_mask(padding_mask: jax.Array) -> jax.Array:
    """(B, samples) -> (B, frames): a frame is padding when any sample of its window is."""
    return padding_mask[:, _frame_starts(padding_mask.shape[1])].any(axis=-1)


def strict_token_mask(frame_mask: jax.Array, patch: int, bands: int) -> jax.Array:
    """(B, frames) -> (B, rows * bands): every token of a patch row is padding when any of the
    row's `patch` frames is."""
    b, t = frame_mask.shape
    rows = t // patch
    row_mask = frame_mask[:, :rows * patch].reshape(b, rows, patch).any(axis=-1)
    return jnp.repeat(row_mask, bands, axis=1)


# ---------------------------------------------------------------------------- the config
@dataclasses.dataclass(frozen=True)
class BeatsConfig:
    """BEATs' hyperparameters under BEATs' own names (BEATsConfig of the reference), plus
    sedjax's `dtype` and `padding_mask_rule`.

    The defaults are the AS2M checkpoints' architecture (BEATs_iter3+ AS2M, what DESED_task
    extracts embeddings with): 16 x 16 patches embedded in 512, 12 post-LN DeepNorm layers of
    768 (12 heads, FFN 3072), conv position embedding 128 / 16 groups, relative position
    buckets 320 up to distance 800, gated. Dropout rates are BEATsConfig's defaults; a
    checkpoint's cfg (`from_beats_cfg`) sets every field it names.
    """

    input_patch_size: int = 16
    embed_dim: int = 512  # patch embedding width
    conv_bias: bool = False  # a bias in the patch embedding
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 1.0  # gradient scale at each layer's input
    layer_norm_first: bool = False  # pre-LN layers (False: post-LN, as AS2M)
    deep_norm: bool = True  # residuals scaled by (2 * encoder_layers) ** (1 / 4) (post-LN)
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0  # probability of skipping a whole layer in training
    dropout_input: float = 0.0  # after the patch embedding's projection
    conv_pos: int = 128  # kernel of the conv position embedding
    conv_pos_groups: int = 16
    relative_position_embedding: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True  # the relative position bias gated by the query
    # sedjax's own
    dtype: str = "float32"  # of the patches and the transformer: 'float32' or 'bfloat16'
    padding_mask_rule: str = "beats"  # 'beats' (the reference's) or 'strict' (module doc)

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"BeatsConfig.dtype: {self.dtype!r} is not one of {tuple(DTYPES)}")
        if self.padding_mask_rule not in PADDING_MASK_RULES:
            raise ValueError(f"BeatsConfig.padding_mask_rule: {self.padding_mask_rule!r} is not "
                             f"one of {PADDING_MASK_RULES}")
        if self.activation_fn not in ACTIVATIONS:
            raise ValueError(f"BeatsConfig.activation_fn: {self.activation_fn!r} is not one of "
                             f"{ACTIVATIONS} (BEATs' 'glu' FFN is not implemented)")
        if self.layer_norm_first and self.deep_norm:
            raise ValueError("BeatsConfig: deep_norm applies to post-LN layers "
                             "(layer_norm_first=False), as in BEATs")
        d, h, g = self.encoder_embed_dim, self.encoder_attention_heads, self.conv_pos_groups
        if d % h or d % g:
            raise ValueError(f"BeatsConfig: encoder_embed_dim {d} must divide into "
                             f"encoder_attention_heads {h} and conv_pos_groups {g}")

    @property
    def head_dim(self) -> int:
        return self.encoder_embed_dim // self.encoder_attention_heads

    @property
    def deep_norm_alpha(self) -> float:
        """The residual branch's scale of a post-LN DeepNorm layer, (2 N)^(1/4) (Wang et al.,
        2022), 1 without deep_norm."""
        return (2.0 * self.encoder_layers) ** 0.25 if self.deep_norm else 1.0

    @classmethod
    def from_beats_cfg(cls, cfg: Mapping[str, Any], **overrides) -> "BeatsConfig":
        """The config of a BEATs checkpoint's cfg dict (its BEATsConfig.__dict__): every
        encoder field it holds, the classification head's keys ignored; a key this module does
        not know is a ValueError (its meaning for the encoder is unknown)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - names - set(PREDICTOR_KEYS))
        if unknown:
            raise ValueError(f"BEATs cfg: unknown keys {unknown}")
        values = {k: v for k, v in cfg.items() if k in names}
        return cls(**{**values, **overrides})

    def beats_cfg(self) -> dict[str, Any]:
        """The BEATs cfg dict of this config (BEATsConfig's names only, no sedjax fields)."""
        out = dataclasses.asdict(self)
        for name in ("dtype", "padding_mask_rule"):
            out.pop(name)
        return out

    @classmethod
    def tiny(cls, **overrides) -> "BeatsConfig":
        """A small BEATs for tests: the same structure (DeepNorm, gated relative position
        bias, patches of 16 over 128 mel bins), 2 layers of 32 with 4 heads."""
        values = dict(embed_dim=24, encoder_layers=2, encoder_embed_dim=32,
                      encoder_ffn_embed_dim=64, encoder_attention_heads=4, conv_pos=16,
                      conv_pos_groups=4, num_buckets=32, max_distance=64)
        return cls(**{**values, **overrides})


def encoder_from_config(cfg: "BeatsConfig | Mapping[str, Any]") -> "Beats":
    """The BEATs encoder of a BeatsConfig, or of a mapping of its fields (a BEATs cfg dict, a
    ml_collections ConfigDict; `from_beats_cfg`'s rules)."""
    if not isinstance(cfg, BeatsConfig):
        to_dict = getattr(cfg, "to_dict", None)
        cfg = BeatsConfig.from_beats_cfg(dict(to_dict() if callable(to_dict) else cfg))
    return Beats(cfg)


# ---------------------------------------------------------------------------- initializers
def torch_default(fan_in: int):
    """PyTorch's default Linear/Conv init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)): BEATs keeps it
    for the patch embedding and its projection (outside the encoder's BERT init)."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


bert_normal = nn.initializers.normal(0.02)  # fairseq's init_bert_params


def xavier_normal(gain: float = 1.0):
    """torch.nn.init.xavier_normal_: N(0, gain^2 * 2 / (fan_in + fan_out))."""
    return nn.initializers.variance_scaling(gain * gain, "fan_avg", "normal")


# ---------------------------------------------------------------------------- the layers
@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def scale_gradient(x: jax.Array, scale: float) -> jax.Array:
    """The identity whose gradient is multiplied by `scale` (fairseq's GradMultiply)."""
    return x


def _scale_gradient_fwd(x, scale):
    return x, None


def _scale_gradient_bwd(scale, _, g):
    return (g * scale,)


scale_gradient.defvjp(_scale_gradient_fwd, _scale_gradient_bwd)


def activation(name: str):
    """BEATs' FFN activations (modules.get_activation_fn); 'gelu' is the exact (erf) GELU
    computed in float32, as fairseq's."""
    if name == "gelu":
        return lambda x: jax.nn.gelu(x.astype(jnp.float32), approximate=False).astype(x.dtype)
    if name in ("gelu_accurate", "gelu_fast"):  # the tanh approximation
        return lambda x: jax.nn.gelu(x, approximate=True)
    return {"relu": jax.nn.relu, "tanh": jnp.tanh, "linear": lambda x: x}[name]


def layer_norm(name: str, dtype) -> nn.LayerNorm:
    """PyTorch's LayerNorm: epsilon 1e-5, variance as the mean of squared deviations."""
    return nn.LayerNorm(epsilon=1e-5, dtype=dtype, use_fast_variance=False, name=name)


class PatchEmbedding(nn.Module):
    """(B, frames, bins) -> (B, rows * bands, features): each non-overlapping p x p patch
    (p frames by p mel bins) times a (p, p, 1, features) kernel, i.e. Conv2d(1, features,
    kernel p, stride p) over the spectrogram, flattened time-major (token = row * bands +
    band). Frames and bins beyond the last whole patch are dropped, as the strided conv does."""

    features: int
    patch: int
    use_bias: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        p = self.patch
        fan_in = p * p
        kernel = self.param("kernel", torch_default(fan_in), (p, p, 1, self.features),
                            jnp.float32)
        b, t, f = x.shape
        rows, bands = t // p, f // p
        patches = x[:, :rows * p, :bands * p].reshape(b, rows, p, bands, p)
        patches = patches.transpose(0, 1, 3, 2, 4).reshape(b, rows * bands, fan_in)
        y = jnp.dot(patches.astype(self.dtype), kernel.reshape(fan_in, -1).astype(self.dtype))
        if self.use_bias:
            y = y + self.param("bias", torch_default(fan_in), (self.features,),
                               jnp.float32).astype(self.dtype)
        return y


class PositionalConv(nn.Module):
    """BEATs' convolutional position embedding: GELU(Conv1d(x)) over the token axis, the
    conv grouped (`groups`), its kernel weight-normalized per tap (PyTorch's weight_norm with
    dim=2: weight = weight_g * weight_v / |weight_v|, the norm over each tap's (in, out)
    matrix) and 'same' length (an even kernel's extra output dropped, SamePad).

    Parameters: weight_v (kernel, features // groups, features), weight_g (kernel,), bias.
    """

    features: int
    kernel_size: int
    groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        k, d = self.kernel_size, self.features
        std = math.sqrt(4.0 / (k * d))  # fairseq's init of the position conv
        v = self.param("weight_v", nn.initializers.normal(std), (k, d // self.groups, d),
                       jnp.float32)
        # weight_norm starts with g = |v|, i.e. weight = v
        g = self.param("weight_g", lambda _: jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2))))
        bias = self.param("bias", nn.initializers.zeros, (d,), jnp.float32)
        norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True))
        kernel = v * (g[:, None, None] / norm)
        # PyTorch pads k // 2 on both sides (k + 1 outputs for an even k, the last dropped)
        pad = (k // 2, k // 2 - 1 if k % 2 == 0 else k // 2)
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), kernel.astype(self.dtype), window_strides=(1,),
            padding=(pad,), dimension_numbers=("NWC", "WIO", "NWC"),
            feature_group_count=self.groups)
        return activation("gelu")(y + bias.astype(self.dtype))


@functools.lru_cache(maxsize=32)
def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """(length, length) int32: the bucket of key j for query i (T5's bidirectional buckets,
    as BEATs' MultiheadAttention._relative_positions_bucket). Half the buckets for j > i,
    half for j <= i; in each half, distances below a quarter of num_buckets have a bucket of
    their own, longer ones share logarithmically wider buckets up to max_distance (beyond it,
    the last). Computed in float32 as BEATs does, so that distances on a bucket's edge fall
    where BEATs puts them."""
    half = num_buckets // 2
    exact = half // 2
    relative = np.arange(length)[None, :] - np.arange(length)[:, None]  # key - query
    distance = np.abs(relative)
    with np.errstate(divide="ignore"):  # distance 0: log(0), masked by `small` below
        scaled = (_rounded(np.log, distance.astype(np.float32) / np.float32(exact))
                  / np.float32(math.log(max_distance / exact)) * np.float32(half - exact))
    large = np.minimum(exact + np.where(distance >= exact, scaled, 0).astype(np.int64),
                       half - 1)
    buckets = np.where(distance < exact, distance, large) + (relative > 0) * half
    return buckets.astype(np.int32)


class SelfAttention(nn.Module):
    """BEATs' multi-head self-attention with a (gated) relative position bias.

    logits = q k^T / sqrt(head_dim) + gate(q) * position_bias, padded keys excluded. The
    logits are computed as BEATs does for half precision: q scaled down by 32 more, each row's
    max subtracted, then scaled back by 32 (the same softmax; products that stay small).
    The gate (`gated`, BEATs' gru_rel_pos) is per head and query, from the unscaled query
    q_h (B, L, head_dim): a, b = sigmoid of the two halves' sums of grep_linear(q_h) (8
    outputs), gate = a * (b * grep_a - 1) + 2 with grep_a a learnt scalar per head.
    """

    features: int
    heads: int
    dropout: float = 0.0
    gated: bool = True
    deep_norm_beta: float | None = None  # DeepNorm's init gain of v and out (None: BERT init)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, position_bias=None, key_mask=None, train: bool = False):
        d, h = self.features, self.heads
        hd = d // h
        beta = self.deep_norm_beta

        def proj(name, gain):
            init = bert_normal if beta is None else xavier_normal(gain)
            return nn.Dense(d, kernel_init=init, dtype=self.dtype, name=name)

        b, length, _ = x.shape
        q = proj("q_proj", 1.0)(x).reshape(b, length, h, hd)
        k = proj("k_proj", 1.0)(x).reshape(b, length, h, hd)
        v = proj("v_proj", beta or 1.0)(x).reshape(b, length, h, hd)
        alpha = 32.0  # BEATs' extra scaling for half precision
        qs = q * (hd ** -0.5 / alpha)
        logits = jnp.einsum("bqhd,bkhd->bhqk", qs, k).astype(jnp.float32)
        # the row max of the scaled-down logits (over every key, padded ones included, as
        # BEATs); the softmax does not depend on it, hence no gradient through it
        row_max = jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True))
        logits = (logits - row_max) * alpha
        if position_bias is not None:  # (H, L, L)
            bias = position_bias[None].astype(jnp.float32)
            if self.gated:
                gates = nn.Dense(8, kernel_init=bert_normal, dtype=self.dtype,
                                 name="grep_linear")(q)  # (B, L, H, 8)
                gates = jax.nn.sigmoid(gates.astype(jnp.float32).reshape(b, length, h, 2, 4)
                                       .sum(axis=-1))
                grep_a = self.param("grep_a", nn.initializers.ones, (h,), jnp.float32)
                gate = gates[..., 0] * (gates[..., 1] * grep_a - 1.0) + 2.0  # (B, L, H)
                bias = gate.transpose(0, 2, 1)[..., None] * bias  # (B, H, L, L)
            logits = logits + bias
        if key_mask is not None:
            # the float32 minimum, not -inf: a clip that is all padding gives numbers, not NaN
            logits = jnp.where(key_mask[:, None, None, :], jnp.finfo(jnp.float32).min, logits)
        probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        probs = Dropout(self.dropout, deterministic=not train)(probs)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v.astype(self.dtype)).reshape(b, length, d)
        init = bert_normal if beta is None else xavier_normal(beta)
        return nn.Dense(d, kernel_init=init, dtype=self.dtype, name="out_proj")(out)


class EncoderLayer(nn.Module):
    """One transformer layer: self-attention then FFN, each with dropout and a residual.

    Post-LN (BEATs' AS2M): x = LN(alpha x + f(x)), alpha DeepNorm's (2 N)^(1/4) (1 without
    deep_norm). Pre-LN (layer_norm_first): x = x + f(LN(x)).
    """

    config: BeatsConfig

    @nn.compact
    def __call__(self, x, position_bias=None, key_mask=None, train: bool = False):
        c = self.config
        dtype = DTYPES[c.dtype]
        # DeepNorm's init: v, out, fc1 and fc2 scaled by beta = (8 N)^(-1/4)
        beta = (8.0 * c.encoder_layers) ** -0.25 if c.deep_norm else None
        init = bert_normal if beta is None else xavier_normal(beta)
        alpha = c.deep_norm_alpha

        def dropout(rate):
            return Dropout(rate, deterministic=not train)

        attention = SelfAttention(c.encoder_embed_dim, c.encoder_attention_heads,
                                  c.attention_dropout, c.gru_rel_pos, beta, dtype,
                                  name="self_attn")
        attn_norm = layer_norm("self_attn_layer_norm", dtype)
        ffn_norm = layer_norm("final_layer_norm", dtype)

        def ffn(y):
            y = nn.Dense(c.encoder_ffn_embed_dim, kernel_init=init, dtype=dtype, name="fc1")(y)
            y = dropout(c.activation_dropout)(activation(c.activation_fn)(y))
            y = nn.Dense(c.encoder_embed_dim, kernel_init=init, dtype=dtype, name="fc2")(y)
            return dropout(c.dropout)(y)

        if c.layer_norm_first:
            x = x + dropout(c.dropout)(attention(attn_norm(x), position_bias, key_mask, train))
            return x + ffn(ffn_norm(x))
        x = attn_norm(x * alpha + dropout(c.dropout)(
            attention(x, position_bias, key_mask, train)))
        return ffn_norm(x * alpha + ffn(x))


class TransformerEncoder(nn.Module):
    """BEATs' TransformerEncoder: padded tokens zeroed, + conv position embedding,
    (post-LN: LayerNorm), dropout, the layers (relative position bias computed once from one
    table, BEATs' layer 0's, which the other layers share), (pre-LN: a final LayerNorm)."""

    config: BeatsConfig

    @nn.compact
    def __call__(self, x, padding_mask=None, train: bool = False):
        c = self.config
        dtype = DTYPES[c.dtype]
        if padding_mask is not None:
            x = jnp.where(padding_mask[..., None], jnp.zeros((), x.dtype), x)
        x = x + PositionalConv(c.encoder_embed_dim, c.conv_pos, c.conv_pos_groups, dtype,
                               name="pos_conv")(x)
        final_norm = layer_norm("layer_norm", dtype)
        if not c.layer_norm_first:
            x = final_norm(x)
        x = Dropout(c.dropout, deterministic=not train)(x)
        position_bias = None
        if c.relative_position_embedding:
            table = self.param("relative_attention_bias", bert_normal,
                               (c.num_buckets, c.encoder_attention_heads), jnp.float32)
            buckets = relative_position_buckets(x.shape[1], c.num_buckets, c.max_distance)
            position_bias = table[buckets].transpose(2, 0, 1)  # (H, L, L)
        for i in range(c.encoder_layers):
            if c.layer_wise_gradient_decay_ratio != 1.0:
                x = scale_gradient(x, c.layer_wise_gradient_decay_ratio)
            y = EncoderLayer(c, name=f"layers_{i}")(x, position_bias, padding_mask, train)
            if train and c.encoder_layerdrop > 0:
                # layer drop: the whole batch skips the layer with probability layerdrop
                keep = jax.random.uniform(self.make_rng("dropout")) > c.encoder_layerdrop
                y = jnp.where(keep, y, x)
            x = y
        if c.layer_norm_first:
            x = final_norm(x)
        return x


class Beats(nn.Module):
    """The BEATs encoder: waveforms -> (B, tokens, encoder_embed_dim) embeddings.

    `__call__(waveform, padding_mask=None, train=False)` computes the fbank and calls
    `encode(fbank, frame_mask, train)`, which a caller with its own fbank may apply directly
    (`method='encode'`). Both return (embeddings, token padding mask or None).
    """

    config: BeatsConfig

    def __call__(self, waveform, padding_mask=None, train: bool = False):
        """waveform (B, samples) at 16 kHz in [-1, 1]; padding_mask (B, samples) True on
        padding (or None)."""
        fbank = preprocess(waveform)
        frame_mask = None
        if padding_mask is not None:
            padding_mask = jnp.asarray(padding_mask, bool)
            frame_mask = (split_all(padding_mask, fbank.shape[1])
                          if self.config.padding_mask_rule == "beats"
                          else strict_frame_mask(padding_mask))
        return self.encode(fbank, frame_mask, train)

    @nn.compact
    def encode(self, fbank, frame_mask=None, train: bool = False):
        """fbank (B, frames, 128) normalized as `preprocess`; frame_mask (B, frames) True on
        padded frames (or None)."""
        c = self.config
        dtype = DTYPES[c.dtype]
        p = c.input_patch_size
        x = PatchEmbedding(c.embed_dim, p, c.conv_bias, dtype, name="patch_embedding")(fbank)
        x = layer_norm("layer_norm", dtype)(x)
        token_mask = None
        if frame_mask is not None:
            token_mask = (split_all(frame_mask, x.shape[1]) if c.padding_mask_rule == "beats"
                          else strict_token_mask(frame_mask, p, fbank.shape[2] // p))
        if c.embed_dim != c.encoder_embed_dim:
            x = nn.Dense(c.encoder_embed_dim, kernel_init=torch_default(c.embed_dim),
                         bias_init=torch_default(c.embed_dim), dtype=dtype,
                         name="post_extract_proj")(x)
        x = Dropout(c.dropout_input, deterministic=not train)(x)
        x = TransformerEncoder(c, name="encoder")(x, token_mask, train)
        return x, token_mask


# ---------------------------------------------------------------------------- fine-tuning
def layer_depth(path: tuple[str, ...], config: BeatsConfig) -> int:
    """Where the parameter at `path` (its keys in the encoder's params) sits in the stack,
    for layer-wise learning-rate decay: 0 before the transformer layers (the patch embedding,
    its LayerNorm and projection, the conv position embedding, the relative position table
    that every layer shares, a post-LN encoder's LayerNorm before the layers), i + 1 in layer
    i, encoder_layers + 1 after them (a pre-LN encoder's final LayerNorm)."""
    if len(path) >= 2 and path[0] == "encoder":
        name = path[1]
        if name.startswith("layers_"):
            return int(name[len("layers_"):]) + 1
        if name == "layer_norm" and config.layer_norm_first:
            return config.encoder_layers + 1
    return 0


def layer_learning_rates(params, config: BeatsConfig, learning_rate: float, decay: float):
    """A tree like the encoder's params of each parameter's learning rate under layer-wise
    decay (as BEiT's): learning_rate * decay ** (L + 1 - layer_depth), L = encoder_layers.
    Layer i (0 the first) gets learning_rate * decay ** (L - i), the parts before the layers
    learning_rate * decay ** (L + 1), a pre-LN final LayerNorm learning_rate; decay 1: all
    the same."""
    top = config.encoder_layers + 1

    def rate(path, _):
        keys = tuple(str(getattr(k, "key", k)) for k in path)
        return float(learning_rate * decay ** (top - layer_depth(keys, config)))
    return jax.tree_util.tree_map_with_path(rate, params)


def time_frequency(tokens: jax.Array, bands: int = NUM_MEL_BINS // 16) -> jax.Array:
    """(B, rows * bands, D) tokens -> (B, rows, bands, D): patch rows (160 ms each) by mel-band
    groups."""
    b, n, d = tokens.shape
    return tokens.reshape(b, n // bands, bands, d)
