"""The DESED layout: the generator writes it, the reader reads it as DESED_task's folders are,
and a folder with the faults real downloads have runs (or stops with one message)."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from configs.baseline import CLASSES
from sedjax.data import dataset, event_files, synthetic

ROOT = pathlib.Path(__file__).parents[1]


def _generate(root, sample_rate=16000, **sizes):
    kw = dict(num_weak=6, num_unlabeled=5, num_test=4, num_strong=3, num_validation=4)
    kw.update(sizes)
    return synthetic.generate(root, seed=7, sample_rate=sample_rate, clip_seconds=2.0,
                              num_workers=1, layout="desed", **kw)


def test_generator_writes_desed_tasks_files(tmp_path):
    root = _generate(tmp_path / "d")
    for rel in ("metadata/train/weak.tsv", "metadata/train/synthetic21_train/soundscapes.tsv",
                "metadata/validation/validation.tsv",
                "metadata/validation/validation_durations.tsv", "metadata/eval/public.tsv",
                "metadata/eval/public_durations.tsv"):
        assert (root / rel).is_file(), rel
    assert not list((root / "metadata/train").glob("unlabel*"))  # DESED lists no unlabeled clip
    assert len(list((root / "audio/train/unlabel_in_domain").glob("*.wav"))) == 5
    assert len(list((root / "audio/eval/public").glob("*.wav"))) == 4
    # DESED's strong tsv lists events only: clips without events are in the durations file
    listed = {line.split("\t")[0] for line in
              (root / "metadata/eval/public.tsv").read_text().splitlines()[1:]}
    durations = event_files.read_durations(root / "metadata/eval/public_durations.tsv")
    assert listed <= set(durations) and len(durations) == 4
    assert all(line.split("\t")[1] for line in
               (root / "metadata/eval/public.tsv").read_text().splitlines()[1:])


def test_reader_reads_every_split(tmp_path):
    root = _generate(tmp_path / "d", num_test=12)
    splits = dataset.load_dataset(root, CLASSES, tmp_path / "w", use_strong=True,
                                  layout="desed", sample_rate=16000)
    assert list(splits) == ["weak", "unlabel_in_domain", "synthetic", "validation", "test"]
    assert [len(s) for s in splits.values()] == [6, 5, 3, 4, 12]
    test = splits["test"]
    assert test.paths[0].parent == root / "audio/eval/public"
    # every clip of the durations file is in the split, those without events with none
    assert sorted(test.filenames) == sorted(event_files.read_durations(
        root / "metadata/eval/public_durations.tsv"))
    assert any(not e for e in test.events) and any(e for e in test.events)
    with pytest.raises(dataset.DatasetNotFound, match="DESED"):
        dataset.load_dataset(tmp_path / "nothing", CLASSES, tmp_path / "w", layout="desed")


def test_resampled_16k_folders_and_real_strong_clips_are_used(tmp_path):
    root = _generate(tmp_path / "d")
    weak = root / "audio/train/weak"
    (root / "audio/train/weak_16k").mkdir()
    for p in weak.iterdir():  # DESED_task's resampled copy beside the original folder
        p.rename(root / "audio/train/weak_16k" / p.name)
    real = root / "audio/train/strong_label_real"
    real.mkdir(parents=True)
    soundfile.write(real / "Yreal.wav", np.zeros(16000, np.float32), 16000)
    (root / "metadata/train/audioset_strong.tsv").write_text(
        "filename\tonset\toffset\tevent_label\nYreal.wav\t0.1\t0.9\tDog\n")
    splits = dataset.load_dataset(root, CLASSES, tmp_path / "w", use_strong=True,
                                  layout="desed", sample_rate=16000)
    assert splits["weak"].paths[0].parent.name == "weak_16k"
    strong = splits["synthetic"]
    assert len(strong) == 4 and strong.filenames[-1] == "Yreal.wav"
    assert strong.events[-1] == [(0.1, 0.9, "Dog")]
    assert strong.weak[-1, CLASSES.index("Dog")] == 1
    # at another rate the original folder is read (here: gone, so every clip is missing)
    with pytest.raises(dataset.DatasetError, match="none of the 6 audio files"):
        dataset.load_dataset(root, CLASSES, tmp_path / "w2", layout="desed", sample_rate=44100)


def _main(root, workdir, *overrides):
    cmd = [sys.executable, "-m", "sedjax.main", "--config=configs/tiny_desed.py",
           f"--workdir={workdir}", "--config.data.dataset=desed", f"--config.data.root={root}",
           *overrides]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def faulty_root(tmp_path_factory):
    """A 44.1 kHz DESED-layout folder with the faults of a real download: a missing audio
    file, files in unlabel_in_domain that are not clips, a stereo clip."""
    root = _generate(tmp_path_factory.mktemp("faulty") / "d", sample_rate=44100,
                     num_weak=8, num_unlabeled=8, num_strong=8, num_validation=8, num_test=8)
    missing = sorted((root / "audio/train/weak").glob("*.wav"))[2]
    missing.unlink()
    unlabeled = root / "audio/train/unlabel_in_domain"
    (unlabeled / "README.txt").write_text("not audio\n")
    (unlabeled / "Yextra_broken.wav").write_bytes(b"RIFF....WAVEjunk")
    stereo = sorted((root / "audio/validation/validation").glob("*.wav"))[0]
    y, sr = soundfile.read(stereo)
    soundfile.write(stereo, np.stack([y, 0.5 * y], axis=1), sr)
    return root, missing.name, stereo.name


def test_faulty_folder_runs_and_logs_what_it_skipped(faulty_root, tmp_path):
    """...with cSEBBs tuned on validation (when sebbs is installed), which detection reuses."""
    root, missing, _ = faulty_root
    tuned = ["--config.postprocess.tune.method=csebbs", "--config.postprocess.tune.metric=psds1"]
    csebbs = importlib.util.find_spec("sebbs") is not None
    proc = _main(root, tmp_path / "w", *(tuned if csebbs else []))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "validation: event-based macro F1" in proc.stdout
    log = (tmp_path / "w" / dataset.ERROR_LOG).read_text()
    assert missing in log and "Yextra_broken.wav" in log and "README.txt" not in log
    results = json.loads((tmp_path / "w/results.json").read_text())
    assert results["test"]["threshold_independent"]["num_files"] == 8
    assert results["validation"]["threshold_independent"]["num_files"] == 8  # stereo clip read
    # the 44.1 kHz clips were converted once to 16 kHz mono copies, which the features read
    cache = tmp_path / "w/audio_16000"
    copies = sorted(cache.glob("*/*.wav"))
    assert len(copies) == 7 + 8 + 8 + 8 + 8  # the missing and the broken clip have none
    for p in (copies[0], cache / "validation" / faulty_root[2]):
        info = soundfile.info(p)
        assert (info.samplerate, info.channels) == (16000, 1)
    if csebbs:
        from sedjax import detect
        assert results["postprocess"]["method"] == "csebbs"
        chosen = json.loads((tmp_path / "w/model/postprocess.json").read_text())
        assert set(chosen["csebbs"]["step_filter_length"]) == set(CLASSES)
        detector = detect.Detector.from_workdir(tmp_path / "w")
        assert detector.postprocess["csebbs"] == chosen["csebbs"]
        clip = sorted((root / "audio/eval/public").glob("*.wav"))[0]
        assert isinstance(detector.detect(clip), list)


def test_bad_tsv_row_stops_with_one_message_naming_file_and_line(faulty_root, tmp_path):
    root, _, _ = faulty_root
    bad = tmp_path / "bad"
    import shutil
    shutil.copytree(root, bad)
    weak = bad / "metadata/train/weak.tsv"
    lines = weak.read_text().splitlines()
    lines.insert(3, f"{lines[3].split(chr(9))[0]}\tDog,Elephant")
    weak.write_text("\n".join(lines) + "\n")
    proc = _main(bad, tmp_path / "w")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert f"{weak}:4: unknown event label 'Elephant'" in proc.stderr
