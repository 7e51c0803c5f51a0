"""python -m sedjax.detect: windowing, stitching and time mapping; an exported model; errors.

The time-mapping tests replace the CRNN by a fake "model" whose class-0 output follows the
input energy: per output frame, sigmoid of (mean normalized log-mel energy of the 300-4000 Hz
bands - c). They test reading, resampling, windowing, stitching, post-processing and the
mapping of output frames to seconds of the original files, not learning.
"""

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import soundfile

from sedjax import detect
from sedjax.config import config_files
from sedjax.data import audio, event_files, features
from sedjax import models
from sedjax.models import time_grid

ROOT = pathlib.Path(__file__).parents[1]
TONES = (440.0, 1000.0, 3000.0)
NOISE = 1e-3
LONG_BURSTS = [(3.0, 5.0), (12.3, 13.1), (19.0, 21.5), (31.0, 33.5)]  # 19-21.5 spans 20 s
SHORT_BURSTS = [(1.0, 2.0), (2.5, 3.0)]  # the second runs to the end of the 3 s file


def tiny_config(**model):
    """configs/tiny.py, round-tripped through JSON as config.json stores it (lists)."""
    import ml_collections
    c = config_files.load(ROOT / "configs" / "tiny.py")
    for k, v in model.items():
        c.model[k] = v
    return ml_collections.ConfigDict(json.loads(c.to_json_best_effort()))


