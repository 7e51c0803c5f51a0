"""Frame embeddings computed by sedjax's own BEATs (`model.embeddings.source = 'beats'`), cached.

Instead of reading DESED_task's pre-extracted files (`model.embeddings.dir`,
sedjax.data.embeddings), a run computes each split's BEATs frame embeddings itself, once, into
the workdir, as the log-mel features are cached:

    <workdir>/features/embeddings-<split>-<hash>.npy         (N, tokens, D) float32
    <workdir>/features/embeddings-<split>-<hash>.valid.npy   (N,) int32 valid tokens per clip
    <workdir>/features/embeddings-<split>-<hash>.errors.json clips whose audio cannot be read

The hash covers what changes the numbers: the weights (the converted checkpoint's content,
or the random init's size and seed), the BEATs config (its dtype included), the padding rule,
the clip length in samples, the split's file list and where the audio came from. A rerun with
the same values reuses the files; another checkpoint or seed computes new ones. Each file is
written under a temporary name and renamed when complete (sedjax.system.files): a run killed
mid-split leaves no file that a rerun would take as done (it recomputes that split).

Per clip: the audio read as every sedjax stage reads it (sedjax.data.audio: mono, resampled to
16 kHz), cut or zero-padded to `data.clip_seconds` (10 s in DESED: 496 tokens = 62 patch rows
of 160 ms x 8 mel-band groups, in BEATs' order, token = row * 8 + band), then the encoder in
inference mode, `model.beats.batch_size` clips per jitted call. The padding after a short clip
is masked by `model.beats.padding_mask_rule`: 'beats' (BEATs' own mapping of a sample mask to
tokens), 'strict' (a token row is padding when any of its samples is: the valid tokens equal
those of the clip alone), or 'none' (no mask: the zeros are encoded as audio). The tokens are
stored as the encoder outputs them, padding included; `valid` counts the unmasked ones.

Fine-tuning (`model.beats.trainable`): the encoder is then part of the trained model
(sedjax.models.desed_crnn), so its tokens change with every update and are not cached. What
is cached instead is its deterministic front end, BEATs' normalized Kaldi fbank of each clip
(sedjax.models.beats.preprocess of the clip cut or zero-padded as above), which the model
encodes in its forward pass:

    <workdir>/features/beats_fbank-<split>-<hash>.npy          (N, frames, 128) float32
    <workdir>/features/beats_fbank-<split>-<hash>.errors.json  clips whose audio cannot be read

keyed by the clip length, the split's file list and where the audio came from (not by the
weights: every checkpoint reads the same fbank). Fine-tuning encodes the padding as audio
(`padding_mask_rule` 'none', as DESED_task does).

The weights: `model.beats.checkpoint`, a file `python -m sedjax.convert beats` wrote (its own
architecture: `model.beats.size = 'checkpoint'`), or, for demos and tests only, random weights
of the 'tiny' (BeatsConfig.tiny) or 'base' (AS2M's) architecture drawn from `model.beats.seed`:
embeddings of an untrained encoder carry no learned information about sounds.
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
from typing import Any, Sequence

import numpy as np
from absl import logging
from tqdm import tqdm

from sedjax.data import audio
from sedjax.models import beats
from sedjax.system import files, sharding

SOURCES = ("files", "beats")  # model.embeddings.source
SIZES = ("checkpoint", "tiny", "base")  # model.beats.size
PADDING_MASK_RULES = ("beats", "strict", "none")  # model.beats.padding_mask_rule
DTYPES = tuple(beats.DTYPES)  # model.beats.dtype
SAMPLE_RATE = beats.SAMPLE_RATE
_CACHE_VERSION = 1  # bumped when the stage computes other numbers from the same values


class BeatsSetupError(ValueError):
    """model.beats values that do not give an encoder (the message names the field)."""


def clip_samples(config) -> int:
    """Samples every clip is cut or zero-padded to: data.clip_seconds at 16 kHz."""
    return int(round(float(config.data.clip_seconds) * SAMPLE_RATE))


def num_tokens(config, beats_config: beats.BeatsConfig) -> int:
    """Tokens per clip (model.embeddings.frames must equal it); 0 when the clip is too short
    for one patch row."""
    samples = clip_samples(config)
    if samples < beats.FRAME_LENGTH:
        return 0
    return beats.num_tokens(samples, beats_config.input_patch_size)


def num_fbank_frames(config) -> int:
    """Fbank frames per clip of data.clip_seconds (Kaldi's 25-ms windows every 10 ms)."""
    return beats.num_frames(clip_samples(config))


def trainable(config) -> bool:
    """Whether the model trains sedjax's BEATs itself (model.embeddings.source 'beats' and
    model.beats.trainable): it reads the cached fbank and encodes it in its forward pass."""
    return config.model.embeddings.source == "beats" and bool(config.model.beats.trainable)


def model_input_shape(config) -> tuple[int, int]:
    """(frames, size) of the model's `embeddings` input per clip: the tokens of
    model.embeddings (frozen), or BEATs' fbank (frames, 128) when the encoder trains."""
    if trainable(config):
        return num_fbank_frames(config), beats.NUM_MEL_BINS
    e = config.model.embeddings
    return int(e.frames), int(e.size)


# ---------------------------------------------------------------------------- the encoder
def architecture(section) -> beats.BeatsConfig:
    """The BeatsConfig of model.beats (a checkpoint's from its .json, read without loading
    the weights), with the section's dtype; BeatsSetupError naming the field otherwise."""
    if section.checkpoint:
        from sedjax.interop import beats_checkpoint

        path = pathlib.Path(section.checkpoint).expanduser()
        if not path.is_file():
            raise BeatsSetupError(f"model.beats.checkpoint: no such file: {path} (convert a "
                                  "BEATs .pt with python -m sedjax.convert beats CKPT OUT)")
        if section.size != "checkpoint":
            raise BeatsSetupError(
                f"model.beats.size: {section.size!r} is a random-init architecture; a "
                f"checkpoint brings its own: set 'checkpoint' (or model.beats.checkpoint='')")
        try:
            cfg_file = beats_checkpoint.config_path(path)
            cfg = json.loads(cfg_file.read_text())
            config = beats.BeatsConfig.from_beats_cfg(cfg)
        except FileNotFoundError:
            raise BeatsSetupError(f"model.beats.checkpoint: {path} has no config beside it "
                                  f"({path.with_suffix('.json')}, written by python -m "
                                  "sedjax.convert beats)") from None
        except (ValueError, TypeError, AttributeError) as e:  # json, cfg keys and values
            raise BeatsSetupError(f"model.beats.checkpoint: {path.with_suffix('.json')} is "
                                  f"not a BEATs config: {e}") from None
    elif section.size == "checkpoint":
        raise BeatsSetupError(
            "model.beats.checkpoint: embeddings from BEATs need a converted checkpoint "
            "(python -m sedjax.convert beats CKPT OUT, then model.beats.checkpoint=OUT); "
            "random weights (model.beats.size 'tiny' or 'base') are for demos and tests only")
    else:
        config = beats.BeatsConfig.tiny() if section.size == "tiny" else beats.BeatsConfig()
    # the module's mask rule is 'beats' or 'strict'; 'none' passes no mask at all
    rule = section.padding_mask_rule if section.padding_mask_rule != "none" else "beats"
    return dataclasses.replace(config, dtype=section.dtype, padding_mask_rule=rule)


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file's content (size and mtime only key the memo within one process)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(functools.partial(f.read, 1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_identity(section) -> dict[str, Any]:
    """What the weights are, for the cache key: the checkpoint's content hash (not its path: a
    copy elsewhere reuses the cache, a file changed in place does not), or the random init's
    architecture and seed."""
    if not section.checkpoint:
        return {"init": section.size, "seed": int(section.seed)}
    path = pathlib.Path(section.checkpoint).expanduser().resolve()
    stat = path.stat()
    return {"checkpoint_sha256": _file_digest(str(path), stat.st_size, stat.st_mtime_ns)}


def load_params(section, config: beats.BeatsConfig) -> Any:
    """The encoder's parameters: the checkpoint's, or drawn from model.beats.seed; kept for
    the next split (the same weights: the same weights_identity)."""
    identity = json.dumps(weights_identity(section), sort_keys=True)
    return _params(identity, section.checkpoint, section.size, int(section.seed), config)


@functools.lru_cache(maxsize=2)
def _params(identity: str, checkpoint: str, size: str, seed: int, config: beats.BeatsConfig):
    if checkpoint:
        from sedjax.interop import beats_checkpoint

        return beats_checkpoint.load(pathlib.Path(checkpoint).expanduser())[1]
    import jax

    logging.warning("model.beats: random %s BEATs weights (seed %d): the embeddings carry no "
                    "learned information (demos and tests only)", size, seed)
    # the parameters' shapes do not depend on the input's length: a short one (20 frames)
    dummy = np.zeros((1, beats.FRAME_LENGTH + 19 * beats.FRAME_SHIFT), np.float32)
    return _init_fn(config)(jax.random.PRNGKey(seed), dummy)["params"]


@functools.lru_cache(maxsize=4)
def _init_fn(config: beats.BeatsConfig):
    """The jitted init of an architecture (compiled once per process: another seed reuses it)."""
    import jax

    return jax.jit(beats.Beats(config).init)


@functools.lru_cache(maxsize=4)
def _apply_fn(config: beats.BeatsConfig, masked: bool):
    """jitted (params, waves (B, S), lengths (B,)) -> (tokens (B, T, D) float32, valid (B,))."""
    import jax
    import jax.numpy as jnp

    module = beats.Beats(config)

    @jax.jit
    def apply(params, waves, lengths):
        mask = None
        if masked:  # True on the zeros after each clip's end
            mask = jnp.arange(waves.shape[1])[None, :] >= lengths[:, None]
        tokens, token_mask = module.apply({"params": params}, waves, mask)
        if token_mask is None:
            valid = jnp.full(tokens.shape[:1], tokens.shape[1], jnp.int32)
        else:  # a suffix of the tokens (padding comes after the clip): count the rest
            valid = jnp.sum(~token_mask, axis=1).astype(jnp.int32)
        return tokens.astype(jnp.float32), valid
    return apply


@functools.lru_cache(maxsize=1)
def _fbank_fn():
    """jitted (waves (B, S), lengths (B,)) -> (fbank (B, frames, 128) float32,): BEATs'
    normalized fbank (the zeros after a clip's end encoded as audio)."""
    import jax

    @jax.jit
    def apply(waves, lengths):
        del lengths
        return (beats.preprocess(waves),)
    return apply


def encoder_weights(config) -> tuple[beats.BeatsConfig, Any]:
    """(architecture, weights) of model.beats: what the frozen stage encodes with, and where
    a trained encoder starts from (the checkpoint's weights, or the random init of size and
    seed)."""
    section = config.model.beats
    arch = architecture(section)
    return arch, load_params(section, arch)


# ---------------------------------------------------------------------------- the stage
def cache_key(config, filenames: Sequence[str], source: str = "") -> str:
    """Hash of everything that changes a split's embeddings: weights (weights_identity), BEATs
    config, padding rule, clip samples, the file list and `source` (what made the audio,
    as sedjax.data.features.cache_key's)."""
    from sedjax.interop import beats_checkpoint

    section = config.model.beats
    key = {"version": _CACHE_VERSION, "weights": weights_identity(section),
           "beats": beats_checkpoint.config_dict(architecture(section)),
           "padding_mask_rule": section.padding_mask_rule, "samples": clip_samples(config),
           "sample_rate": SAMPLE_RATE, "filenames": list(filenames), "source": source}
    blob = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def cache_files(cache_dir, name: str, key: str) -> tuple[pathlib.Path, ...]:
    """(embeddings, valid tokens, errors) files of split `name` under cache key `key`."""
    stem = pathlib.Path(cache_dir) / f"embeddings-{name}-{key}"
    return tuple(pathlib.Path(f"{stem}{ext}") for ext in (".npy", ".valid.npy", ".errors.json"))


def _complete(paths: Sequence[pathlib.Path]) -> bool:
    return paths[0].exists() and paths[1].exists()  # the main file is renamed into place last


def _read(paths) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    errors = {}
    if paths[2].exists():
        errors = {int(e["row"]): e["reason"] for e in json.loads(paths[2].read_text())}
    return np.load(paths[0], mmap_mode="r"), np.load(paths[1]).astype(np.int32), errors


def compute(params, config: beats.BeatsConfig, paths: Sequence[os.PathLike], samples: int,
            padding_mask_rule: str, batch_size: int, out: np.ndarray, valid: np.ndarray,
            bar=None, num_workers: int | None = None) -> dict[int, str]:
    """Fills out (N, T, D) and valid (N,) with the embeddings of the clips at `paths` (each cut
    or zero-padded to `samples` at 16 kHz); returns {row: reason} of the clips that cannot be
    read (their rows zero, no valid token). Every call has batch_size clips (the last batch
    padded with silence), so the encoder compiles once."""
    apply = _apply_fn(config, padding_mask_rule != "none")

    def store(start, stop, result):
        tokens, counts = result
        out[start:stop] = np.asarray(tokens)[:stop - start]
        valid[start:stop] = np.asarray(counts)[:stop - start]

    errors = _batched(functools.partial(apply, params), paths, samples, batch_size, store, bar,
                      num_workers)
    for i in errors:
        out[i], valid[i] = 0.0, 0
    return errors


def compute_fbank(paths: Sequence[os.PathLike], samples: int, batch_size: int,
                  out: np.ndarray, bar=None, num_workers: int | None = None) -> dict[int, str]:
    """Fills out (N, frames, 128) with BEATs' normalized fbank of the clips at `paths` (each
    cut or zero-padded to `samples` at 16 kHz; beats.preprocess); returns {row: reason} of the
    clips that cannot be read (their rows zero)."""
    def store(start, stop, result):
        out[start:stop] = np.asarray(result[0])[:stop - start]

    errors = _batched(_fbank_fn(), paths, samples, batch_size, store, bar, num_workers)
    for i in errors:
        out[i] = 0.0
    return errors


def _batched(apply, paths, samples: int, batch_size: int, store, bar, num_workers
             ) -> dict[int, str]:
    """apply(waves (batch_size, samples), lengths) on the clips at `paths`, batch_size at a
    time (the last batch padded with silence: one compilation), decoding ahead while the
    device computes; store(start, stop, result) keeps each batch's rows. Returns {row:
    reason} of the clips that cannot be read (their waves zero)."""
    errors: dict[int, str] = {}

    def decode(path):
        try:
            y = audio.load_audio(path, SAMPLE_RATE)
        except audio.AudioError as e:
            return None, e.reason
        return y[:samples], None

    with futures.ThreadPoolExecutor(num_workers or os.cpu_count() or 1) as pool:
        decoded = pool.map(decode, paths)  # decodes ahead while the device computes
        pending = None
        for start in range(0, len(paths), batch_size):
            stop = min(start + batch_size, len(paths))
            waves = np.zeros((batch_size, samples), np.float32)
            lengths = np.full(batch_size, samples, np.int32)
            for j in range(stop - start):
                y, reason = next(decoded)
                if reason is not None:
                    errors[start + j] = reason
                    continue
                waves[j, :len(y)], lengths[j] = y, len(y)
            result = apply(waves, lengths)  # async: decoding goes on meanwhile
            if pending is not None:
                _store(store, *pending, bar)
            pending = (start, stop, result)
        if pending is not None:
            _store(store, *pending, bar)
    return errors


def _store(store, start, stop, result, bar):
    store(start, stop, result)
    if bar is not None:
        bar.update(stop - start)


def _build(name: str, paths, filenames, config, cache: Sequence[pathlib.Path]) -> None:
    section = config.model.beats
    beats_config = architecture(section)
    params = load_params(section, beats_config)
    samples = clip_samples(config)
    tokens = beats.num_tokens(samples, beats_config.input_patch_size)
    valid = np.zeros(len(paths), np.int32)
    with files.atomic_path(cache[0]) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                        shape=(len(paths), tokens,
                                               beats_config.encoder_embed_dim))
        with tqdm(total=len(paths), desc=f"BEATs {name}", unit="clip", disable=None) as bar:
            errors = compute(params, beats_config, list(paths), samples,
                             section.padding_mask_rule, int(section.batch_size), out, valid,
                             bar, config.features.num_workers or None)
        out.flush()
        del out
        files.save_npy(cache[1], valid)
        _write_errors(cache[2], errors, filenames)
    logging.info("embeddings %s: wrote %s (%d of %d clips unreadable)", name, cache[0],
                 len(errors), len(paths))


