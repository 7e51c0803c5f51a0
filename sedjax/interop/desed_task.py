"""DESED_task's CRNN state dict <-> sedjax's desed_crnn variables, and its Lightning checkpoints.

DESED_task (DCASE-REPO/DESED_task: desed_task/nnet/{CNN,RNN,CRNN}.py) names its tensors as on
the left; sedjax.models.desed_crnn.DesedCRNN's variables are on the right (i: conv block,
k: GRU layer, H: GRU units, C: classes, E: embedding size):

    cnn.cnn.conv{i}.weight (out, in, kh, kw), .bias    params GatedConvBlock_{i}/Conv_0 kernel
                                                       (kh, kw, in, out), bias
    cnn.cnn.batchnorm{i}.weight, .bias                 params .../BatchNorm_0 scale, bias
    cnn.cnn.batchnorm{i}.running_mean, .running_var    batch_stats .../BatchNorm_0 mean, var
    cnn.cnn.batchnorm{i}.num_batches_tracked           (none: DESED's momentum is fixed, the
                                                       count is unused; written as 0)
    cnn.cnn.glu{i}.linear.weight (out, in), .bias      params .../glu kernel (in, out), bias
    rnn.rnn.weight_ih_l{k}[_reverse] (3H, in)          params gru{k}_{forward,backward}/
                                                       input_kernel (in, 3H)
    rnn.rnn.bias_ih_l{k}[_reverse] (3H,)               .../input_bias
    rnn.rnn.weight_hh_l{k}[_reverse] (3H, H), bias_hh  .../step/hidden_kernel (H, 3H), hidden_bias
    dense.weight (C, 2H), .bias                        params dense
    dense_softmax.weight (C, 2H), .bias                params attention (DESED's attention=True)
    cat_tf.weight (nb, nb + E), .bias                  params embeddings_projection
                                                       (use_embeddings, aggregation 'pool1d')

DESED_task's aggregation_type 'interpolate' has the same tensors as 'pool1d' and reads as it
(sedjax average-pools); 'frame' and 'global' (shrink_emb, frame_embs_encoder) are refused.
GRU gates keep PyTorch's order (r, z, n) on both sides; Linear matrices are transposed
(torch stores (out, in), flax (in, out)); conv kernels go from OIHW to HWIO, H being time and
W frequency on both sides (DESED's CNN reads (B, 1, frames, mels)). Conv layers are named
Conv_0 (model.conv_impl 'xla' or 'auto'); state_dict_from_variables also reads Im2ColConv_0.

Numpy only at import; torch is imported by the two functions that read or write .pt files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

PREFIXES = ("sed_student.", "sed_teacher.")  # DESED_task's LightningModule attributes
STUDENT, TEACHER = "sed_student", "sed_teacher"


class DesedTaskError(ValueError):
    """A DESED_task state dict or checkpoint that does not map onto sedjax's desed_crnn."""


# ---------------------------------------------------------------------------- the key table
def _entries(depth: int, gru_layers: int, attention: bool, embeddings: bool,
             conv_name: str = "Conv_0") -> list[tuple[str, str, tuple[str, ...], str]]:
    """(torch key, collection, flax path, kind) of every tensor; kind: 'conv' (OIHW <-> HWIO),
    'linear' (transposed), 'vector' (as is) or 'count' (torch only)."""
    out = []
    for i in range(depth):
        block = f"GatedConvBlock_{i}"
        conv, norm, glu = f"cnn.cnn.conv{i}", f"cnn.cnn.batchnorm{i}", f"cnn.cnn.glu{i}.linear"
        out += [(f"{conv}.weight", "params", (block, conv_name, "kernel"), "conv"),
                (f"{conv}.bias", "params", (block, conv_name, "bias"), "vector"),
                (f"{norm}.weight", "params", (block, "BatchNorm_0", "scale"), "vector"),
                (f"{norm}.bias", "params", (block, "BatchNorm_0", "bias"), "vector"),
                (f"{norm}.running_mean", "batch_stats", (block, "BatchNorm_0", "mean"),
                 "vector"),
                (f"{norm}.running_var", "batch_stats", (block, "BatchNorm_0", "var"), "vector"),
                (f"{norm}.num_batches_tracked", "", (), "count"),
                (f"{glu}.weight", "params", (block, "glu", "kernel"), "linear"),
                (f"{glu}.bias", "params", (block, "glu", "bias"), "vector")]
    for k in range(gru_layers):
        for suffix, direction in (("", "forward"), ("_reverse", "backward")):
            gru = f"gru{k}_{direction}"
            out += [(f"rnn.rnn.weight_ih_l{k}{suffix}", "params", (gru, "input_kernel"),
                     "linear"),
                    (f"rnn.rnn.weight_hh_l{k}{suffix}", "params",
                     (gru, "step", "hidden_kernel"), "linear"),
                    (f"rnn.rnn.bias_ih_l{k}{suffix}", "params", (gru, "input_bias"), "vector"),
                    (f"rnn.rnn.bias_hh_l{k}{suffix}", "params", (gru, "step", "hidden_bias"),
                     "vector")]
    heads = (("dense", "dense"),) + ((("dense_softmax", "attention"),) if attention else ())
    for torch_name, flax_name in heads:
        out += [(f"{torch_name}.weight", "params", (flax_name, "kernel"), "linear"),
                (f"{torch_name}.bias", "params", (flax_name, "bias"), "vector")]
    if embeddings:  # last, as CRNN.__init__ registers it: the state dict's order is DESED's
        out += [("cat_tf.weight", "params", ("embeddings_projection", "kernel"), "linear"),
                ("cat_tf.bias", "params", ("embeddings_projection", "bias"), "vector")]
    return out


