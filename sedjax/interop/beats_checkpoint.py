"""BEATs checkpoints (microsoft/unilm beats/, PyTorch) -> sedjax.models.beats parameters.

A BEATs .pt file is torch.save({'cfg': BEATsConfig.__dict__, 'model': BEATs.state_dict()}).
Its encoder's tensors map onto sedjax.models.beats.Beats' parameters as below (i: layer, E:
embed_dim, D: encoder_embed_dim, K: conv_pos, G: conv_pos_groups, H: heads, p: patch size):

    patch_embedding.weight (E, 1, p, p) [.bias]   patch_embedding/kernel (p, p, 1, E) [bias]
    layer_norm.weight, .bias                      layer_norm/scale, bias
    post_extract_proj.weight (D, E), .bias        post_extract_proj/kernel (E, D), bias
    encoder.pos_conv.0.weight_g (1, 1, K)         encoder/pos_conv/weight_g (K,)
    encoder.pos_conv.0.weight_v (D, D / G, K)     encoder/pos_conv/weight_v (K, D / G, D)
      (or .parametrizations.weight.original0/1: torch.nn.utils.parametrizations.weight_norm)
    encoder.pos_conv.0.bias                       encoder/pos_conv/bias
    encoder.layer_norm.weight, .bias              encoder/layer_norm/scale, bias
    encoder.layers.0.self_attn.                   encoder/relative_attention_bias (320, H)
      relative_attention_bias.weight (320, H)       (the other layers' copies are the same
                                                    tensor in BEATs: checked equal, dropped)
    encoder.layers.{i}.self_attn.{q,k,v,out}_proj encoder/layers_{i}/self_attn/{q,k,v,out}_proj
    encoder.layers.{i}.self_attn.grep_linear      .../self_attn/grep_linear (D / H, 8)
    encoder.layers.{i}.self_attn.grep_a (1,H,1,1) .../self_attn/grep_a (H,)
    encoder.layers.{i}.self_attn_layer_norm, fc1, fc2, final_layer_norm  the same names

Linear weights are transposed ((out, in) -> (in, out)), the patch conv goes from OIHW to HWIO,
the position conv from (out, in / G, K) to (K, in / G, out). The classification head of a
fine-tuned checkpoint (predictor.*) is left out: sedjax's Beats is the encoder.

`python -m sedjax.convert beats CKPT OUT` writes OUT (the parameters, flax.serialization
msgpack) and OUT with suffix .json (the config's BEATs cfg); `load` reads them back.
Numpy only at import; torch is imported by `read_checkpoint`.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from sedjax.models.beats import BeatsConfig

POS_CONV = "encoder.pos_conv.0"
# torch.nn.utils.weight_norm's names, then torch.nn.utils.parametrizations.weight_norm's
WEIGHT_NORM_NAMES = ((f"{POS_CONV}.weight_g", f"{POS_CONV}.weight_v"),
                     (f"{POS_CONV}.parametrizations.weight.original0",
                      f"{POS_CONV}.parametrizations.weight.original1"))
IGNORED_PREFIXES = ("predictor.",)  # a fine-tuned checkpoint's classification head
_SHARED_BIAS = re.compile(r"encoder\.layers\.(\d+)\.self_attn\.relative_attention_bias\.weight")


class BeatsCheckpointError(ValueError):
    """A file or state dict that is not a BEATs checkpoint sedjax can convert."""


# ---------------------------------------------------------------------------- the key table
def _entries(c: BeatsConfig) -> list[tuple[str, tuple[str, ...], str, tuple[int, ...]]]:
    """(torch key, flax path, kind, torch shape) of every tensor of the encoder; kind: 'linear'
    (transposed), 'patch' (OIHW -> HWIO), 'pos_v' ((out, in / G, K) -> (K, in / G, out)),
    'pos_g' ((1, 1, K) -> (K,)), 'heads' ((1, H, 1, 1) -> (H,)) or 'vector' (as is)."""
    e, d, f, h = c.embed_dim, c.encoder_embed_dim, c.encoder_ffn_embed_dim, \
        c.encoder_attention_heads
    p, k = c.input_patch_size, c.conv_pos

    def dense(torch_name, path, n_in, n_out):
        return [(f"{torch_name}.weight", (*path, "kernel"), "linear", (n_out, n_in)),
                (f"{torch_name}.bias", (*path, "bias"), "vector", (n_out,))]

    def norm(torch_name, path, n):
        return [(f"{torch_name}.weight", (*path, "scale"), "vector", (n,)),
                (f"{torch_name}.bias", (*path, "bias"), "vector", (n,))]

    out = [("patch_embedding.weight", ("patch_embedding", "kernel"), "patch", (e, 1, p, p))]
    if c.conv_bias:
        out.append(("patch_embedding.bias", ("patch_embedding", "bias"), "vector", (e,)))
    out += norm("layer_norm", ("layer_norm",), e)
    if e != d:
        out += dense("post_extract_proj", ("post_extract_proj",), e, d)
    pos = ("encoder", "pos_conv")
    out += [(WEIGHT_NORM_NAMES[0][0], (*pos, "weight_g"), "pos_g", (1, 1, k)),
            (WEIGHT_NORM_NAMES[0][1], (*pos, "weight_v"), "pos_v", (d, d // c.conv_pos_groups,
                                                                     k)),
            (f"{POS_CONV}.bias", (*pos, "bias"), "vector", (d,))]
    out += norm("encoder.layer_norm", ("encoder", "layer_norm"), d)
    if c.relative_position_embedding:
        out.append(("encoder.layers.0.self_attn.relative_attention_bias.weight",
                    ("encoder", "relative_attention_bias"), "vector", (c.num_buckets, h)))
    for i in range(c.encoder_layers):
        layer, torch_layer = ("encoder", f"layers_{i}"), f"encoder.layers.{i}"
        attn, torch_attn = (*layer, "self_attn"), f"{torch_layer}.self_attn"
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out += dense(f"{torch_attn}.{name}", (*attn, name), d, d)
        if c.gru_rel_pos and c.relative_position_embedding:
            out += dense(f"{torch_attn}.grep_linear", (*attn, "grep_linear"), d // h, 8)
            out.append((f"{torch_attn}.grep_a", (*attn, "grep_a"), "heads", (1, h, 1, 1)))
        out += norm(f"{torch_layer}.self_attn_layer_norm", (*layer, "self_attn_layer_norm"), d)
        out += dense(f"{torch_layer}.fc1", (*layer, "fc1"), d, f)
        out += dense(f"{torch_layer}.fc2", (*layer, "fc2"), f, d)
        out += norm(f"{torch_layer}.final_layer_norm", (*layer, "final_layer_norm"), d)
    return out


def _to_flax(kind: str, x: np.ndarray) -> np.ndarray:
    if kind == "linear":
        return x.T
    if kind == "patch":
        return x.transpose(2, 3, 1, 0)
    if kind == "pos_v":
        return x.transpose(2, 1, 0)
    if kind in ("pos_g", "heads"):
        return x.reshape(-1)
    return x


def _to_torch(kind: str, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if kind == "linear":
        return x.T
    if kind == "patch":
        return x.transpose(3, 2, 0, 1)
    if kind == "pos_v":
        return x.transpose(2, 1, 0)
    return x.reshape(shape)


def _config(cfg: BeatsConfig | Mapping[str, Any]) -> BeatsConfig:
    if isinstance(cfg, BeatsConfig):
        return cfg
    try:
        return BeatsConfig.from_beats_cfg(cfg)
    except (TypeError, ValueError) as e:
        raise BeatsCheckpointError(str(e)) from None


# ---------------------------------------------------------------------------- torch -> sedjax
def _weight_norm_keys(state_dict: Mapping[str, Any]) -> dict[str, str]:
    """{the table's key: the state dict's} for the position conv's g and v, whichever of
    PyTorch's two weight-norm namings the checkpoint has."""
    for g, v in WEIGHT_NORM_NAMES:
        if g in state_dict and v in state_dict:
            return {WEIGHT_NORM_NAMES[0][0]: g, WEIGHT_NORM_NAMES[0][1]: v}
    raise BeatsCheckpointError(f"missing key '{WEIGHT_NORM_NAMES[0][0]}' (or "
                               f"'{WEIGHT_NORM_NAMES[1][0]}'): the position conv's weight norm")


