"""Tests of the synthetic DCASE2018-layout soundscape generator."""

import collections
import csv
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from configs import baseline
from sedjax.data import soundscapes, synthetic

# Where each sound family puts most of its energy (Hz): how the generator designs them.
BANDS = {"Alarm_bell_ringing": (1100, 3500), "Blender": (150, 2000), "Cat": (300, 2500),
         "Dishes": (2500, 12000), "Dog": (250, 2000), "Electric_shaver_toothbrush": (1000, 8000),
         "Frying": (3000, 16000), "Running_water": (500, 6000), "Speech": (100, 3000),
         "Vacuum_cleaner": (100, 2500)}
SR = 44100


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_hashes(root):
    return {str(p.relative_to(root)): _sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _test_events(root):
    """Returns {filename: [(onset, offset, label), ...]} from test.csv (empty list: no event)."""
    events = collections.defaultdict(list)
    for name, onset, offset, label in _rows(root / "metadata/test/test.csv")[1:]:
        events[name] += [(float(onset), float(offset), label)] if label else []
    return events


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "data"
    return synthetic.generate(root, num_weak=20, num_unlabeled=4, num_test=100, seed=5,
                              num_workers=2)


def test_layout_headers_and_wavs(dataset):
    weak = _rows(dataset / "metadata/train/weak.csv")
    unl = _rows(dataset / "metadata/train/unlabel_in_domain.csv")
    test = _rows(dataset / "metadata/test/test.csv")
    assert weak[0] == ["filename", "event_labels"] and len(weak) == 21
    assert unl[0] == ["filename"] and len(unl) == 5
    assert test[0] == ["filename", "onset", "offset", "event_label"]
    assert len({r[0] for r in test[1:]}) == 100
    dirs = {"audio/train/weak": weak, "audio/train/unlabel_in_domain": unl, "audio/test": test}
    durations = []
    for d, rows in dirs.items():
        names = {r[0] for r in rows[1:]}
        assert names == {p.name for p in (dataset / d).glob("*.wav")}
        for name in names:
            assert name.startswith("Ysyn_") and name.endswith(".wav")
            info = sf.info(str(dataset / d / name))
            assert (info.samplerate, info.channels, info.subtype, info.format) == (
                SR, 1, "PCM_16", "WAV")
            assert info.frames <= 10 * SR
            assert abs(float(name[:-4].split("_")[-1]) - info.frames / SR) < 1e-3  # name = length
            durations.append(info.frames / SR)
    assert min(durations) >= 6.0 and np.mean(np.array(durations) < 10.0) < 0.2  # a few shorter
    marker = json.loads((dataset / synthetic.MARKER).read_text())
    assert marker["num_test"] == 100 and marker["seed"] == 5


def test_same_seed_is_byte_identical_whatever_the_workers(tmp_path):
    kw = dict(num_weak=3, num_unlabeled=2, num_test=3, num_strong=2)
    a = _tree_hashes(synthetic.generate(tmp_path / "a", seed=11, num_workers=1, **kw))
    b = _tree_hashes(synthetic.generate(tmp_path / "b", seed=11, num_workers=2, **kw))
    c = _tree_hashes(synthetic.generate(tmp_path / "c", seed=12, num_workers=1, **kw))
    assert len([k for k in a if k.endswith(".wav")]) == 10
    assert a == b
    metadata = [k for k in a if k.startswith("metadata")]
    assert [a[k] for k in metadata] != [c[k] for k in metadata]
    assert not set(v for k, v in a.items() if k.endswith(".wav")) & set(c.values())


# What the generator wrote for seed 11, 3 weak, 2 unlabeled, 3 test clips before the strong split
# existed. The strong split must not change the other splits; a deliberate change of the generated
# content must bump synthetic.VERSION and update these.
GOLDEN_WEAK = """filename\tevent_labels
Ysyn_w00000_0.000_10.000.wav\tElectric_shaver_toothbrush,Speech
Ysyn_w00001_0.000_10.000.wav\tBlender,Dishes
Ysyn_w00002_0.000_10.000.wav\tBlender,Dishes,Frying
"""
GOLDEN_TEST = """filename\tonset\toffset\tevent_label
Ysyn_t00000_0.000_10.000.wav\t1.782\t6.311\tFrying
Ysyn_t00001_0.000_10.000.wav\t3.669\t5.885\tDishes
Ysyn_t00001_0.000_10.000.wav\t6.755\t7.950\tAlarm_bell_ringing
Ysyn_t00002_0.000_10.000.wav\t1.578\t5.413\tBlender
Ysyn_t00002_0.000_10.000.wav\t9.682\t10.000\tAlarm_bell_ringing
"""
# Each clip's (RMS, mean |first difference|) of its int16 samples: a fingerprint of the audio
# that float rounding across machines does not move (a byte hash would be machine-dependent).
GOLDEN_AUDIO = {
    "audio/test/Ysyn_t00000_0.000_10.000.wav": (97.437, 16.834),
    "audio/test/Ysyn_t00001_0.000_10.000.wav": (1001.294, 306.637),
    "audio/test/Ysyn_t00002_0.000_10.000.wav": (515.95, 95.952),
    "audio/train/unlabel_in_domain/Ysyn_u00000_0.000_10.000.wav": (1230.441, 168.35),
    "audio/train/unlabel_in_domain/Ysyn_u00001_0.000_10.000.wav": (122.214, 59.616),
    "audio/train/weak/Ysyn_w00000_0.000_10.000.wav": (635.888, 87.095),
    "audio/train/weak/Ysyn_w00001_0.000_10.000.wav": (532.649, 103.389),
    "audio/train/weak/Ysyn_w00002_0.000_10.000.wav": (291.993, 82.605),
}
SMALL = dict(num_weak=3, num_unlabeled=2, num_test=3, seed=11)


def _pair(tmp_path_factory, name: str, **extra):
    """The same small dataset without and with an extra split: (plain root, root with it)."""
    base = tmp_path_factory.mktemp(name)
    plain = synthetic.generate(base / "plain", **SMALL, num_workers=1)
    return plain, synthetic.generate(base / name, **SMALL, **extra, num_workers=2)


@pytest.fixture(scope="module")
def strong_pair(tmp_path_factory):
    """The same small dataset without and with a strong split: (plain root, strong root)."""
    return _pair(tmp_path_factory, "strong", num_strong=8)


def _strong_csv_lines(clips):
    """test.csv's format: one row per event, or one row with empty fields for a clip without."""
    lines = ["filename\tonset\toffset\tevent_label"]
    for name, events in clips:
        lines += [f"{name}\t{a:.3f}\t{b:.3f}\t{c}" for a, b, c in events] or [f"{name}\t\t\t"]
    return lines


def test_strong_split_csv_matches_rendered_events(strong_pair):
    _, root = strong_pair
    names = sorted(p.name for p in (root / "audio/train/synthetic").glob("*.wav"))
    assert len(names) == 8 and all(n.startswith("Ysyn_s") for n in names)
    clips = []
    for i, name in enumerate(names):
        x, events = soundscapes.render_clip(11, synthetic.SPLITS["synthetic"], i)
        assert name == f"Ysyn_s{i:05d}_0.000_{x.size / SR:.3f}.wav"
        clips.append((name, events))
        if i < 2:  # the audio is the rendered clip
            pcm, sr = sf.read(str(root / "audio/train/synthetic" / name), dtype="int16")
            assert sr == SR
            np.testing.assert_array_equal(pcm, np.clip(np.round(x * 32767.0), -32768, 32767))
    text = (root / "metadata/train/synthetic.csv").read_text()
    assert text.splitlines() == _strong_csv_lines(clips) and text.endswith("\n")
    assert any(not ev for _, ev in clips) and any(len(ev) > 1 for _, ev in clips)
    # the same writer and format as test.csv
    test_names = sorted(p.name for p in (root / "audio/test").glob("*.wav"))
    test_clips = [(n, soundscapes.render_clip(11, synthetic.SPLITS["test"], i)[1])
                  for i, n in enumerate(test_names)]
    assert (root / "metadata/test/test.csv").read_text().splitlines() == _strong_csv_lines(
        test_clips)


def test_strong_clips_differ_from_other_splits(strong_pair):
    _, root = strong_pair
    hashes = _tree_hashes(root)
    strong = {v for k, v in hashes.items() if k.startswith("audio/train/synthetic/")}
    others = {v for k, v in hashes.items() if k.endswith(".wav") and "synthetic" not in k}
    assert len(strong) == 8 and len(others) == 8 and not strong & others
    assert len(set(synthetic.SPLITS.values())) == len(synthetic.SPLITS)
    assert len(set(synthetic._PREFIX.values())) == len(synthetic._PREFIX)
    for i in range(3):
        x, _ = soundscapes.render_clip(11, synthetic.SPLITS["synthetic"], i)
        for split in ("weak", "unlabel_in_domain", "test"):
            y, _ = soundscapes.render_clip(11, synthetic.SPLITS[split], i)
            assert x.tobytes() != y.tobytes()


def test_other_splits_do_not_depend_on_num_strong(strong_pair):
    plain, strong = strong_pair
    a, b = _tree_hashes(plain), _tree_hashes(strong)
    assert not any("synthetic" in k for k in a)
    assert not (plain / "audio/train/synthetic").exists()
    assert {k for k in b if "synthetic" in k} == {
        "metadata/train/synthetic.csv", *(f"audio/train/synthetic/{p.name}"
                                          for p in (strong / "audio/train/synthetic").iterdir())}
    others = {k: v for k, v in b.items() if "synthetic" not in k and k != synthetic.MARKER}
    assert len(others) == 11 and others == {k: v for k, v in a.items() if k != synthetic.MARKER}
    for root in (plain, strong):  # ... and are what they were before the strong split existed
        assert (root / "metadata/train/weak.csv").read_text() == GOLDEN_WEAK
        assert (root / "metadata/test/test.csv").read_text() == GOLDEN_TEST
        assert (root / "metadata/train/unlabel_in_domain.csv").read_text() == (
            "filename\nYsyn_u00000_0.000_10.000.wav\nYsyn_u00001_0.000_10.000.wav\n")
        for rel, golden in GOLDEN_AUDIO.items():
            x = sf.read(str(root / rel), dtype="int16")[0].astype(np.float64)
            np.testing.assert_allclose(
                [np.sqrt(np.mean(x ** 2)), np.mean(np.abs(np.diff(x)))], golden, rtol=1e-4,
                err_msg=rel)


def test_marker_without_strong_split_is_unchanged(strong_pair):
    plain, strong = strong_pair
    # the marker format from before the strong split: existing datasets stay complete
    old = json.dumps(dict(num_weak=3, num_unlabeled=2, num_test=3, seed=11, sample_rate=SR,
                          classes=list(soundscapes.CLASSES), clip_seconds=10.0,
                          version=synthetic.VERSION), indent=1)
    assert (plain / synthetic.MARKER).read_text() == old
    kw = dict(SMALL, sample_rate=SR, classes=soundscapes.CLASSES, clip_seconds=10.0)
    assert synthetic._params(**kw, num_strong=0) == synthetic._params(**kw) == old
    marker = json.loads((strong / synthetic.MARKER).read_text())
    assert marker["num_strong"] == 8
    assert {k: v for k, v in marker.items() if k != "num_strong"} == json.loads(old)


def test_event_band_energy_rises_during_annotated_events(dataset):
    """The class's band is louder during its event than in the clip's event-free frames, and holds
    most of the energy the event adds."""
    louder, concentrated = [], []
    for name, events in _test_events(dataset).items():
        if not events:
            continue
        x, sr = sf.read(str(dataset / "audio/test" / name), dtype="float32")
        f, t, z = scipy.signal.stft(x, sr, nperseg=2048, noverlap=2048 - 882, boundary=None)
        power = np.abs(z) ** 2
        free = np.ones(t.size, bool)
        for on, off, _ in events:
            free &= ~((t > on - 0.1) & (t < off + 0.1))
        if free.sum() < 10:
            continue
        for i, (on, off, label) in enumerate(events):
            band = (f >= BANDS[label][0]) & (f < BANDS[label][1])
            inside = (t >= on + 0.02) & (t <= off - 0.02)
            gain = power[band][:, inside].mean() / power[band][:, free].mean()
            louder.append(10 * np.log10(gain) > 3.0)
            if not any(j != i and o < off and on < e for j, (o, e, _) in enumerate(events)):
                excess = np.maximum(power[:, inside].mean(1) - power[:, free].mean(1), 0)
                concentrated.append(excess[band].sum() > 0.5 * excess.sum())
    assert len(louder) >= 100 and len(concentrated) >= 50
    assert np.mean(louder) >= 0.9
    assert np.mean(concentrated) >= 0.85


def test_annotation_rules(dataset):
    events = _test_events(dataset)
    for name, evs in events.items():
        length = sf.info(str(dataset / "audio/test" / name)).frames / SR
        for on, off, label in evs:
            assert label in soundscapes.CLASSES
            assert 0 <= on < off <= length + 1e-3
            assert off - on >= 0.25 - 1e-9
        for label in {e[2] for e in evs}:
            spans = sorted((on, off) for on, off, lab in evs if lab == label)
            for (_, prev_off), (on, _) in zip(spans, spans[1:]):
                assert on - prev_off >= 0.15 - 1e-9
    counts = collections.Counter(len(v) for v in events.values())
    assert counts[0] > 0 and max(counts) >= 3
    assert len({e[2] for v in events.values() for e in v}) == 10


def test_annotate_merges_and_drops():
    raw = [(0, 1000, "Dog"), (1100, 2000, "Dog"), (2200, 3000, "Dog"), (5000, 5200, "Cat"),
           (6000, 6300, "Cat"), (6300, 9000, "Speech"), (8000, 9500, "Speech")]
    assert soundscapes._annotate(raw) == [
        (0.0, 2.0, "Dog"), (2.2, 3.0, "Dog"), (6.0, 6.3, "Cat"), (6.3, 9.5, "Speech")]


def test_metadata_matches_rendered_events(dataset):
    weak = {r[0]: r[1] for r in _rows(dataset / "metadata/train/weak.csv")[1:]}
    for i, name in enumerate(sorted(weak)):
        _, events = soundscapes.render_clip(5, synthetic.SPLITS["weak"], i)
        assert weak[name] == ",".join(sorted({e[2] for e in events}))
    assert "" in weak.values() or len(set(weak.values())) > 1
    test = _test_events(dataset)
    for i, name in enumerate(sorted(test)[:20]):
        _, events = soundscapes.render_clip(5, synthetic.SPLITS["test"], i)
        assert test[name] == sorted(events)


def test_default_classes_are_the_renderable_dcase_classes():
    # The generator's own class list (its renderers' order) is the configs' DCASE2018 list.
    assert soundscapes.CLASSES == tuple(soundscapes.FAMILIES) == tuple(baseline.CLASSES)
    for i in range(3):
        x, events = soundscapes.render_clip(2, synthetic.SPLITS["test"], i)
        y, same = soundscapes.render_clip(2, synthetic.SPLITS["test"], i, SR, baseline.CLASSES)
        assert x.tobytes() == y.tobytes() and events == same


def test_unknown_class_is_a_clear_error(tmp_path):
    for call in (lambda: soundscapes.render_clip(1, 0, 0, classes=("Dog", "Unicorn")),
                 lambda: synthetic.generate(tmp_path / "d", num_weak=1, num_unlabeled=1,
                                            num_test=1, seed=1, classes=("Unicorn", "Cat"),
                                            num_workers=1)):
        with pytest.raises(ValueError, match="Unicorn") as info:
            call()
        assert "Dog" not in str(info.value).split(";")[0]  # only the unknown class is named
        assert all(c in str(info.value) for c in soundscapes.CLASSES)  # ... then the known ones
    assert not (tmp_path / "d").exists()  # refused before writing anything


def test_empty_clips_format(dataset):
    lines = (dataset / "metadata/test/test.csv").read_text().splitlines()
    empty = [line for line in lines[1:] if line.split("\t")[3] == ""]
    assert empty and all(line.endswith(".wav\t\t\t") and line.count("\t") == 3 for line in empty)
    names = [line.split("\t")[0] for line in lines[1:]]
    assert all(names.count(line.split("\t")[0]) == 1 for line in empty)  # one row per empty clip


def _config(**sizes):
    c = baseline.get_config().data
    c.synthetic.update(dict(num_weak=2, num_unlabeled=1, num_test=2, seed=3), **sizes)
    return c


def _age(root):
    """Sets every file's mtime far in the past; returns that time."""
    for p in root.rglob("*"):
        os.utime(p, (1e9, 1e9))
    return 1e9


def test_ensure_dataset_reuses_and_regenerates(tmp_path):
    root = tmp_path / "syn"

    def mtimes():  # marker and audio; the clip names depend on the seed (clip lengths)
        return [p.stat().st_mtime for p in [root / synthetic.MARKER, *root.rglob("*.wav")]]

    assert synthetic.ensure_dataset(_config(), root) == root
    old = _age(root)
    synthetic.ensure_dataset(_config(), root)  # same parameters: nothing rewritten
    assert set(mtimes()) == {old}
    synthetic.ensure_dataset(_config(seed=4), root)  # a parameter changed: regenerated
    assert json.loads((root / synthetic.MARKER).read_text())["seed"] == 4
    assert len(mtimes()) == 6 and min(mtimes()) > old
    _age(root)
    (root / synthetic.MARKER).unlink()  # incomplete (interrupted) dataset: regenerated
    synthetic.ensure_dataset(_config(seed=4), root)
    assert len(mtimes()) == 6 and min(mtimes()) > old


def test_ensure_dataset_num_strong(tmp_path):
    root = tmp_path / "syn"
    synthetic.ensure_dataset(_config(), root)  # num_strong 0 (or unset): no strong split
    plain_marker = (root / synthetic.MARKER).read_text()
    assert not (root / "metadata/train/synthetic.csv").exists()
    synthetic.ensure_dataset(_config(num_strong=0), root)  # the same marker: reused
    assert (root / synthetic.MARKER).read_text() == plain_marker
    synthetic.ensure_dataset(_config(num_strong=2), root)  # regenerated with a strong split
    assert json.loads((root / synthetic.MARKER).read_text())["num_strong"] == 2
    assert len(_rows(root / "metadata/train/synthetic.csv")) >= 3
    assert len(list((root / "audio/train/synthetic").glob("*.wav"))) == 2
    old = _age(root)
    synthetic.ensure_dataset(_config(num_strong=2), root)  # reused
    assert (root / synthetic.MARKER).stat().st_mtime == old
    synthetic.ensure_dataset(_config(), root)  # back to none: the strong split is removed
    assert (root / synthetic.MARKER).read_text() == plain_marker
    assert not (root / "metadata/train/synthetic.csv").exists()
    assert not (root / "audio/train/synthetic").exists()


def test_regeneration_removes_stale_clips_and_spares_real_data(tmp_path):
    root = tmp_path / "syn"
    synthetic.generate(root, num_weak=3, num_unlabeled=1, num_test=1, seed=1, num_workers=1)
    synthetic.generate(root, num_weak=1, num_unlabeled=1, num_test=1, seed=1, num_workers=1)
    assert len(list((root / "audio/train/weak").glob("*.wav"))) == 1
    synthetic.generate(root, num_weak=1, num_unlabeled=1, num_test=1, seed=1, num_workers=1,
                       num_strong=3)
    synthetic.generate(root, num_weak=1, num_unlabeled=1, num_test=1, seed=1, num_workers=1,
                       num_strong=1)
    assert len(list((root / "audio/train/synthetic").glob("*.wav"))) == 1
    assert len(_rows(root / "metadata/train/synthetic.csv")) >= 2
    synthetic.generate(root, num_weak=1, num_unlabeled=1, num_test=1, seed=1, num_workers=1)
    assert not (root / "metadata/train/synthetic.csv").exists()
    assert not (root / "audio/train/synthetic").exists()
    real = tmp_path / "real"
    (real / "metadata/train").mkdir(parents=True)
    (real / "metadata/train/weak.csv").write_text(
        "filename\tevent_labels\nY-abc_30.000_40.000.wav\tDog\n")
    with pytest.raises(RuntimeError, match="real"):
        synthetic.generate(real, num_weak=1, num_unlabeled=1, num_test=1, seed=1, num_workers=1)
    real2019 = tmp_path / "real2019"  # a real strong split is not overwritten either
    (real2019 / "metadata/train").mkdir(parents=True)
    (real2019 / "metadata/train/synthetic.csv").write_text(
        "filename\tonset\toffset\tevent_label\n0.wav\t1.0\t2.0\tDog\n")
    with pytest.raises(RuntimeError, match="real"):
        synthetic.generate(real2019, num_weak=1, num_unlabeled=1, num_test=1, seed=1,
                           num_workers=1)
    assert (real2019 / "metadata/train/synthetic.csv").exists()


def test_cli(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "sedjax.data.synthetic", f"--out={tmp_path / 'd'}", "--num_weak=2",
         "--num_unlabeled=1", "--num_test=1", "--workers=1", "--num_strong=2"],
        capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert "clips/s" in out.stdout and "2 synthetic (strong)" in out.stdout
    assert (tmp_path / "d" / synthetic.MARKER).exists()
    assert len(list((tmp_path / "d/audio/train/synthetic").glob("*.wav"))) == 2
    assert (tmp_path / "d/metadata/train/synthetic.csv").exists()
    out = subprocess.run(
        [sys.executable, "-m", "sedjax.data.synthetic", f"--out={tmp_path / 'four'}",
         "--num_weak=6", "--num_unlabeled=1", "--num_test=1", "--workers=1",
         "--classes=Cat,Dog,Speech,Alarm_bell_ringing"],
        capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    labels = {x for line in (tmp_path / "four/metadata/train/weak.csv").read_text().splitlines()[1:]
              for x in line.split("\t")[1].split(",") if x}
    assert labels and labels <= {"Cat", "Dog", "Speech", "Alarm_bell_ringing"}
    assert not (tmp_path / "four/metadata/train/synthetic.csv").exists()  # default: none
    bad = subprocess.run(
        [sys.executable, "-m", "sedjax.data.synthetic", f"--out={tmp_path / 'bad'}",
         "--classes=Cat,Unicorn"], capture_output=True, text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)))
    assert bad.returncode != 0 and "Unicorn" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture(scope="module")