def signal(seconds, sr, bursts, channels=1, seed=0):
    """Low noise with loud tone bursts (sum of TONES) at the given (onset, offset) seconds."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    y = NOISE * rng.standard_normal((n, channels))
    tone = sum(0.2 * np.sin(2 * np.pi * f * t) for f in TONES)
    for on, off in bursts:
        y[int(round(on * sr)): int(round(off * sr))] += tone[int(round(on * sr)):
                                                             int(round(off * sr)), None]
    return y.astype(np.float32)


def band_mask(fc):
    centres = librosa.mel_frequencies(fc.n_mels + 2, fmin=fc.fmin, fmax=fc.fmax,
                                      htk=fc.htk)[1:-1]
    return (centres > 300) & (centres < 4000)


@pytest.fixture(scope="module")
def energy_detector_parts():
    """(config, normalization, make_detector) for the energy-following fake model."""
    config = tiny_config(pool_sizes=((2, 4), (1, 4), (1, 4)))  # 40 ms output frames
    config.postprocess.median_filter = 5
    fc = config.features
    band = band_mask(fc)
    sr = fc.sample_rate
    silence = features.log_mel(signal(1.0, sr, []), sr, fc)[5:40]
    loud = features.log_mel(signal(1.0, sr, [(0.0, 1.0)]), sr, fc)[5:40]
    mean = silence.mean(0)
    gap = float((loud - mean)[:, band].mean())
    assert gap > 2.0, gap  # the bursts are clearly louder than the floor in these bands
    c = gap / 2
    pool = time_grid.time_pooling(config.model)
    num_classes = len(config.data.classes)
    band_j = jnp.asarray(band)

    def fake_apply(variables, x):  # x: normalized log-mel (B, T, F)
        e = jnp.sum(jnp.where(band_j, x, 0.0), axis=2) / band_j.sum()
        b, t = e.shape
        e = e[:, : t // pool * pool].reshape(b, t // pool, pool).mean(-1)
        p0 = jax.nn.sigmoid(4.0 * (e - c))
        return jnp.concatenate([p0[..., None], jnp.zeros((b, t // pool, num_classes - 1))], -1)

    norm = np.stack([mean, np.ones_like(mean)])

    def make(**kw):
        return detect.Detector(config, {}, norm, apply_fn=fake_apply, **kw)

    return config, make


def assert_events_match(events, expected, tol, label):
    got = [(e["onset"], e["offset"]) for e in events if e["event_label"] == label]
    assert len(got) == len(expected), (got, expected)
    for (on, off), (want_on, want_off) in zip(got, expected):
        assert abs(on - want_on) <= tol and abs(off - want_off) <= tol, (got, expected)


@pytest.mark.parametrize("overlap", [True, False])
def test_time_mapping_long_stereo_and_short_mono(tmp_path, energy_detector_parts, overlap):
    config, make = energy_detector_parts
    det = make(overlap=overlap)
    fs = time_grid.frame_seconds(config)
    assert fs == pytest.approx(0.04)
    # one output frame + the median filter's half length (measured: within one frame)
    tol = fs * (1 + 5 // 2)
    label = config.data.classes[0]

    long_path = tmp_path / "long.wav"
    soundfile.write(long_path, signal(35.0, 48000, LONG_BURSTS, channels=2, seed=1), 48000)
    probs, seconds = det.frame_probabilities(*soundfile.read(long_path, dtype="float32"))
    assert seconds == fs
    hop = config.features.hop_length
    n_in = -(-int(round(35.0 * config.features.sample_rate)) // hop)
    assert probs.shape == (-(-n_in // 2), len(config.data.classes))
    events = det.detect(long_path)
    assert {e["filename"] for e in events} == {str(long_path)}
    assert_events_match(events, LONG_BURSTS, tol, label)
    assert all(e["event_label"] == label for e in events)
    for e in events:
        assert 0.5 < e["max_probability"] <= 1.0

    short_path = tmp_path / "short.flac"
    soundfile.write(short_path, signal(3.0, 16000, SHORT_BURSTS, seed=2)[:, 0], 16000)
    events = det.detect(short_path, name="short")
    assert_events_match(events, SHORT_BURSTS, tol, label)
    assert max(e["offset"] for e in events) <= 3.0
    assert all(e["filename"] == "short" for e in events)


def test_windows_average_where_they_overlap(energy_detector_parts):
    """The stitched track of a constant-statistics input has no seams; a 10 s clip is one
    window exactly as training sees it."""
    config, make = energy_detector_parts
    det = make()
    sr = config.features.sample_rate
    y = signal(10.0, sr, [(2.0, 8.0)])
    probs, _ = det.frame_probabilities(y, sr)
    assert probs.shape[0] == config.features.num_frames // 2  # one window, 500 / pooling 2
    y = signal(23.7, sr, [])
    probs, _ = det.frame_probabilities(y, sr)
    assert probs.shape[0] == -(-(-(-len(y) // config.features.hop_length)) // 2)
    assert probs[:, 0].max() < 0.5


# ---------------------------------------------------------------------------- exported model
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A workdir holding a tiny initialized (untrained) model as a finished run exports it."""
    from sedjax.recipes import common
    from sedjax.train import checkpoint

    c = config_files.load(ROOT / "configs" / "tiny.py")
    c.model.conv_features = (8, 8, 8)
    c.model.gru_units = 8
    workdir = tmp_path_factory.mktemp("run")
    state = common.init_state(c, "pass2")
    rng = np.random.default_rng(0)
    mean = (-5.0 + rng.standard_normal(c.features.n_mels)).astype(np.float32)
    std = (2.0 + rng.random(c.features.n_mels)).astype(np.float32)
    checkpoint.save_model(workdir, state, (mean, std))
    (workdir / "config.json").write_text(c.to_json_best_effort(indent=2))
    return workdir, c, state, mean, std