def params_from_state_dict(state_dict: Mapping[str, Any], cfg: BeatsConfig | Mapping[str, Any]
                           ) -> dict:
    """sedjax Beats params (nested dicts of float32 numpy arrays) from a BEATs state dict
    (tensors or arrays) and its cfg (a BEATs cfg dict or a BeatsConfig).

    BeatsCheckpointError for a missing key, a tensor of another shape than the cfg's model
    has, a key the encoder does not have (other than predictor.*), or layers whose shared
    relative position table differs from layer 0's.
    """
    c = _config(cfg)
    arrays = {str(k): _to_numpy(v) for k, v in state_dict.items()}
    renamed = _weight_norm_keys(arrays)
    params: dict = {}
    used = set(renamed.values())
    for key, path, kind, shape in _entries(c):
        source = renamed.get(key, key)
        if source not in arrays:
            raise BeatsCheckpointError(f"missing key '{source}'")
        x = arrays[source]
        if tuple(x.shape) != shape:
            raise BeatsCheckpointError(f"'{source}' has shape {tuple(x.shape)}; the cfg's "
                                       f"model needs {shape}")
        used.add(source)
        node = params
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = np.ascontiguousarray(_to_flax(kind, x), dtype=np.float32)
    table = "encoder.layers.0.self_attn.relative_attention_bias.weight"
    for key in arrays:
        shared = _SHARED_BIAS.fullmatch(key)
        if shared and int(shared.group(1)) < c.encoder_layers and table in arrays:
            if not np.array_equal(arrays[key], arrays[table]):
                raise BeatsCheckpointError(f"'{key}' differs from '{table}' (BEATs' layers "
                                           "share layer 0's relative position table)")
            used.add(key)
    if c.gru_rel_pos and not c.relative_position_embedding:
        # BEATs builds the gates with gru_rel_pos alone but uses them only on a position bias
        used |= {k for k in arrays if re.search(r"\.self_attn\.grep_(linear|a)\b", k)}
    unexpected = sorted(k for k in set(arrays) - used if not k.startswith(IGNORED_PREFIXES))
    if unexpected:
        more = f" and {len(unexpected) - 3} more" if len(unexpected) > 3 else ""
        raise BeatsCheckpointError(f"unexpected keys for the cfg's encoder: "
                                   f"{', '.join(unexpected[:3])}{more}")
    return params