def extract_split(name: str, paths: Sequence[os.PathLike], filenames: Sequence[str], config,
                  cache_dir, source: str = "") -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """A split's BEATs embeddings, from the cache when complete, else computed (by process 0;
    the others wait) and cached atomically. Returns (tokens (N, T, D) float32, a read-only
    memmap; valid tokens (N,) int32; {row: reason} of clips that cannot be read, zero rows)."""
    cache = cache_files(cache_dir, name, cache_key(config, filenames, source))
    _ensure("embeddings", name, cache, lambda: _build(name, paths, filenames, config, cache))
    return _read(cache)


def _ensure(what: str, name: str, cache: Sequence[pathlib.Path], build) -> None:
    """Makes split `name`'s cache files unless they are complete: process 0 calls build(), the
    others wait for it."""
    if _complete(cache):
        logging.info("%s %s: reusing %s", what, name, cache[0])
    elif sharding.is_primary():
        cache[0].parent.mkdir(parents=True, exist_ok=True)
        build()
    sharding.sync(f"{what} {name}")


def _write_errors(path: pathlib.Path, errors: dict[int, str], filenames: Sequence[str]) -> None:
    """The clips that cannot be read, as [{row, filename, reason}] JSON."""
    rows = [{"row": i, "filename": filenames[i], "reason": errors[i]} for i in sorted(errors)]
    files.write_text(path, json.dumps(rows, indent=1) + "\n")


