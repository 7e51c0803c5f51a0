"""Frame embeddings computed by sedjax's BEATs as a cached stage (model.embeddings.source =
'beats'), `python -m sedjax.embed` and configs/demo_desed_beats.py."""

import json
import pathlib
import sys

import jax
import numpy as np
import pytest
import soundfile

from configs import demo_desed_beats
from sedjax import embed, run
from sedjax.config import validate
from sedjax.data import audio, beats_embeddings, dataset, embeddings
from sedjax.interop import beats_checkpoint
from sedjax.models import beats
from sedjax.system import cli
from sedjax.train import checkpoint

ROOT = pathlib.Path(__file__).parents[1]
TOKENS, WIDTH = 96, 32  # the tiny variant: 2-s clips (12 rows x 8 bands), BeatsConfig.tiny
TOL = 1e-4  # the same computation in batches of other sizes (XLA's CPU kernels)


def tiny_config(**beats_values):
    c = demo_desed_beats.get_config("tiny")
    for k, v in beats_values.items():
        c.model.beats[k] = v
    return c


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A 2-s clip, a 1.3-s one (padded) and a 2-s stereo clip at 22.05 kHz (resampled)."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    paths = []
    for i, (n, rate, channels) in enumerate([(32000, 16000, 1), (20800, 16000, 1),
                                             (44100, 22050, 2)]):
        path = folder / f"clip{i}.wav"
        shape = (n,) if channels == 1 else (n, channels)
        soundfile.write(path, (0.1 * rng.standard_normal(shape)).astype(np.float32), rate)
        paths.append(path)
    return paths


def _direct(config, waves, mask=None):
    """The encoder called directly: tokens (B, T, D) as numpy."""
    section = config.model.beats
    arch = beats_embeddings.architecture(section)
    params = beats_embeddings.load_params(section, arch)
    apply = jax.jit(beats.Beats(arch).apply)  # eager, op by op, is slower than compiling
    tokens, token_mask = apply({"params": params}, np.stack(waves), mask)
    return np.asarray(tokens), token_mask


def _padded(path, samples=32000):
    y = audio.load_audio(path, 16000)[:samples]
    return np.pad(y, (0, samples - len(y))), len(y)


def test_the_stage_computes_what_the_encoder_gives(clips, tmp_path):
    config = tiny_config(padding_mask_rule="none")
    names = [p.name for p in clips]
    tokens, valid, errors = beats_embeddings.extract_split("weak", clips, names, config,
                                                           tmp_path)
    assert tokens.shape == (3, TOKENS, WIDTH) and tokens.dtype == np.float32 and not errors
    np.testing.assert_array_equal(valid, [TOKENS] * 3)  # no mask: the zeros count as audio
    waves = [_padded(p)[0] for p in clips]
    expected, _ = _direct(config, waves)
    assert np.abs(tokens - expected).max() < TOL
    assert np.abs(expected).max() > 0.1  # not a trivial zero output

    # 'strict': the short clip's valid tokens are those of the clip alone, unpadded
    strict = tiny_config(padding_mask_rule="strict")
    tokens, valid, _ = beats_embeddings.extract_split("weak", clips, names, strict, tmp_path)
    short, n = _padded(clips[1])
    alone, _ = _direct(strict, [short[:n]])
    rows = beats.num_tokens(n)
    assert valid[1] == rows == alone.shape[1] < TOKENS and valid[0] == valid[2] == TOKENS
    assert np.abs(tokens[1, :rows] - alone[0]).max() < TOL
    # ... and those differ from the clip's tokens with its zeros encoded as audio
    assert np.abs(tokens[1, :rows] - expected[1, :rows]).max() > 1e-2