def validation_pair(tmp_path_factory):
    """The same small dataset without and with a validation split: (plain root, with it)."""
    return _pair(tmp_path_factory, "validation", num_validation=6)


def test_validation_split_is_written_in_desed_layout(validation_pair):
    _, root = validation_pair
    names = sorted(p.name for p in (root / "audio/validation").glob("*.wav"))
    assert len(names) == 6 and all(n.startswith("Ysyn_v") for n in names)
    clips, durations = [], ["filename\tduration"]
    for i, name in enumerate(names):
        x, events = soundscapes.render_clip(11, synthetic.SPLITS["validation"], i)
        assert name == f"Ysyn_v{i:05d}_0.000_{x.size / SR:.3f}.wav"
        clips.append((name, events))
        durations.append(f"{name}\t{x.size / SR:.3f}")
    meta = root / "metadata/validation"
    assert (meta / "validation.tsv").read_text().splitlines() == _strong_csv_lines(clips)
    assert (meta / "validation_durations.tsv").read_text().splitlines() == durations
    # the reader takes it as a strongly labelled split with the rendered events
    from sedjax.data import dataset as reader
    split = reader.load_dataset(root, soundscapes.CLASSES, root.parent / "w")["validation"]
    assert split.filenames == names and split.events == [ev for _, ev in clips]


