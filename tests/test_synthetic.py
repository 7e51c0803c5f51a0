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
from sedjax.data import synthetic

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
    kw = dict(num_weak=3, num_unlabeled=2, num_test=3)
    a = _tree_hashes(synthetic.generate(tmp_path / "a", seed=11, num_workers=1, **kw))
    b = _tree_hashes(synthetic.generate(tmp_path / "b", seed=11, num_workers=2, **kw))
    c = _tree_hashes(synthetic.generate(tmp_path / "c", seed=12, num_workers=1, **kw))
    assert len([k for k in a if k.endswith(".wav")]) == 8
    assert a == b
    metadata = [k for k in a if k.startswith("metadata")]
    assert [a[k] for k in metadata] != [c[k] for k in metadata]
    assert not set(v for k, v in a.items() if k.endswith(".wav")) & set(c.values())


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
            assert label in synthetic.CLASSES
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
    assert synthetic._annotate(raw) == [
        (0.0, 2.0, "Dog"), (2.2, 3.0, "Dog"), (6.0, 6.3, "Cat"), (6.3, 9.5, "Speech")]


def test_metadata_matches_rendered_events(dataset):
    weak = {r[0]: r[1] for r in _rows(dataset / "metadata/train/weak.csv")[1:]}
    for i, name in enumerate(sorted(weak)):
        _, events = synthetic.render_clip(5, synthetic.SPLITS["weak"], i)
        assert weak[name] == ",".join(sorted({e[2] for e in events}))
    assert "" in weak.values() or len(set(weak.values())) > 1
    test = _test_events(dataset)
    for i, name in enumerate(sorted(test)[:20]):
        _, events = synthetic.render_clip(5, synthetic.SPLITS["test"], i)
        assert test[name] == sorted(events)


def test_default_classes_are_the_renderable_dcase_classes():
    # The generator's own class list (its renderers' order) is the configs' DCASE2018 list.
    assert synthetic.CLASSES == tuple(synthetic.FAMILIES) == tuple(baseline.CLASSES)
    for i in range(3):
        x, events = synthetic.render_clip(2, synthetic.SPLITS["test"], i)
        y, same = synthetic.render_clip(2, synthetic.SPLITS["test"], i, SR, baseline.CLASSES)
        assert x.tobytes() == y.tobytes() and events == same


def test_unknown_class_is_a_clear_error(tmp_path):
    for call in (lambda: synthetic.render_clip(1, 0, 0, classes=("Dog", "Unicorn")),
                 lambda: synthetic.generate(tmp_path / "d", num_weak=1, num_unlabeled=1,
                                            num_test=1, seed=1, classes=("Unicorn", "Cat"),
                                            num_workers=1)):
        with pytest.raises(ValueError, match="Unicorn") as info:
            call()
        assert "Dog" not in str(info.value).split(";")[0]  # only the unknown class is named
        assert all(c in str(info.value) for c in synthetic.CLASSES)  # ... then the known ones
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


def test_regeneration_removes_stale_clips_and_spares_real_data(tmp_path):
    root = tmp_path / "syn"
    synthetic.generate(root, num_weak=3, num_unlabeled=1, num_test=1, seed=1, num_workers=1)
    synthetic.generate(root, num_weak=1, num_unlabeled=1, num_test=1, seed=1, num_workers=1)
    assert len(list((root / "audio/train/weak").glob("*.wav"))) == 1
    real = tmp_path / "real"
    (real / "metadata/train").mkdir(parents=True)
    (real / "metadata/train/weak.csv").write_text(
        "filename\tevent_labels\nY-abc_30.000_40.000.wav\tDog\n")
    with pytest.raises(RuntimeError, match="real"):
        synthetic.generate(real, num_weak=1, num_unlabeled=1, num_test=1, seed=1, num_workers=1)


def test_cli(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "sedjax.data.synthetic", f"--out={tmp_path / 'd'}", "--num_weak=2",
         "--num_unlabeled=1", "--num_test=1", "--workers=1"],
        capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert "clips/s" in out.stdout
    assert (tmp_path / "d" / synthetic.MARKER).exists()
    out = subprocess.run(
        [sys.executable, "-m", "sedjax.data.synthetic", f"--out={tmp_path / 'four'}",
         "--num_weak=6", "--num_unlabeled=1", "--num_test=1", "--workers=1",
         "--classes=Cat,Dog,Speech,Alarm_bell_ringing"],
        capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    labels = {x for line in (tmp_path / "four/metadata/train/weak.csv").read_text().splitlines()[1:]
              for x in line.split("\t")[1].split(",") if x}
    assert labels and labels <= {"Cat", "Dog", "Speech", "Alarm_bell_ringing"}
    bad = subprocess.run(
        [sys.executable, "-m", "sedjax.data.synthetic", f"--out={tmp_path / 'bad'}",
         "--classes=Cat,Unicorn"], capture_output=True, text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)))
    assert bad.returncode != 0 and "Unicorn" in bad.stderr and "Traceback" not in bad.stderr
