"""Moves a CRNN between DESED_task (PyTorch) and sedjax; converts BEATs checkpoints.

    python -m sedjax.convert desed_task CKPT --workdir=W [--which=student|teacher]
                             [--config=configs/desed_baseline.py] [--embeddings_dir=DIR]
    python -m sedjax.convert to_desed_task OUT.pt --workdir=W
    python -m sedjax.convert desed_task_config YAML [--out=configs/my_desed.py]
                             [--embeddings_dir=DIR]
    python -m sedjax.convert beats CKPT OUT

desed_task: a DESED_task checkpoint (its Lightning .ckpt, or a torch.save'd CRNN state dict)
becomes a sedjax model folder, W/config.json and W/model/ (as a finished run leaves them), that
`python -m sedjax.detect --workdir=W` reads. The config is --config's with the model's fields
(conv widths and kernel, GRU units and layers, attention, embeddings) taken from the weights'
shapes and data.classes set to DESED_task's 10 classes in its order (local/classes_dict.py).
to_desed_task: W's desed_crnn weights as a plain PyTorch state dict (OUT.pt) that
`CRNN(**net_conf).load_state_dict(torch.load(OUT.pt))` takes with strict=True.
Both read or write .pt/.ckpt files with PyTorch (pip install -e '.[reference]').
desed_task_config: a DESED_task recipe yaml (confs/default.yaml, pretrained.yaml) as a sedjax
config file (printed, or written to --out): configs/desed_baseline.py plus every value of the
yaml (sedjax.interop.desed_task_config); a value sedjax cannot reproduce is an error naming it.
beats: a BEATs checkpoint (microsoft/unilm beats/ .pt: {'cfg', 'model'}, e.g.
BEATs_iter3_plus_AS2M.pt, which DESED_task's embeddings come from) as sedjax.models.beats
parameters: OUT (flax.serialization msgpack) and OUT with suffix .json (the BEATs cfg);
sedjax.interop.beats_checkpoint.load reads them back.
"""

from __future__ import annotations

import pathlib
import types
from collections.abc import Sequence

import numpy as np
from absl import flags

from sedjax.config import config_files
from sedjax.interop import desed_task
from sedjax.system import cli, files

# DESED_task's class order: recipes/dcase2023_task4_baseline/local/classes_dict.py's
# classes_labels, i.e. the columns of its CRNN's outputs (tests/parity checks it)
DESED_CLASSES = ("Alarm_bell_ringing", "Blender", "Cat", "Dishes", "Dog",
                 "Electric_shaver_toothbrush", "Frying", "Running_water", "Speech",
                 "Vacuum_cleaner")
COMMANDS = ("desed_task", "to_desed_task", "desed_task_config", "beats")

FLAGS = flags.FlagValues()  # this command's own: importing it never clashes with another's
flags.DEFINE_string("workdir", None, "The sedjax model folder to write (desed_task) or read "
                    "(to_desed_task).", flag_values=FLAGS)
flags.DEFINE_enum("which", "student", ["student", "teacher"], "Which of the checkpoint's two "
                  "models (sed_student or sed_teacher).", flag_values=FLAGS)
flags.DEFINE_string("config", str(config_files.default_path("desed_baseline")),
                    "ml_collections config file giving everything the weights do not: features, "
                    "pooling sizes, post-processing.", flag_values=FLAGS)
flags.DEFINE_string("embeddings_dir", None, "For a checkpoint of DESED_task's embeddings "
                    "model: the pre-extracted embeddings (model.embeddings.dir).",
                    flag_values=FLAGS)
flags.DEFINE_string("out", None, "desed_task_config: the config file to write (default: print "
                    "it).", flag_values=FLAGS)


# ---------------------------------------------------------------------------- DESED_task -> sedjax
def _state_dict_prefix(state_dict: dict, which: str) -> str:
    """'sed_student.' / 'sed_teacher.' in a Lightning checkpoint; '' in a bare CRNN state dict."""
    prefix = f"sed_{which}."
    if not any(k.startswith(prefix) for k in state_dict) and "cnn.cnn.conv0.weight" in state_dict:
        return ""
    return prefix