def _expected_shapes(cfg: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """DESED_task's shape of every torch key for the dimensions of model_config_from_*."""
    shapes: dict[str, tuple[int, ...]] = {}
    kh, kw = cfg["conv_kernel"]
    cin = 1
    for i, cout in enumerate(cfg["conv_features"]):
        shapes[f"cnn.cnn.conv{i}.weight"] = (cout, cin, kh, kw)
        for name in ("conv{i}.bias", "batchnorm{i}.weight", "batchnorm{i}.bias",
                     "batchnorm{i}.running_mean", "batchnorm{i}.running_var",
                     "glu{i}.linear.bias"):
            shapes["cnn.cnn." + name.format(i=i)] = (cout,)
        shapes[f"cnn.cnn.batchnorm{i}.num_batches_tracked"] = ()
        shapes[f"cnn.cnn.glu{i}.linear.weight"] = (cout, cout)
        cin = cout
    width, units = cin, cfg["gru_units"]  # DESED's GRU reads nb_filters[-1] features
    if cfg["embedding_size"]:
        shapes["cat_tf.weight"] = (width, width + cfg["embedding_size"])
        shapes["cat_tf.bias"] = (width,)
    for k in range(cfg["gru_layers"]):
        for suffix in ("", "_reverse"):
            shapes[f"rnn.rnn.weight_ih_l{k}{suffix}"] = (3 * units, width if k == 0 else 2 * units)
            shapes[f"rnn.rnn.weight_hh_l{k}{suffix}"] = (3 * units, units)
            shapes[f"rnn.rnn.bias_ih_l{k}{suffix}"] = (3 * units,)
            shapes[f"rnn.rnn.bias_hh_l{k}{suffix}"] = (3 * units,)
    for head in ("dense",) + (("dense_softmax",) if cfg["pooling"] == "attention" else ()):
        shapes[f"{head}.weight"] = (cfg["num_classes"], 2 * units)
        shapes[f"{head}.bias"] = (cfg["num_classes"],)
    return shapes


def _to_flax(kind: str, x: np.ndarray) -> np.ndarray:
    if kind == "conv":
        return np.ascontiguousarray(np.transpose(x, (2, 3, 1, 0)))
    if kind == "linear":
        return np.ascontiguousarray(x.T)
    return x


def _to_torch(kind: str, x: np.ndarray) -> np.ndarray:
    if kind == "conv":
        return np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1)))
    if kind == "linear":
        return np.ascontiguousarray(x.T)
    return x


# ---------------------------------------------------------------------------- torch -> sedjax
def _select(state_dict: Mapping[str, Any], prefix: str) -> dict[str, np.ndarray]:
    """The tensors under `prefix`, prefix removed, as numpy arrays."""
    out = {k[len(prefix):]: np.asarray(v) for k, v in state_dict.items()
           if k.startswith(prefix)}
    if not out:
        starts = sorted({k.split(".")[0] + "." for k in state_dict})[:6]
        raise DesedTaskError(f"no key starts with {prefix!r} (the keys start with "
                             f"{', '.join(map(repr, starts)) or 'nothing: it is empty'})")
    return out


def _count(keys, pattern: str) -> int:
    """How many consecutive indices 0, 1, ... `pattern` (with {}) finds among keys."""
    n = 0
    while pattern.format(n) in keys:
        n += 1
    return n