_FBANK_VERSION = 1  # bumped when the fbank stage computes other numbers from the same values


def fbank_cache_key(config, filenames: Sequence[str], source: str = "") -> str:
    """Hash of everything that changes a split's BEATs fbank: the clip samples, the file list
    and `source` (the normalization and mel bins are BEATs' constants: the version)."""
    key = {"version": _FBANK_VERSION, "fbank": "beats", "samples": clip_samples(config),
           "sample_rate": SAMPLE_RATE, "filenames": list(filenames), "source": source}
    blob = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def fbank_files(cache_dir, name: str, key: str) -> tuple[pathlib.Path, pathlib.Path]:
    """(fbank, errors) files of split `name` under cache key `key`."""
    stem = pathlib.Path(cache_dir) / f"beats_fbank-{name}-{key}"
    return pathlib.Path(f"{stem}.npy"), pathlib.Path(f"{stem}.errors.json")


def _build_fbank(name: str, paths, filenames, config, cache) -> None:
    samples = clip_samples(config)
    with files.atomic_path(cache[0]) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                        shape=(len(paths), beats.num_frames(samples),
                                               beats.NUM_MEL_BINS))
        with tqdm(total=len(paths), desc=f"BEATs fbank {name}", unit="clip",
                  disable=None) as bar:
            errors = compute_fbank(list(paths), samples, int(config.model.beats.batch_size),
                                   out, bar, config.features.num_workers or None)
        out.flush()
        del out
        _write_errors(cache[1], errors, filenames)
    logging.info("BEATs fbank %s: wrote %s (%d of %d clips unreadable)", name, cache[0],
                 len(errors), len(paths))