def test_one_window_equals_the_training_path(exported):
    workdir, c, state, mean, std = exported
    det = detect.Detector.from_workdir(workdir)
    sr = 22050  # resampled to the feature rate as training's decoder does
    y = signal(10.0, sr, [(2.0, 4.0)], channels=2, seed=3)
    probs, _ = det.frame_probabilities(y, sr)
    fc = c.features
    mono = audio.to_mono_resampled(y, sr, fc.sample_rate)
    mel = features.log_mel(mono, fc.sample_rate, fc)[None]
    frames = np.array([features.num_valid_frames(len(mono), fc)])
    x = features.normalize(mel, frames, mean, std)
    model = models.from_config(c.model, len(c.data.classes))
    want = np.asarray(model.apply({"params": state.params, "batch_stats": state.batch_stats},
                                  x, train=False)[0][0])
    n = -(-len(mono) // fc.hop_length)
    np.testing.assert_allclose(probs, want[:n], atol=2e-4)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sedjax.detect", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_cli_exported_model_with_bad_files(exported, tmp_path):
    workdir, c, *_ = exported
    good1 = tmp_path / "good1.wav"
    soundfile.write(good1, signal(3.0, 16000, [(1.0, 2.0)])[:, 0], 16000)
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    good2 = folder / "sub" / "good2.flac"
    soundfile.write(good2, signal(12.0, 22050, [(5.0, 7.0)], channels=2), 22050)
    (folder / "notes.txt").write_text("not audio")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros((0,), np.float32), 16000)

    # threshold 0: every class is active over every frame, so each good file gets one event per
    # class from 0 to its duration whatever the random model says
    proc = run_cli(f"--workdir={workdir}", good1, folder, corrupt, empty, "--threshold", "0")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 2 and str(corrupt) in err[0] and str(empty) in err[1], proc.stderr
    table = (workdir / detect.DEFAULT_OUT).read_text()
    assert proc.stdout == table
    lines = table.splitlines()
    assert lines[0] == "filename\tonset\toffset\tevent_label\tmax_probability"
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(r) == 5 for r in rows)
    durations = {str(good1): 3.0, str(good2): 12.0}
    assert {r[0] for r in rows} == set(durations)
    for name, duration in durations.items():
        mine = [r for r in rows if r[0] == name]
        assert sorted(r[3] for r in mine) == sorted(c.data.classes)
        for _, onset, offset, _, p in mine:
            assert onset == "0.000" and 0.0 <= float(p) <= 1.0 and len(p.split(".")[1]) == 3
            assert offset == f"{duration:.3f}"
    assert str(corrupt) not in table

    # the default threshold, an explicit --out: the same format (events are what they are)
    out = tmp_path / "deep" / "events.tsv"
    assert detect.main([f"--workdir={workdir}", str(good1), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].split("\t") == list(detect.TABLE_HEADER)
    assert all(len(line.split("\t")) == 5 and line.startswith(str(good1)) for line in lines[1:])


def test_an_mp3_file_is_read(exported, tmp_path):
    """MP3 (libsndfile >= 1.1 reads and writes MPEG layer III): with threshold 0 every class is
    one event from 0 to the file's end, as for the other formats."""
    workdir, c, *_ = exported
    mp3 = tmp_path / "clip.mp3"
    try:
        soundfile.write(mp3, signal(4.0, 44100, [])[:, 0], 44100, format="MP3")
    except Exception as e:  # an older libsndfile, or one built without MPEG support
        pytest.skip(f"this libsndfile cannot write MP3: {e!r}")
    out = tmp_path / "events.tsv"
    assert detect.main([f"--workdir={workdir}", str(mp3), "--threshold", "0",
                        "--out", str(out)]) == 0
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    assert sorted(r[3] for r in rows) == sorted(c.data.classes)
    assert {r[0] for r in rows} == {str(mp3)} and {r[1] for r in rows} == {"0.000"}
    [offset] = {r[2] for r in rows}
    assert 4.0 <= float(offset) <= 4.1  # the encoder may pad the end by a few ms


# ---------------------------------------------------------------------------- workdir errors
def test_workdir_without_model(tmp_path, capsys):
    clip = tmp_path / "a.wav"
    soundfile.write(clip, np.zeros(1600, np.float32), 16000)
    missing = tmp_path / "nothing_here"
    assert detect.main([f"--workdir={missing}", str(clip)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and err[0].startswith("error:")

    no_config = tmp_path / "no_config"
    no_config.mkdir()
    assert detect.main([f"--workdir={no_config}", str(clip)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(no_config) in err[0] and "config.json" in err[0]

    untrained = tmp_path / "untrained"
    untrained.mkdir()
    (untrained / "config.json").write_text(
        config_files.load(ROOT / "configs" / "tiny.py").to_json_best_effort())
    proc = run_cli(f"--workdir={untrained}", clip)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and str(untrained) in err[0] and "no trained model" in err[0], err
    assert not (untrained / detect.DEFAULT_OUT).exists()


def test_model_that_does_not_fit_its_config(exported, tmp_path, capsys):
    workdir, c, *_ = exported
    other = tmp_path / "other"
    (other / "model").mkdir(parents=True)
    for f in ("variables.msgpack", "normalization.npy"):
        (other / "model" / f).write_bytes((workdir / "model" / f).read_bytes())
    c2 = json.loads((workdir / "config.json").read_text())
    c2["model"]["gru_units"] = 16
    (other / "config.json").write_text(json.dumps(c2))
    with pytest.raises(detect.WorkdirError, match="does not match"):
        detect.Detector.from_workdir(other)
    (other / "model" / "variables.msgpack").write_bytes(b"\x00garbage")
    assert detect.main([f"--workdir={other}", "x.wav"]) == 2
    assert "unreadable model" in capsys.readouterr().err


def test_an_older_workdirs_config_json_is_upgraded(exported, tmp_path):
    """config.json of an older sedjax lacks the fields added since (here model.arch,
    model.embeddings, the first block's speed knobs, the compilation cache): read back with
    configs/baseline.py's values, as config_files.upgrade fills them."""
    import shutil

    workdir, c, *_ = exported
    old = tmp_path / "old"
    shutil.copytree(workdir, old)
    data = json.loads((old / "config.json").read_text())
    for key in ("arch", "embeddings", "fold_batch_norm", "first_block_chunk_frames",
                "dropout_masks"):
        del data["model"][key]
    del data["runtime"]["compilation_cache"]
    (old / "config.json").write_text(json.dumps(data))
    config = detect.load_config(old)
    assert config.model.arch == "crnn" and config.model.embeddings.dir == ""
    assert config.model.fold_batch_norm == config.model.first_block_chunk_frames == "auto"
    assert config.model.dropout_masks == "auto"
    assert config.to_dict() == detect.load_config(workdir).to_dict()  # tiny's are baseline's
    assert detect.Detector.from_workdir(old).classes == list(c.data.classes)


def test_table_format():
    events = [{"filename": "a.wav", "onset": 1.0, "offset": 2.5, "event_label": "Dog",
               "max_probability": 0.91234}]
    table = event_files.format_events(events, ["a.wav", "b.wav"], detect.EXTRA_COLUMNS)
    assert table == ("filename\tonset\toffset\tevent_label\tmax_probability\n"
                     "a.wav\t1.000\t2.500\tDog\t0.912\nb.wav\t\t\t\t\n")
    assert table.splitlines()[0].split("\t") == list(detect.TABLE_HEADER)


def test_inputs(tmp_path):
    y = signal(0.5, 8000, [], channels=2)
    path = tmp_path / "a" / "b.WAV"
    path.parent.mkdir()
    soundfile.write(path, y, 8000)
    (tmp_path / "a" / "c.txt").write_text("x")
    (tmp_path / "empty_dir").mkdir()
    paths, errors = detect.find_audio([str(tmp_path / "a"), str(tmp_path / "empty_dir"),
                                       str(tmp_path / "missing.wav"), str(path)])
    assert paths == [path]
    assert len(errors) == 2 and "empty_dir" in errors[0] and "missing.wav" in errors[1]


def test_bad_threshold(capsys):
    assert detect.main(["--workdir=x", "a.wav", "--threshold", "1.5"]) == 2
    assert "--threshold" in capsys.readouterr().err


def test_the_median_filter_a_run_tuned_on_validation_is_used(exported, tmp_path):
    import shutil

    workdir, c, *_ = exported
    tuned = tmp_path / "tuned"
    shutil.copytree(workdir, tuned)
    assert detect.Detector.from_workdir(tuned).postprocess["median_filter"] == 51
    lengths = [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]
    (tuned / "model" / "postprocess.json").write_text(json.dumps({"median_filter": lengths}))
    assert detect.Detector.from_workdir(tuned).postprocess["median_filter"] == lengths
    (tuned / "model" / "postprocess.json").write_text(json.dumps({"median_filter": [3, 3]}))
    with pytest.raises(detect.WorkdirError, match=r"postprocess.json: .*2 lengths for 10"):
        detect.Detector.from_workdir(tuned)