def _shape(sd: Mapping[str, np.ndarray], key: str, where: str) -> tuple[int, ...]:
    if key not in sd:
        raise DesedTaskError(f"missing key {where}{key!r}")
    return tuple(np.shape(sd[key]))


def model_config_from_state_dict(state_dict: Mapping[str, Any], prefix: str = "") -> dict:
    """The model a DESED_task CRNN state dict holds, from its keys and shapes.

    Returns {'num_classes', 'conv_features' (tuple), 'conv_kernel' (kh, kw), 'gru_units',
    'gru_layers', 'pooling' ('attention' with dense_softmax, else 'mean'), 'use_embeddings',
    'embedding_size' (None without embeddings), 'cnn_output_bands' (1: DESED's GRU reads the
    last conv's channels only)}. What the weights cannot tell: n_mels (any count the pooling
    takes down to one band), the pooling sizes, dropout rates.
    """
    sd = _select(state_dict, prefix)
    depth = _count(sd, "cnn.cnn.conv{}.weight")
    if depth == 0:
        raise DesedTaskError(f"missing key {prefix}'cnn.cnn.conv0.weight' (not a DESED_task "
                             "CRNN state dict?)")
    convs = [_shape(sd, f"cnn.cnn.conv{i}.weight", prefix) for i in range(depth)]
    if any(len(s) != 4 for s in convs):
        raise DesedTaskError(f"{prefix}cnn.cnn.conv*.weight: expected 4-d Conv2d kernels, got "
                             f"shapes {convs}")
    if convs[0][1] != 1:
        raise DesedTaskError(f"{prefix}cnn.cnn.conv0.weight {convs[0]}: {convs[0][1]} input "
                             "channels; sedjax's desed_crnn reads one (n_in_channel 1)")
    layers = _count(sd, "rnn.rnn.weight_ih_l{}")
    if layers == 0:
        raise DesedTaskError(f"missing key {prefix}'rnn.rnn.weight_ih_l0' (only DESED's BGRU "
                             "is supported)")
    w_hh = _shape(sd, "rnn.rnn.weight_hh_l0", prefix)
    dense = _shape(sd, "dense.weight", prefix)
    if len(dense) != 2 or len(w_hh) != 2:
        raise DesedTaskError(f"{prefix}dense.weight {dense} / rnn.rnn.weight_hh_l0 {w_hh}: "
                             "expected matrices")
    embedding = None
    if "cat_tf.weight" in sd:
        cat = _shape(sd, "cat_tf.weight", prefix)
        if len(cat) != 2:
            raise DesedTaskError(f"{prefix}cat_tf.weight {cat}: expected a matrix")
        embedding = cat[1] - cat[0]
        if embedding <= 0:
            raise DesedTaskError(f"{prefix}cat_tf.weight {cat}: expected (width, width + "
                                 "embedding size)")
    return {"num_classes": int(dense[0]),
            "conv_features": tuple(int(s[0]) for s in convs),
            "conv_kernel": (int(convs[0][2]), int(convs[0][3])),
            "gru_units": int(w_hh[1]),
            "gru_layers": layers,
            "pooling": "attention" if "dense_softmax.weight" in sd else "mean",
            "use_embeddings": embedding is not None,
            "embedding_size": embedding,
            "cnn_output_bands": 1}


def _check_keys(have, want_entries, where: str, shapes: Mapping[str, tuple[int, ...]],
                arrays: Mapping[str, np.ndarray], optional=()) -> None:
    """DesedTaskError naming the first missing or unexpected key, then a shape mismatch."""
    want = [e[0] for e in want_entries]
    missing = [k for k in want if k not in have and k not in optional]
    unexpected = sorted(set(have) - set(want))
    if missing:
        raise DesedTaskError(f"missing key {where}{missing[0]!r}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if unexpected:
        hint = ""
        if any(k.startswith(("shrink_emb.", "frame_embs_encoder.")) for k in unexpected):
            hint = (" (DESED_task's aggregation_type 'frame' or 'global'; sedjax's desed_crnn "
                    "has 'pool1d' only)")
        elif any(re.match(r"dense\.\d", k) for k in unexpected):
            hint = " (several class heads; sedjax's desed_crnn has one)"
        raise DesedTaskError(f"unexpected key {where}{unexpected[0]!r}"
                             + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1
                                else "") + hint)
    for key in want:
        if key in arrays and tuple(np.shape(arrays[key])) != shapes[key]:
            raise DesedTaskError(f"{where}{key}: shape {tuple(np.shape(arrays[key]))}, expected "
                                 f"{shapes[key]} (from the other tensors' shapes)")