def test_a_rerun_reuses_the_cache_and_other_weights_recompute(clips, tmp_path, monkeypatch):
    names = [p.name for p in clips]
    calls = []
    compute = beats_embeddings.compute

    def counted(*args, **kw):
        calls.append(1)
        return compute(*args, **kw)
    monkeypatch.setattr(beats_embeddings, "compute", counted)
    config = tiny_config()
    first, _, _ = beats_embeddings.extract_split("weak", clips, names, config, tmp_path)
    written = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert len(calls) == 1 and len(written) == 3  # embeddings, valid counts, errors
    again, _, _ = beats_embeddings.extract_split("weak", clips, names, config, tmp_path)
    assert len(calls) == 1 and {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == written
    np.testing.assert_array_equal(again, first)
    # another seed: other weights, other file
    other, _, _ = beats_embeddings.extract_split("weak", clips, names, tiny_config(seed=1),
                                                 tmp_path)
    assert len(calls) == 2 and np.abs(other - first).max() > 1e-2
    # the seed-0 weights as a converted checkpoint: the same numbers, from the checkpoint
    section = config.model.beats
    arch = beats_embeddings.architecture(section)
    ckpt = tmp_path / "ckpt" / "beats.msgpack"
    beats_checkpoint.save(beats_embeddings.load_params(section, arch), arch, ckpt)
    from_file = tiny_config(checkpoint=str(ckpt), size="checkpoint")
    validate.validate(from_file)
    loaded, _, _ = beats_embeddings.extract_split("weak", clips, names, from_file, tmp_path)
    assert len(calls) == 3 and np.abs(loaded - first).max() < TOL
    # the checkpoint changed in place (same path, other weights): recomputed
    seed1 = tiny_config(seed=1).model.beats
    beats_checkpoint.save(beats_embeddings.load_params(seed1, arch), arch, ckpt)
    changed, _, _ = beats_embeddings.extract_split("weak", clips, names, from_file, tmp_path)
    assert len(calls) == 4 and np.abs(changed - other).max() < TOL
    # a changed file list is another cache
    beats_embeddings.extract_split("weak", clips[:2], names[:2], config, tmp_path)
    assert len(calls) == 5


def test_an_unreadable_clip_is_a_zero_row_and_named(clips, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    paths = [clips[0], bad]
    tokens, valid, errors = beats_embeddings.extract_split(
        "weak", paths, [p.name for p in paths], tiny_config(), tmp_path / "cache")
    assert list(errors) == [1] and "cannot decode" in errors[1]
    assert valid.tolist() == [TOKENS, 0] and not tokens[1].any() and tokens[0].any()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """configs/demo_desed_beats.py:tiny through sedjax.main's stages, from an empty workdir
    (in this process: the encoder compiled by the tests above is reused)."""
    workdir = tmp_path_factory.mktemp("demo") / "w"
    config = demo_desed_beats.get_config("tiny")
    config.data.synthetic.num_workers = 1
    summary = run.train_and_evaluate(config, workdir)
    return workdir, summary


def test_the_demo_config_runs_end_to_end_with_computed_embeddings(demo_run):
    workdir, summary = demo_run
    # DESED_task's CRNN with cat_tf = Linear(128 + 32, 128) joining the tiny BEATs' tokens
    variables, _ = checkpoint.load_model(workdir)
    assert variables["params"]["embeddings_projection"]["kernel"].shape == (128 + WIDTH, 128)
    cached = sorted((workdir / "features").glob("embeddings-*.valid.npy"))
    splits = {p.name.split("-")[1] for p in cached}
    assert splits == {"weak", "unlabel_in_domain", "synthetic", "validation", "test"}
    for p in cached:
        tokens = np.load(str(p).replace(".valid.npy", ".npy"), mmap_mode="r")
        assert tokens.shape == (8, TOKENS, WIDTH) and np.isfinite(tokens).all()
        assert np.abs(tokens).max() > 0.1
    results = json.loads((workdir / "results.json").read_text())
    assert results["test"]["threshold_independent"]["num_files"] == 8
    assert summary["split_sources"]["test"]  # the run's own summary, returned


@pytest.mark.parametrize("fmt", ["hdf5", "npz"])
def test_embed_writes_files_that_model_embeddings_dir_reads_back(demo_run, fmt, monkeypatch,
                                                                 capsys):
    workdir, _ = demo_run
    computed = []
    monkeypatch.setattr(beats_embeddings, "compute", lambda *a, **k: computed.append(1))
    out = workdir.parent / f"exported_{fmt}"
    # no --config.X override: a second call in one process would define its flag again
    argv = ["--config=configs/demo_desed_beats.py:tiny", f"--workdir={workdir}",
            f"--out={out}", f"--format={fmt}"]
    monkeypatch.setattr(sys, "argv", ["sedjax.embed", *argv])
    monkeypatch.chdir(ROOT)
    assert cli.call(embed.main, embed.FLAGS, argv) == 0, capsys.readouterr().err
    assert not computed  # the run's cache, reused
    config = demo_desed_beats.get_config("tiny")
    splits = dataset.load_dataset(workdir / "synthetic", config.data.classes, workdir,
                                  use_strong=True, layout="desed", sample_rate=16000,
                                  write_log=False)
    for name, split in splits.items():
        cache = sorted((workdir / "features").glob(f"embeddings-{name}-*.valid.npy"))
        assert len(cache) == 1
        valid = np.load(cache[0])
        tokens = np.load(str(cache[0]).replace(".valid.npy", ".npy"))
        got = embeddings.load(out, name, split.filenames, TOKENS, WIDTH)  # (N, T, D)
        np.testing.assert_array_equal(got, tokens)
        if fmt == "hdf5":
            import h5py
            with h5py.File(out / f"{name}.hdf5", "r") as f:
                stored = [n.decode() for n in f["filenames"][:]]
                frame, glob = f["frame_embeddings"][:], f["global_embeddings"][:]
        else:
            with np.load(out / f"{name}.npz") as f:
                stored = list(f["filenames"])
                frame, glob = f["frame_embeddings"], f["global_embeddings"]
        assert stored == [n.removesuffix(".wav") for n in split.filenames]  # wav stems
        assert frame.shape == (8, WIDTH, TOKENS) and frame.dtype == np.float32
        assert valid.tolist() == [TOKENS] * 8  # padding_mask_rule 'none'
        np.testing.assert_allclose(glob, tokens.mean(axis=1), rtol=1e-5, atol=1e-6)


def test_embed_without_h5py_says_what_to_do(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py -> ImportError
    argv = ["--config=configs/demo_desed_beats.py:tiny", f"--workdir={tmp_path}"]
    monkeypatch.setattr(sys, "argv", ["sedjax.embed", *argv])
    monkeypatch.chdir(ROOT)
    assert cli.call(embed.main, embed.FLAGS, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --format=hdf5 needs h5py: pip install h5py (or use --format=npz)"]


def test_a_missing_checkpoint_is_one_error_line(monkeypatch, capsys, tmp_path):
    argv = ["--config=configs/demo_desed_beats.py:tiny", f"--workdir={tmp_path}",
            "--config.model.beats.checkpoint=/no/such/beats.msgpack",
            "--config.model.beats.size=checkpoint", "--format=npz"]
    monkeypatch.setattr(sys, "argv", ["sedjax.embed", *argv])
    monkeypatch.chdir(ROOT)
    assert cli.call(embed.main, embed.FLAGS, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "error: model.beats.checkpoint: no such file: /no/such/beats.msgpack")
    assert not list(tmp_path.iterdir())  # nothing done


BAD = {  # field, value -> the start of the one-line error
    ("model.beats.size", "huge"): "model.beats.size: unknown value 'huge'",
    ("model.beats.padding_mask_rule", "mask"): "model.beats.padding_mask_rule: unknown value",
    ("model.beats.dtype", "float16"): "model.beats.dtype: unknown value 'float16'",
    ("model.embeddings.source", "hub"): "model.embeddings.source: unknown value 'hub'",
    ("model.beats.batch_size", 0): "model.beats.batch_size: expected a positive integer",
    ("model.beats.seed", 0.5): "model.beats.seed: expected an integer",
    ("model.beats.checkpoint", None): "model.beats.checkpoint: expected a file name",
    ("model.beats.size", "checkpoint"): "model.beats.checkpoint: embeddings from BEATs need",
    ("model.embeddings.frames", 496): "model.embeddings.frames: BEATs gives 96 tokens",
    ("model.embeddings.size", 768): "model.embeddings.size: BEATs (tiny) gives 32 values",
    ("model.embeddings.dir", "/data/emb"): "model.embeddings.dir: '/data/emb' is not read",
    ("model.arch", "crnn"): "model.embeddings.source: frame embeddings need model.arch",
    ("data.clip_seconds", 0.1): "data.clip_seconds: 0.1 s is too short",
}


@pytest.mark.parametrize("field,value", list(BAD), ids=[f"{f}={v}" for f, v in BAD])
def test_bad_values_are_one_line_naming_the_field(field, value):
    config = demo_desed_beats.get_config("tiny")
    section, _, name = field.rpartition(".")
    node = config
    for part in section.split("."):
        node = node[part]
    with node.ignore_type():  # as a config.json edited by hand can hold it
        node[name] = value
    with pytest.raises(cli.ConfigError) as error:
        validate.validate(config)
    message = str(error.value)
    assert message.startswith(BAD[(field, value)]) and "\n" not in message


def test_configs_validate_and_random_weights_stay_off_by_default():
    from configs import baseline, desed_baseline

    for c in (baseline.get_config(), desed_baseline.get_config()):
        assert c.model.embeddings.source == "files" and c.model.beats.checkpoint == ""
        assert c.model.beats.size == "checkpoint"  # no silent random encoder
    for variant, frames in (("", 248), ("tiny", TOKENS)):
        c = demo_desed_beats.get_config(variant)
        validate.validate(c)
        assert c.model.embeddings.frames == frames and c.model.beats.size == "tiny"
    with pytest.raises(ValueError, match="unknown config variant"):
        demo_desed_beats.get_config("small")