def extract_fbank_split(name: str, paths: Sequence[os.PathLike], filenames: Sequence[str],
                        config, cache_dir, source: str = ""
                        ) -> tuple[np.ndarray, dict[int, str]]:
    """A split's BEATs fbank (the input of a trained encoder), from the cache when complete,
    else computed (by process 0; the others wait) and cached atomically. Returns (fbank
    (N, frames, 128) float32, a read-only memmap; {row: reason} of clips that cannot be read,
    zero rows)."""
    cache = fbank_files(cache_dir, name, fbank_cache_key(config, filenames, source))
    _ensure("BEATs fbank", name, cache,
            lambda: _build_fbank(name, paths, filenames, config, cache))
    errors = {int(e["row"]): e["reason"] for e in json.loads(cache[1].read_text())}
    return np.load(cache[0], mmap_mode="r"), errors


def global_embeddings(tokens: np.ndarray, valid: np.ndarray, chunk: int = 64) -> np.ndarray:
    """(N, D) float32: each clip's mean over its valid tokens (all of them when none is)."""
    out = np.zeros((len(tokens), tokens.shape[2]), np.float32)
    for start in range(0, len(tokens), chunk):
        x = np.asarray(tokens[start:start + chunk], np.float64)
        n = np.asarray(valid[start:start + chunk])
        n = np.where(n > 0, n, x.shape[1])
        keep = np.arange(x.shape[1])[None, :] < n[:, None]
        out[start:start + len(x)] = (x * keep[..., None]).sum(1) / n[:, None]
    return out