def variables_from_state_dict(state_dict: Mapping[str, np.ndarray], prefix: str = "") -> dict:
    """{'params', 'batch_stats'} (nested dicts of float32 arrays) of sedjax's DesedCRNN holding
    the weights of a DESED_task CRNN state dict (its keys under `prefix`, e.g. 'sed_student.';
    other keys are ignored). Raises DesedTaskError (a ValueError) naming a missing or
    unexpected key or a shape that does not fit."""
    cfg = model_config_from_state_dict(state_dict, prefix)
    sd = _select(state_dict, prefix)
    entries = _entries(len(cfg["conv_features"]), cfg["gru_layers"],
                       cfg["pooling"] == "attention", cfg["use_embeddings"])
    # num_batches_tracked: a state dict saved without it (or by sedjax) is still complete
    optional = {e[0] for e in entries if e[3] == "count"}
    _check_keys(sd, entries, prefix, _expected_shapes(cfg), sd, optional)
    out: dict = {"params": {}, "batch_stats": {}}
    for key, collection, path, kind in entries:
        if kind == "count":
            continue
        node = out[collection]
        for name in path[:-1]:
            node = node.setdefault(name, {})
        # copies: a torch tensor's .numpy() shares memory that its module updates in place
        node[path[-1]] = _to_flax(kind, np.array(sd[key], np.float32))
    return out


# ---------------------------------------------------------------------------- sedjax -> torch
def model_config_from_variables(variables: Mapping) -> dict:
    """model_config_from_state_dict's dict for sedjax DesedCRNN variables."""
    params = variables.get("params") if isinstance(variables, Mapping) else None
    if not isinstance(params, Mapping) or "batch_stats" not in variables:
        raise DesedTaskError("variables: expected {'params': ..., 'batch_stats': ...}")
    depth = _count(params, "GatedConvBlock_{}")
    layers = _count(params, "gru{}_forward")
    if depth == 0 or layers == 0 or "dense" not in params:
        raise DesedTaskError("variables: not a desed_crnn model's (expected GatedConvBlock_0, "
                             "gru0_forward and dense)")
    convs = []
    for i in range(depth):
        block = params[f"GatedConvBlock_{i}"]
        name = next((n for n in ("Conv_0", "Im2ColConv_0") if n in block), None)
        if name is None:
            raise DesedTaskError(f"variables: params/GatedConvBlock_{i} has no Conv_0")
        convs.append(np.shape(block[name]["kernel"]))
    emb = params.get("embeddings_projection")
    embedding = None if emb is None else int(np.shape(emb["kernel"])[0]
                                              - np.shape(emb["kernel"])[1])
    return {"num_classes": int(np.shape(params["dense"]["kernel"])[1]),
            "conv_features": tuple(int(s[3]) for s in convs),
            "conv_kernel": (int(convs[0][0]), int(convs[0][1])),
            "gru_units": int(np.shape(params["gru0_forward"]["step"]["hidden_kernel"])[0]),
            "gru_layers": layers,
            "pooling": "attention" if "attention" in params else "mean",
            "use_embeddings": embedding is not None,
            "embedding_size": embedding,
            "cnn_output_bands": 1}