def _classes(num_classes: int, config) -> list[str]:
    """DESED_task's classes for a 10-class model; otherwise the config's, when as many."""
    if num_classes == len(DESED_CLASSES):
        return list(DESED_CLASSES)
    configured = [str(c) for c in config.data.classes]
    if len(configured) != num_classes:
        raise cli.UserError(f"the checkpoint's model has {num_classes} classes, not DESED's "
                            f"{len(DESED_CLASSES)}, and data.classes of --config has "
                            f"{len(configured)}: give a config naming its {num_classes} classes")
    return configured


def _output_bands(n_mels: int, pool_sizes) -> int:
    for _, pf in pool_sizes:
        n_mels //= int(pf)
    return n_mels


def _set_model(config, shapes: dict, embeddings_dir: str | None, source: str) -> None:
    """config.model := desed_crnn with the weights' dimensions (UserError when the config's
    pooling or features cannot hold them)."""
    m = config.model
    depth = len(shapes["conv_features"])
    if len(m.pool_sizes) != depth:
        raise cli.UserError(f"{source} has {depth} conv blocks; model.pool_sizes of --config "
                            f"has {len(m.pool_sizes)} (the weights do not hold the pooling)")
    bands = _output_bands(int(config.features.n_mels), m.pool_sizes)
    if bands != 1:
        raise cli.UserError(f"features.n_mels {config.features.n_mels} pooled by "
                            f"model.pool_sizes leaves {bands} bands; DESED_task's CRNN needs 1")
    m.arch = "desed_crnn"
    m.conv_features = tuple(shapes["conv_features"])
    m.conv_kernel = tuple(shapes["conv_kernel"])
    m.gru_units = shapes["gru_units"]
    m.gru_layers = shapes["gru_layers"]
    m.pooling = shapes["pooling"]
    if shapes["use_embeddings"]:
        if not embeddings_dir:
            raise cli.UserError(f"{source} reads pre-extracted embeddings ("
                                f"{shapes['embedding_size']} per frame, DESED_task's BEATs "
                                "model): give --embeddings_dir (sedjax.detect cannot use such "
                                "a model on new audio)")
        m.embeddings.dir = embeddings_dir
        m.embeddings.size = shapes["embedding_size"]
    elif embeddings_dir:
        raise cli.UserError(f"--embeddings_dir: {source} reads no embeddings")
    else:
        m.embeddings.dir = ""


def _normalization(config, scaler: dict, hyper: dict | None, source: str) -> np.ndarray:
    """(2, n_mels) mean and std that make sedjax's features what DESED_task's CRNN read."""
    f = config.features
    n = int(f.n_mels)
    if "mean" in scaler and "mean_squared" in scaler:  # TorchScaler('dataset', 'standard')
        mean = np.asarray(scaler["mean"], np.float64).reshape(-1)
        std = np.sqrt(np.maximum(np.asarray(scaler["mean_squared"], np.float64).reshape(-1)
                                 - mean ** 2, 0.0)) + 1e-8  # DESED divides by std + eps
        if mean.size not in (1, n):
            raise cli.UserError(f"{source}: scaler.mean has {mean.size} values for {n} bands")
        f.scaler = "dataset"
        return np.stack([np.broadcast_to(mean, n), np.broadcast_to(std, n)]).astype(np.float32)
    setting = (hyper or {}).get("scaler") or {}
    if setting.get("statistic", "instance") != "instance" or setting.get(
            "normtype", "minmax") != "minmax":
        raise cli.UserError(f"{source}: DESED_task scaler {setting.get('statistic')}/"
                            f"{setting.get('normtype')} without its statistics; sedjax converts "
                            "'instance'/'minmax' (the default) and fitted 'dataset' scalers")
    if f.scaler != "instance_minmax":
        raise cli.UserError(f"--config: features.scaler is {f.scaler!r}; DESED_task's "
                            "TorchScaler('instance', 'minmax') is sedjax's 'instance_minmax'")
    # DESED's minmax scaler maps each clip to [-1, 1]; whatever range sedjax's instance_minmax
    # gives (found on a noise clip: its min and max reach both ends), (x - mean) / std with
    # these maps it there
    from sedjax.data import features

    noise = np.random.default_rng(0).standard_normal(
        int(f.num_frames) * int(f.hop_length)).astype(np.float32)
    x = features.log_mel(noise, int(f.sample_rate), f)
    lo, hi = float(x.min()), float(x.max())
    return np.stack([np.full(n, (hi + lo) / 2), np.full(n, (hi - lo) / 2)]).astype(np.float32)


