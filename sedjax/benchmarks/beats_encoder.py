"""The BEATs encoder bench: embeddings/s of sedjax's jitted BEATs against the reference PyTorch
BEATs module (DESED_task's local/beats) with the same random weights, after checking that both
give the same embeddings; the JAX side alone where there is no reference."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging as std_logging
import os
import sys
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sedjax import models
from sedjax.benchmarks import environment, timing
from sedjax.interop import beats_checkpoint
from sedjax.models import beats
from sedjax.system import cli

# |sedjax - reference| of the bench's embeddings, float32: 99.9 % of the values within
# BEATS_TOL, every value within BEATS_TOL_MAX. Both are float32 computations of the same
# function; now and then a value goes further than 1e-4 apart (up to ~3e-4, |embedding| up to
# ~4), where either one's rounding is as far from a float64 computation (measured with torch in
# float64). A wrong weight or layer moves most values by far more.
BEATS_TOL, BEATS_TOL_MAX = 1e-4, 1e-3
BEATS_SIZES = ("base", "tiny")  # AS2M's architecture (12 layers x 768) or BeatsConfig.tiny
BEATS_RECIPE_DIR = os.path.join("recipes", "dcase2023_task4_baseline", "local", "beats")


class BeatsMismatchError(RuntimeError):
    """sedjax's BEATs and the reference give different embeddings: the bench would time two
    different models."""


def beats_architecture(size: str, dtype: str = "float32"):
    """sedjax.models.beats.BeatsConfig of `size` ('base': AS2M's, 'tiny') with `dtype`."""
    if size not in BEATS_SIZES:
        raise cli.UserError(f"BEATs size {size!r}: use one of {BEATS_SIZES}")
    config = beats.BeatsConfig() if size == "base" else beats.BeatsConfig.tiny()
    return dataclasses.replace(config, dtype=dtype)


def beats_params(config, seed: int = 0):
    """Random parameters of sedjax's Beats(config), drawn from `seed` (shapes do not depend on
    the input's length: a 20-frame input draws them)."""
    dummy = np.zeros((1, beats.FRAME_LENGTH + 19 * beats.FRAME_SHIFT), np.float32)
    return jax.jit(beats.Beats(config).init)(jax.random.PRNGKey(seed), dummy)["params"]


def noise_clips(n: int, samples: int, seed: int = 0) -> np.ndarray:
    """(n, samples) float32 Gaussian noise, each clip at its own level (std 0.05-0.2). The
    encoders' cost does not depend on what the clips hold; on noise, unlike on pure tones, no
    fbank band lies 50-60 dB below its frame's peak, where float32 FFT rounding differs."""
    rng = np.random.default_rng(seed)
    levels = rng.uniform(0.05, 0.2, (n, 1))
    return (rng.standard_normal((n, samples)) * levels).astype(np.float32)


def beats_reference(root: str | None = None):
    """(the reference's `BEATs` module, None) from DESED_task's local/beats (root: a DESED_task
    checkout, default $SEDJAX_DESED_TASK), or (None, why not)."""
    root = root or os.environ.get("SEDJAX_DESED_TASK")
    if not root:
        return None, ("SEDJAX_DESED_TASK is not set (a DESED_task checkout holds the reference "
                      "BEATs module)")
    folder = os.path.join(os.path.expanduser(root), BEATS_RECIPE_DIR)
    if not os.path.isfile(os.path.join(folder, "BEATs.py")):
        return None, f"{root}: no {os.path.join(BEATS_RECIPE_DIR, 'BEATs.py')}"
    if environment.torch_version() is None:
        return None, "torch is not installed (pip install -e '.[reference]')"
    # the checkout's local/beats as a package of its own name: nothing on sys.path changes
    name = "_sedjax_reference_beats"
    try:
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(
                name, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder])
            package = importlib.util.module_from_spec(spec)
            sys.modules[name] = package
            spec.loader.exec_module(package)
        return importlib.import_module(f"{name}.BEATs"), None
    except Exception as e:  # noqa: BLE001  (torchaudio missing, ...: the JAX side still runs)
        sys.modules.pop(name, None)
        return None, f"cannot import {folder}/BEATs.py ({type(e).__name__}: {e})"


def torch_beats(module, config, params):
    """The reference BEATs(BEATsConfig(cfg)) of `config` with sedjax's `params` (converted by
    sedjax.interop.beats_checkpoint, loaded strictly), in eval mode."""
    import torch

    cfg = {**config.beats_cfg(), "finetuned_model": False}
    std_logging.getLogger(module.__name__).setLevel(std_logging.WARNING)  # its config dump
    with warnings.catch_warnings():  # torch.nn.utils.weight_norm's deprecation
        warnings.simplefilter("ignore", FutureWarning)
        model = module.BEATs(module.BEATsConfig(cfg)).eval()
    state = beats_checkpoint.state_dict_from_params(params, cfg)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return model