def state_dict_from_variables(variables: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """DESED_task's CRNN state dict ({prefix + key: array}, num_batches_tracked included) of
    sedjax DesedCRNN variables: what `CRNN(**net_conf).load_state_dict(strict=True)` takes
    (as torch tensors). The inverse of variables_from_state_dict."""
    cfg = model_config_from_variables(variables)
    first = variables["params"]["GatedConvBlock_0"]
    conv_name = "Conv_0" if "Conv_0" in first else "Im2ColConv_0"
    entries = _entries(len(cfg["conv_features"]), cfg["gru_layers"],
                       cfg["pooling"] == "attention", cfg["use_embeddings"], conv_name)
    out: dict[str, np.ndarray] = {}
    for key, collection, path, kind in entries:
        if kind == "count":
            out[key] = np.zeros((), np.int64)
            continue
        node = variables.get(collection, {})
        try:
            for name in path:
                node = node[name]
        except (KeyError, TypeError, IndexError):
            raise DesedTaskError(f"variables: missing {collection}/{'/'.join(path)} (for "
                                 f"DESED_task's {key})") from None
        out[key] = _to_torch(kind, np.array(node, np.float32))  # writable: torch.from_numpy
    shapes = _expected_shapes(cfg)
    for key, array in out.items():
        if tuple(array.shape) != shapes[key]:
            raise DesedTaskError(f"variables: {key} would have shape {tuple(array.shape)}, "
                                 f"expected {shapes[key]} (from the other arrays' shapes)")
    return {prefix + k: v for k, v in out.items()}


# ---------------------------------------------------------------------------- .ckpt / .pt files
# torch.load(weights_only=True) unpickles tensors, containers, numbers and strings, nothing
# else. A Lightning checkpoint can hold two more harmless kinds, allowlisted here by their
# pickled names (torch's safe_globals), so no other object is ever unpickled:
# - Lightning's AttributeDict (a dict with attribute access) where some Lightning versions keep
#   `hyper_parameters` (1.9.5 writes a plain dict): read as a plain dict (torch's unpickler
#   fills only dicts, not subclasses), so no Lightning code runs;
# - pathlib paths, e.g. ModelCheckpoint's dirpath in the callbacks' state when the recipe gave a
#   Path: constructing a path from its parts runs no other code (Windows paths read as pure).
_LIGHTNING_DICTS = ("pytorch_lightning.utilities.parsing.AttributeDict",
                    "lightning_fabric.utilities.data.AttributeDict",
                    "lightning.fabric.utilities.data.AttributeDict",
                    "lightning.pytorch.utilities.parsing.AttributeDict")


def _safe_globals() -> list:
    import pathlib

    paths = [pathlib.PosixPath, pathlib.PurePosixPath, pathlib.PureWindowsPath,
             (pathlib.PureWindowsPath, "pathlib.WindowsPath")]
    return [(dict, name) for name in _LIGHTNING_DICTS] + paths


def _import_torch(what: str):
    try:
        import torch
    except ImportError:
        raise DesedTaskError(f"{what} needs PyTorch: pip install -e '.[reference]' (or "
                             "pip install torch)") from None
    return torch


def _to_plain(x: Any) -> Any:
    """Tensors -> numpy arrays, mappings -> dicts, recursively."""
    if hasattr(x, "detach") and hasattr(x, "numpy"):
        return x.detach().cpu().numpy()
    if isinstance(x, Mapping):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_plain(v) for v in x)
    return x


def _torch_load(path: str | os.PathLike) -> Any:
    """torch.load(weights_only=True) with Lightning's AttributeDict read as a dict."""
    torch = _import_torch(f"reading {path}")
    if not os.path.isfile(path):
        raise DesedTaskError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch raises UnpicklingError, RuntimeError, ...)
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if refused:  # torch's message is a page long: the one thing it refused
            raise DesedTaskError(f"{path}: holds a {refused.group(1)} object, which a weights-"
                                 "only read does not unpickle (only tensors, containers, "
                                 "numbers, strings, paths)") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DesedTaskError(f"{path}: not readable as a torch checkpoint ({first})") from None


def read_lightning_checkpoint(path: str | os.PathLike) -> dict:
    """A DESED_task Lightning .ckpt (or a torch.save'd state dict) as numpy.

    Returns {'state_dict': {key: array} (the LightningModule's: 'sed_student.*',
    'sed_teacher.*', 'mel_spec.*', ...), 'scaler': {name: array} (the 'scaler.' buffers: none
    for DESED's TorchScaler('instance', 'minmax'), which keeps no statistics; 'mean' and
    'mean_squared' for a 'dataset' scaler), 'hyper_parameters': dict or None (the recipe's
    yaml as the run saw it)}. Loads with torch.load(weights_only=True): no arbitrary object
    is unpickled.
    """
    data = _torch_load(path)
    if not isinstance(data, Mapping):
        raise DesedTaskError(f"{path}: holds a {type(data).__name__}, not a checkpoint dict")
    state = data.get("state_dict", data)  # a Lightning checkpoint, else a bare state dict
    if not isinstance(state, Mapping):
        raise DesedTaskError(f"{path}: its 'state_dict' is a {type(state).__name__}")
    arrays = {str(k): _to_plain(v) for k, v in state.items() if hasattr(v, "shape")}
    scaler = {k[len("scaler."):]: v for k, v in arrays.items() if k.startswith("scaler.")}
    hyper = data.get("hyper_parameters") if "state_dict" in data else None
    return {"state_dict": arrays, "scaler": scaler,
            "hyper_parameters": None if hyper is None else _to_plain(hyper)}


def write_state_dict(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """torch.save of a plain state dict {key: tensor} (what CRNN.load_state_dict takes)."""
    torch = _import_torch(f"writing {path}")
    from collections import OrderedDict

    from sedjax.system import files

    tensors = OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in state_dict.items())
    with files.atomic_path(path) as tmp:  # never a half-written file under the final name
        torch.save(tensors, tmp)