def test_validation_clips_are_their_own_and_leave_the_other_splits_alone(validation_pair):
    plain, with_val = validation_pair
    a, b = _tree_hashes(plain), _tree_hashes(with_val)
    val = {v for k, v in b.items() if k.startswith("audio/validation/")}
    others = {v for k, v in b.items() if k.endswith(".wav") and "validation" not in k}
    assert len(val) == 6 and not val & others
    assert {k: v for k, v in b.items() if "validation" not in k and k != synthetic.MARKER} == {
        k: v for k, v in a.items() if k != synthetic.MARKER}
    assert not any("validation" in k for k in a)


def test_num_validation_on_the_command_line(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "sedjax.data.synthetic", f"--out={out}",
                           "--num_weak=2", "--num_unlabeled=1", "--num_test=1",
                           "--num_validation=3", "--workers=1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 validation" in proc.stdout
    assert len(list((out / "audio/validation").glob("*.wav"))) == 3
    assert len((out / "metadata/validation/validation_durations.tsv").read_text()
               .splitlines()) == 4


# ---- the DESED layout: what DESED_task's readers expect ------------------------------------
DESED_SMALL = dict(num_unlabeled=1, seed=4, sample_rate=8000, clip_seconds=2.0, layout="desed")


def test_desed_weak_clips_all_carry_a_label_and_labelled_draws_are_kept(tmp_path):
    root = synthetic.generate(tmp_path / "d", num_weak=30, num_test=0, num_workers=2,
                              **DESED_SMALL)
    first = [soundscapes.render_clip(4, synthetic.SPLITS["weak"], i, 8000, clip_seconds=2.0)
             for i in range(30)]
    quiet = [i for i, (_, ev) in enumerate(first) if not ev]
    assert quiet  # this seed draws clips without any event: they are the ones redrawn
    rows = _rows(root / "metadata/train/weak.tsv")
    assert rows[0] == ["filename", "event_labels"] and len(rows) == 31
    for i, (name, labels) in enumerate(rows[1:]):
        assert labels and set(labels.split(",")) <= set(soundscapes.CLASSES)
        assert name.startswith(f"Ysyn_w{i:05d}_")
        if i not in quiet:  # the clip as drawn, its labels and its audio
            x, events = first[i]
            assert labels == ",".join(sorted({e[2] for e in events}))
            pcm, _ = sf.read(str(root / "audio/train/weak" / name), dtype="int16")
            np.testing.assert_array_equal(pcm, np.clip(np.round(x * 32767.0), -32768, 32767))
    assert sorted(p.name for p in (root / "audio/train/weak").glob("*.wav")) == sorted(
        r[0] for r in rows[1:])
    # DESED_task's reader (WeakSet) splits every row's labels: an empty one would be NaN
    pd = pytest.importorskip("pandas")
    weak = pd.read_csv(root / "metadata/train/weak.tsv", sep="\t")
    assert all(isinstance(v, str) and v.split(",") for v in weak["event_labels"])
    # the DCASE2018 layout keeps its clips without any label (its demo figures rest on them)
    plain = synthetic.generate(tmp_path / "plain", num_weak=30, num_test=1, num_workers=1,
                               **{**DESED_SMALL, "layout": "dcase2018"})
    labels = [r[1] for r in _rows(plain / "metadata/train/weak.csv")[1:]]
    assert [i for i, v in enumerate(labels) if not v] == quiet


def test_desed_marker_carries_its_layout_version_and_old_desed_datasets_are_regenerated(
        tmp_path):
    kw = dict(num_weak=2, num_unlabeled=1, num_test=1, seed=3, sample_rate=8000,
              classes=soundscapes.CLASSES, clip_seconds=2.0)
    marker = json.loads(synthetic._params(**kw, layout="desed"))
    assert marker["layout_version"] == synthetic.LAYOUT_VERSIONS["desed"] >= 1
    assert "layout_version" not in json.loads(synthetic._params(**kw))  # DCASE2018: as before
    c = _config()
    c.synthetic.update(layout="desed", sample_rate=8000)
    c.clip_seconds = 2.0
    root = synthetic.ensure_dataset(c, tmp_path / "syn")
    old = {k: v for k, v in json.loads((root / synthetic.MARKER).read_text()).items()
           if k != "layout_version"}  # what a DESED-layout dataset written before held
    (root / synthetic.MARKER).write_text(json.dumps(old, indent=1))
    stamp = _age(root)
    synthetic.ensure_dataset(c, root)
    assert json.loads((root / synthetic.MARKER).read_text())["layout_version"] >= 1
    assert (root / synthetic.MARKER).stat().st_mtime > stamp  # regenerated


# DESED_task's confs/default.yaml: synth_val_folder_44k, synth_val_tsv, synth_val_dur (relative
# to its dcase/dataset/ or dcase_synth/ folder)
DESED_TASK_SYNTH_VAL = ("audio/validation/synthetic21_validation/soundscapes",
                        "metadata/validation/synthetic21_validation/soundscapes.tsv",
                        "metadata/validation/synthetic21_validation/durations.tsv")


@pytest.fixture(scope="module")
def synth_val_pair(tmp_path_factory):
    """A small DESED-layout dataset without and with the synthetic validation set."""
    base = tmp_path_factory.mktemp("synth_val")
    kw = dict(DESED_SMALL, num_weak=3, num_test=2, num_validation=2, num_workers=1)
    return (synthetic.generate(base / "plain", **kw),
            synthetic.generate(base / "with", **kw, num_synth_validation=6))


def test_synth_validation_is_written_where_desed_task_reads_it(synth_val_pair):
    plain, root = synth_val_pair
    folder, tsv, durations = (root / rel for rel in DESED_TASK_SYNTH_VAL)
    names = sorted(p.name for p in folder.glob("*.wav"))
    assert len(names) == 6
    clips, duration_rows = [], [["filename", "duration"]]
    for i, name in enumerate(names):
        x, events = soundscapes.render_clip(4, synthetic.SPLITS["synth_validation"], i, 8000,
                                            clip_seconds=2.0)
        assert name == f"Ysyn_sv{i:05d}_0.000_{x.size / 8000:.3f}.wav"
        clips.append((name, events))
        duration_rows.append([name, f"{x.size / 8000:.3f}"])
    # DESED's strong tsv: events only (a quiet clip is in the durations file alone)
    assert _rows(tsv) == [["filename", "onset", "offset", "event_label"]] + [
        [n, f"{a:.3f}", f"{b:.3f}", c] for n, ev in clips for a, b, c in ev]
    assert _rows(durations) == duration_rows
    assert json.loads((root / synthetic.MARKER).read_text())["num_synth_validation"] == 6
    # the other splits are those of the dataset without it
    a, b = _tree_hashes(plain), _tree_hashes(root)
    assert {k: v for k, v in b.items() if "synthetic21_validation" not in k
            and k != synthetic.MARKER} == {k: v for k, v in a.items() if k != synthetic.MARKER}
    assert not any("synthetic21_validation" in k for k in a)
    assert "num_synth_validation" not in json.loads((plain / synthetic.MARKER).read_text())
    pd = pytest.importorskip("pandas")  # as DESED_task's train_sed.py reads them
    assert list(pd.read_csv(tsv, sep="\t").columns) == ["filename", "onset", "offset",
                                                       "event_label"]
    assert list(pd.read_csv(durations, sep="\t").columns) == ["filename", "duration"]


def test_synth_validation_needs_the_desed_layout_and_regeneration_removes_it(tmp_path):
    with pytest.raises(ValueError, match="num_synth_validation.*'desed'"):
        synthetic.generate(tmp_path / "x", num_weak=1, num_unlabeled=1, num_test=1, seed=1,
                           num_workers=1, num_synth_validation=2)
    kw = dict(DESED_SMALL, num_weak=2, num_workers=1)
    root = synthetic.generate(tmp_path / "d", num_test=2, num_synth_validation=2, **kw)
    assert (root / "metadata/eval/public.tsv").is_file()
    root = synthetic.generate(root, num_test=0, **kw)  # DESED_task's download: no public set
    assert not (root / "metadata/eval/public.tsv").exists()
    assert not (root / "metadata/eval/public_durations.tsv").exists()
    assert not (root / "audio/eval").exists()
    assert not (root / DESED_TASK_SYNTH_VAL[1]).exists()
    assert not (root / "audio/validation/synthetic21_validation").exists()


def test_num_synth_validation_on_the_command_line(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "sedjax.data.synthetic", f"--out={out}", "--layout=desed",
           "--num_weak=2", "--num_unlabeled=1", "--num_test=0", "--num_synth_validation=2",
           "--sample_rate=8000", "--workers=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 synthetic21_validation" in proc.stdout
    assert len(list((out / DESED_TASK_SYNTH_VAL[0]).glob("*.wav"))) == 2
    assert not (out / "metadata/eval").exists()
    bad = subprocess.run(cmd[:4] + ["--layout=dcase2018"] + cmd[5:], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: num_synth_validation")