def state_dict_from_params(params: Mapping[str, Any], cfg: BeatsConfig | Mapping[str, Any]
                           ) -> dict[str, np.ndarray]:
    """The BEATs state dict (numpy, torch.nn.utils.weight_norm's names, the relative position
    table under every layer as BEATs' state_dict lists it) of sedjax Beats params: what
    `BEATs(BEATsConfig(cfg)).load_state_dict` takes without its predictor."""
    c = _config(cfg)
    out: dict[str, np.ndarray] = {}
    for key, path, kind, shape in _entries(c):
        node: Any = params
        for name in path:
            node = node[name]
        out[key] = np.ascontiguousarray(_to_torch(kind, np.asarray(node, np.float32), shape))
        if path == ("encoder", "relative_attention_bias"):
            for i in range(1, c.encoder_layers):
                out[f"encoder.layers.{i}.self_attn.relative_attention_bias.weight"] = out[key]
    return out


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "numpy"):
        return x.detach().cpu().float().numpy()
    return np.asarray(x)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """(cfg dict, state dict as numpy) of a BEATs .pt file, read with torch.load(map_location=
    'cpu', weights_only=True): no arbitrary object is unpickled."""
    try:
        import torch
    except ImportError:
        raise BeatsCheckpointError(f"reading {path} needs PyTorch: pip install -e "
                                   "'.[reference]' (or pip install torch)") from None
    if not os.path.isfile(path):
        raise BeatsCheckpointError(f"{path}: no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch raises UnpicklingError, RuntimeError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BeatsCheckpointError(f"{path}: not readable as a torch checkpoint ({first})"
                                   ) from None
    if not (isinstance(data, Mapping) and isinstance(data.get("cfg"), Mapping)
            and isinstance(data.get("model"), Mapping)):
        found = (f"keys {sorted(map(str, data))[:5]}" if isinstance(data, Mapping)
                 else f"a {type(data).__name__}")
        raise BeatsCheckpointError(f"{path}: not a BEATs checkpoint (a dict of 'cfg' and "
                                   f"'model'; found {found})")
    state = {str(k): _to_numpy(v) for k, v in data["model"].items() if hasattr(v, "shape")}
    return dict(data["cfg"]), state