def _check_variables(config, variables: dict, source: str) -> None:
    """UserError unless variables are exactly what config's model initializes (names, shapes)."""
    import jax
    import jax.numpy as jnp

    from sedjax import models

    model = models.from_config(config.model, len(config.data.classes))
    shape = (1, int(config.features.num_frames), int(config.features.n_mels))
    extra = {}
    if config.model.embeddings.dir:
        e = config.model.embeddings
        extra["embeddings"] = jnp.zeros((1, int(e.frames), int(e.size)))
    expected = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                 jnp.zeros(shape), train=False, **extra))
    _check_shapes({c: expected[c] for c in ("params", "batch_stats")}, variables,
                  f"{source}: its weights do not fit the model of --config")


def from_desed_task(checkpoint: str, workdir: str, which: str = "student",
                    config_path: str | None = None, embeddings_dir: str | None = None
                    ) -> pathlib.Path:
    """Writes workdir/config.json and workdir/model/ from a DESED_task checkpoint; returns
    the model folder."""
    from sedjax.train import checkpoint as checkpoints

    config = config_files.load(config_path or config_files.default_path("desed_baseline"))
    try:
        read = desed_task.read_lightning_checkpoint(checkpoint)  # its errors name the file
    except desed_task.DesedTaskError as e:
        raise cli.UserError(str(e)) from None
    try:
        state = read["state_dict"]
        prefix = _state_dict_prefix(state, which)
        shapes = desed_task.model_config_from_state_dict(state, prefix)
        variables = desed_task.variables_from_state_dict(state, prefix)
    except desed_task.DesedTaskError as e:
        raise cli.UserError(f"{checkpoint}: {e}") from None
    source = f"{checkpoint} ({prefix.rstrip('.') or 'state dict'})"
    hyper = read["hyper_parameters"]
    wanted = ((hyper or {}).get("feats") or {}).get("n_mels")
    if wanted is not None and int(wanted) != int(config.features.n_mels):
        raise cli.UserError(f"{source} was trained on {wanted} mel bands; features.n_mels of "
                            f"--config is {config.features.n_mels}")
    config.data.classes = tuple(_classes(shapes["num_classes"], config))
    _set_model(config, shapes, embeddings_dir, source)
    norm = _normalization(config, read["scaler"], hyper, source)
    _check_variables(config, variables, source)
    out = pathlib.Path(workdir)
    model_dir = checkpoints.save_model(
        out, types.SimpleNamespace(params=variables["params"],
                                   batch_stats=variables["batch_stats"]), tuple(norm))
    files.write_text(out / "config.json", config.to_json_best_effort(indent=2))
    return model_dir


# ---------------------------------------------------------------------------- sedjax -> DESED_task
def to_desed_task(workdir: str, out: str) -> dict[str, np.ndarray]:
    """Writes workdir's desed_crnn weights to `out` as a plain PyTorch CRNN state dict; returns
    the state dict (numpy)."""
    from sedjax import detect
    from sedjax.train import checkpoint as checkpoints

    config = detect.load_config(workdir)
    if config.model.arch != "desed_crnn":
        raise cli.UserError(f"{workdir}/config.json: model.arch is {config.model.arch!r}; "
                            "only 'desed_crnn' (DESED_task's CRNN) converts")
    if config.model.beats.trainable:
        raise cli.UserError(f"{workdir}/config.json: model.beats.trainable: its model trained "
                            "the BEATs encoder too, which DESED_task's CRNN does not hold (it "
                            "reads embeddings of a frozen encoder); only a frozen one converts")
    try:
        variables, _ = checkpoints.load_model(pathlib.Path(workdir))
    except FileNotFoundError as e:
        raise cli.UserError(str(e)) from None
    try:
        state = desed_task.state_dict_from_variables(variables)
        desed_task.write_state_dict(state, out)
    except desed_task.DesedTaskError as e:
        raise cli.UserError(f"{workdir}: {e}") from None
    return state