def beats_bench(clips: int = 4, seconds: float = 10.0, size: str = "base",
                dtype: str = "float32", warmup: int = 1, repeats: int = 5, seed: int = 0,
                reference: bool | str = True, desed_task: str | None = None,
                on_line: Callable | None = None) -> dict:
    """Embeddings/s (clips/s) of sedjax's jitted BEATs encoder and of the reference PyTorch
    BEATs module (DESED_task's local/beats: BEATs.extract_features, as its
    extract_embeddings.py calls it, in torch.inference_mode) on one batch of `clips` noise
    clips (noise_clips) of `seconds` at 16 kHz, with the same random weights (sedjax's init
    from `seed`, converted); each after `warmup` untimed calls, the median of `repeats` timed
    calls.

    Before timing, both encoders' embeddings of the batch must agree (float32: 99.9 % of the
    values within BEATS_TOL, all within BEATS_TOL_MAX; BeatsMismatchError otherwise). Without
    the reference (`reference` False or a string saying why, no torch, no checkout at
    desed_task / $SEDJAX_DESED_TASK, or dtype bfloat16): the JAX side alone, and
    'reference_note' says why. on_line(text) gets each printed line."""
    say_line = on_line or (lambda text: None)
    config = beats_architecture(size, dtype)
    params = beats_params(config, seed)
    waves = noise_clips(clips, int(round(seconds * beats.SAMPLE_RATE)), seed)
    module, note = (beats_reference(desed_task) if reference is True else
                    (None, reference or "not asked for"))
    if module is not None and dtype != "float32":
        module, note = None, f"the reference runs float32 only (sedjax {dtype})"
    tokens = beats.num_tokens(waves.shape[1], config.input_patch_size)
    out = {"size": size, "layers": config.encoder_layers, "width": config.encoder_embed_dim,
           "heads": config.encoder_attention_heads, "params": models.count_params(params),
           "clips": clips, "seconds": seconds, "tokens": tokens, "dtype": dtype, "seed": seed,
           "warmup": warmup, "repeats": repeats, "clips_per_s": {"sedjax": None, "torch": None},
           "speedup": None, "max_abs_diff": None, "abs_diff_999": None,
           "tolerance": {"abs_diff_999": BEATS_TOL, "max_abs_diff": BEATS_TOL_MAX},
           "reference": None, "reference_note": note, "torch_threads": None}
    encode = jax.jit(lambda p, x: beats.Beats(config).apply({"params": p}, x)[0]
                     .astype(jnp.float32))
    x = jnp.asarray(waves)
    ours = np.asarray(encode(params, x))  # also compiles: never timed
    say_line(f" BEATs {size}: {config.encoder_layers} layers x {config.encoder_embed_dim} "
             f"({out['params']:,} parameters, random weights, seed {seed}), {clips} clips of "
             f"{seconds:g} s ({tokens} tokens each), {dtype}")
    if module is not None:
        import torch

        model = torch_beats(module, config, params)
        source = torch.from_numpy(waves)

        def torch_encode():
            with torch.inference_mode():
                return model.extract_features(source)[0]
        theirs = torch_encode().numpy()
        if theirs.shape != ours.shape:
            raise BeatsMismatchError(f"BEATs bench: sedjax's embeddings are {ours.shape}, the "
                                     f"reference's {theirs.shape}: nothing timed")
        diff = np.abs(ours.astype(np.float64) - theirs)
        out.update(max_abs_diff=float(diff.max()),
                   abs_diff_999=float(np.percentile(diff, 99.9)),
                   reference=os.path.dirname(module.__file__),
                   torch_threads=torch.get_num_threads())
        say_line(f" reference: {out['reference']}/BEATs.py (torch {torch.__version__}, "
                 f"{out['torch_threads']} threads)\n"
                 f" |sedjax - reference| over the batch's embeddings (up to "
                 f"{np.abs(theirs).max():.1f}): max {out['max_abs_diff']:.2e}, 99.9th "
                 f"percentile {out['abs_diff_999']:.2e}")
        if not (out["abs_diff_999"] <= BEATS_TOL and out["max_abs_diff"] <= BEATS_TOL_MAX):
            raise BeatsMismatchError(
                f"BEATs bench: sedjax's and the reference's embeddings differ (99.9th "
                f"percentile {out['abs_diff_999']:.2e}, max {out['max_abs_diff']:.2e}; "
                f"allowed {BEATS_TOL:g}, {BEATS_TOL_MAX:g}): not the same model, nothing timed")
    else:
        say_line(f" reference: none, {note}: sedjax alone")

    def run_jax(n):
        for _ in range(n):
            y = encode(params, x)
        y.block_until_ready()

    out["clips_per_s"]["sedjax"] = timing.rate(run_jax, clips, 1, warmup, repeats)
    rate = out["clips_per_s"]["sedjax"]
    say_line(f" {'sedjax (jax.jit)':<24} {rate:>9.2f} clips/s  ({clips / rate:.2f} s a batch)")
    if module is not None:
        def run_torch(n):
            for _ in range(n):
                torch_encode()

        theirs_rate = timing.rate(run_torch, clips, 1, warmup, repeats)
        out["clips_per_s"]["torch"] = theirs_rate
        out["speedup"] = rate / theirs_rate
        say_line(f" {'reference (torch)':<24} {theirs_rate:>9.2f} clips/s  "
                 f"({clips / theirs_rate:.2f} s a batch)\n"
                 f" sedjax/torch {out['speedup']:.2f}x")
    return out