def convert(path: str | os.PathLike, **overrides) -> tuple[BeatsConfig, dict]:
    """(BeatsConfig, params) of a BEATs .pt file; overrides: sedjax's BeatsConfig fields
    (dtype, padding_mask_rule). Errors name the file."""
    cfg, state = read_checkpoint(path)
    try:
        config = BeatsConfig.from_beats_cfg(cfg, **overrides)
        return config, params_from_state_dict(state, config)
    except (TypeError, ValueError) as e:
        raise BeatsCheckpointError(f"{path}: {e}") from None


# ---------------------------------------------------------------------------- sedjax's files
def config_path(out: str | os.PathLike) -> pathlib.Path:
    """Where the config of the parameters file `out` goes: `out` with suffix .json."""
    out = pathlib.Path(out)
    if out.suffix == ".json":
        raise BeatsCheckpointError(f"{out}: the parameters file cannot end in .json (its "
                                   "config is written next to it as .json)")
    return out.with_suffix(".json")


def save(params: Mapping[str, Any], config: BeatsConfig, out: str | os.PathLike
         ) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes `out` (params, flax.serialization msgpack) and its .json (config's BEATs cfg
    and sedjax fields), each atomically; returns both paths."""
    from flax import serialization

    from sedjax.system import files

    cfg_file = config_path(out)
    files.write_bytes(out, serialization.msgpack_serialize(_plain(params)))
    files.write_text(cfg_file, json.dumps(config_dict(config), indent=2) + "\n")
    return pathlib.Path(out), cfg_file


def config_dict(config: BeatsConfig) -> dict[str, Any]:
    """Every field of config (BEATs' cfg names and sedjax's)."""
    return {**config.beats_cfg(), "dtype": config.dtype,
            "padding_mask_rule": config.padding_mask_rule}


def load(path: str | os.PathLike) -> tuple[BeatsConfig, dict]:
    """(BeatsConfig, params) that `save` wrote to `path` (and its .json)."""
    from flax import serialization

    cfg_file = config_path(path)
    for f in (path, cfg_file):
        if not os.path.isfile(f):
            raise BeatsCheckpointError(f"{f}: no such file")
    config = _config(json.loads(pathlib.Path(cfg_file).read_text()))
    params = serialization.msgpack_restore(pathlib.Path(path).read_bytes())
    return config, params


def _plain(tree: Any) -> Any:
    """Nested mappings (flax FrozenDicts included) -> dicts of numpy arrays."""
    if isinstance(tree, Mapping):
        return {str(k): _plain(v) for k, v in tree.items()}
    return np.asarray(tree)