# ---------------------------------------------------------------------------- BEATs -> sedjax
def from_beats(checkpoint: str, out: str) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes `out` (sedjax.models.beats params) and its .json (the cfg) from a BEATs
    checkpoint; returns both paths."""
    from sedjax.interop import beats_checkpoint

    try:
        beats_checkpoint.config_path(out)  # an unusable OUT fails before the long read
        config, params = beats_checkpoint.convert(checkpoint)
    except beats_checkpoint.BeatsCheckpointError as e:
        raise cli.UserError(str(e)) from None
    _check_beats_params(config, params, checkpoint)
    return beats_checkpoint.save(params, config, out)


def _check_beats_params(config, params: dict, source: str) -> None:
    """UserError unless params are exactly what sedjax's Beats of config initializes."""
    import jax
    import jax.numpy as jnp

    from sedjax.models import beats

    model = beats.Beats(config)
    expected = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                 jnp.zeros((1, beats.SAMPLE_RATE))))["params"]
    _check_shapes(expected, params, f"{source}: its weights do not fit sedjax's BEATs of its cfg")


def _check_shapes(expected, have_tree, message: str) -> None:
    """UserError `message (e.g. ...)` unless `have_tree`'s arrays have `expected`'s paths and
    shapes; the example names paths only one side has, else shapes that differ."""
    from flax import traverse_util

    want = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(expected).items()}
    have = {k: tuple(np.shape(v)) for k, v in traverse_util.flatten_dict(have_tree).items()}
    if want != have:
        diff = sorted("/".join(k) for k in set(want) ^ set(have)) or sorted(
            f"{'/'.join(k)} {have[k]} != {want[k]}" for k in want if want[k] != have[k])
        raise cli.UserError(f"{message} (e.g. {', '.join(diff[:3])})")


# ---------------------------------------------------------------------------- command line
def _convert(argv: list[str]) -> int:
    args = argv[1:]
    if not args or args[0] not in COMMANDS:
        raise cli.UserError(f"expected {', '.join(COMMANDS[:-1])} or {COMMANDS[-1]} first (see "
                            f"--help), got "
                            f"{' '.join(args) or 'nothing'}")
    if args[0] == "beats":
        if len(args) != 3:
            raise cli.UserError(f"beats takes two files (CKPT OUT), got {len(args) - 1}")
        weights, cfg_file = from_beats(args[1], args[2])
        print(f"wrote {weights} and {cfg_file} (sedjax.models.beats) from {args[1]}")
        return 0
    if len(args) != 2:
        what = {"desed_task": "CKPT", "to_desed_task": "OUT.pt"}.get(args[0], "YAML")
        raise cli.UserError(f"{args[0]} takes one file ({what}), got {len(args) - 1}")
    if args[0] == "desed_task_config":
        return _convert_config(args[1])
    if not FLAGS.workdir:
        raise cli.UserError(f"{args[0]} needs --workdir (the sedjax model folder)")
    if args[0] == "desed_task":
        folder = from_desed_task(args[1], FLAGS.workdir, FLAGS.which, FLAGS.config,
                                 FLAGS.embeddings_dir)
        print(f"wrote {folder} and {pathlib.Path(FLAGS.workdir) / 'config.json'} from "
              f"{args[1]}")
    else:
        to_desed_task(FLAGS.workdir, args[1])
        print(f"wrote {args[1]} (a DESED_task CRNN state dict of {FLAGS.workdir})")
    return 0


def _convert_config(yaml_path: str) -> int:
    from sedjax.interop import desed_task_config  # pylint: disable=g-import-not-at-top
    try:
        source = desed_task_config.config_source(yaml_path, FLAGS.embeddings_dir)
    except desed_task_config.ConfigConversionError as e:
        raise cli.UserError(str(e)) from None
    if FLAGS.out is None:
        print(source, end="")
    else:
        files.write_text(FLAGS.out, source)
        print(f"wrote {FLAGS.out} from {yaml_path}; run it with python -m sedjax.main "
              f"--config={FLAGS.out} --workdir=W")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sedjax.convert ARGS` in this process; returns the exit status."""
    return cli.call(_convert, FLAGS, argv)


if __name__ == "__main__":
    cli.run(_convert, FLAGS)
