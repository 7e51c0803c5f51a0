"""The DESED layout: the generator writes it, the reader reads it as DESED_task's folders are,
and a folder with the faults real downloads have runs (or stops with one message)."""

import importlib.util
import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from configs import tiny_desed
from configs.baseline import CLASSES
from sedjax.config import validate
from sedjax.data import dataset, event_files, split_roles, synthetic

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
    # with the public evaluation set, sedjax's roles: it is the test
    assert split_roles.describe("auto", split_roles.SEDJAX, 0.1) in proc.stdout.splitlines()
    log = (tmp_path / "w" / dataset.ERROR_LOG).read_text()
    assert missing in log and "Yextra_broken.wav" in log and "README.txt" not in log
    results = json.loads((tmp_path / "w/results.json").read_text())
    assert results["test"]["threshold_independent"]["num_files"] == 8
    assert results["split_sources"] == {"validation": "metadata/validation/validation.tsv",
                                        "test": "metadata/eval/public.tsv"}
    assert results["validation"]["threshold_independent"]["num_files"] == 8  # stereo clip read
    # the 44.1 kHz clips were converted once to 16 kHz copies, which the features read: as
    # DESED_task's resample_folder.py writes them (data.resample_copy 'desed_task': 16-bit, the
    # channels kept; the features mix them down)
    cache = tmp_path / "w/audio_16000_desed_task"
    copies = sorted(cache.glob("*/*.wav"))
    assert len(copies) == 7 + 8 + 8 + 8 + 8  # the missing and the broken clip have none
    for p, channels in ((copies[0], 1), (cache / "validation" / faulty_root[2], 2)):
        info = soundfile.info(p)
        assert (info.samplerate, info.channels, info.subtype) == (16000, channels, "PCM_16")
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


# ---- a DESED folder as DESED_task's download leaves it: no public evaluation set ------------
def test_split_roles_follow_the_folder(tmp_path):
    full = _generate(tmp_path / "full", num_synth_validation=3)
    no_public = _generate(tmp_path / "no_public", num_test=0, num_synth_validation=3)
    neither = _generate(tmp_path / "neither", num_test=0)
    resolve = split_roles.resolve
    assert resolve("auto", full, "desed") == resolve("sedjax", full, "desed") == "sedjax"
    assert resolve("desed_task", full, "desed") == "desed_task"
    assert resolve("auto", no_public, "desed") == "desed_task"
    with pytest.raises(split_roles.RolesError, match="public.tsv: not found"):
        resolve("sedjax", no_public, "desed")
    synth_val = str(neither / split_roles.SYNTH_VALIDATION[0])
    with pytest.raises(split_roles.RolesError) as info:
        resolve("auto", neither, "desed")
    assert str(info.value).startswith(f"{synth_val}: not found; no metadata/eval/public.tsv")
    assert resolve("auto", neither, "dcase2018") == "sedjax"  # one protocol there
    with pytest.raises(split_roles.RolesError, match="DESED-layout"):
        resolve("desed_task", full, "dcase2018")
    with pytest.raises(split_roles.RolesError, match="unknown value 'bogus'"):
        resolve("bogus", full, "desed")


def test_reader_under_desed_tasks_roles(tmp_path):
    root = _generate(tmp_path / "d", num_test=0, num_synth_validation=5, num_validation=6)
    splits = dataset.load_dataset(root, CLASSES, tmp_path / "w", use_strong=True,
                                  layout="desed", sample_rate=16000, roles="auto")
    assert list(splits) == ["weak", "unlabel_in_domain", "synthetic", "validation", "test"]
    assert split_roles.in_use(splits) == "desed_task"
    validation, test = splits["validation"], splits["test"]
    # choices on the synthetic validation set, every clip of its durations file (quiet ones too)
    assert validation.source == split_roles.SYNTH_VALIDATION[0]
    assert sorted(validation.filenames) == sorted(event_files.read_durations(
        root / split_roles.SYNTH_VALIDATION_DURATIONS))
    assert validation.paths[0].parent == root / split_roles.SYNTH_VALIDATION[1]
    # the test is DESED's validation split, with its events
    assert test.source == "metadata/validation/validation.tsv" and len(test) == 6
    assert test.paths[0].parent == root / "audio/validation/validation"
    reference = event_files.read_events(root / "metadata/validation/validation.tsv", CLASSES)[0]
    assert sorted((e["filename"], e["onset"], e["offset"], e["event_label"])
                  for e in test.reference_events()) == sorted(
        (e["filename"], e["onset"], e["offset"], e["event_label"]) for e in reference)
    # sedjax's roles on a folder with the public set: as before
    full = _generate(tmp_path / "full", num_synth_validation=5)
    splits = dataset.load_dataset(full, CLASSES, tmp_path / "w2", layout="desed", roles="auto")
    assert splits["validation"].source == "metadata/validation/validation.tsv"
    assert splits["test"].source == "metadata/eval/public.tsv"
    assert split_roles.in_use(splits) == "sedjax"


def test_held_out_weak_rows_are_desed_tasks():
    pd = pytest.importorskip("pandas")
    for n, seed in ((10, 42), (1578, 42), (7, 3)):
        train, held = split_roles.weak_rows(n, 0.1, seed)
        frame = pd.DataFrame({"filename": [f"{i}.wav" for i in range(n)]})
        kept = frame.sample(frac=0.9, random_state=seed)  # DESED_task's train_sed.py
        assert train.tolist() == sorted(kept.index)
        assert held.tolist() == sorted(frame.drop(kept.index).index)
    assert len(split_roles.weak_rows(1578, 0.1, 42)[1]) == 158  # DESED's 1578 weak clips
    assert len(split_roles.weak_rows(10, 0.0, 0)[1]) == 0


def test_split_roles_config_is_checked():
    c = tiny_desed.get_config()
    validate.validate(c)
    for field, value, message in (
            ("split_roles", "public", "data.split_roles: unknown value 'public'"),
            ("weak_held_out", 1.0, "data.weak_held_out: expected a share in [0, 1)")):
        bad = tiny_desed.get_config()
        bad.data[field] = value
        with pytest.raises(validate.ConfigError, match=re.escape(message)):
            validate.validate(bad)
    bad = tiny_desed.get_config()
    bad.data.synthetic.layout = "dcase2018"
    bad.data.split_roles = "desed_task"
    with pytest.raises(validate.ConfigError, match="'desed_task' needs a DESED-layout"):
        validate.validate(bad)


def test_folder_without_public_evaluation_set_runs_with_desed_tasks_roles(tmp_path):
    root = _generate(tmp_path / "d", num_weak=10, num_unlabeled=8, num_strong=8,
                     num_validation=8, num_test=0, num_synth_validation=8)
    proc = _main(root, tmp_path / "w")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    line = ("splits: choices on synthetic21_validation (+10 % of weak held out), test = "
            "validation (no metadata/eval/public.tsv: DESED_task's roles)")
    assert proc.stdout.splitlines()[0] == line  # said once, before anything else
    assert proc.stdout.count("splits: ") == 1
    # 1 of the 10 weak clips held out of training (round(0.9 * 10) = 9 train), none strong
    assert "1 weak and 0 strong clips held out (DESED_task's roles" in proc.stderr
    results = json.loads((tmp_path / "w/results.json").read_text())
    assert results["split_sources"] == {
        "validation": "metadata/validation/synthetic21_validation/soundscapes.tsv",
        "test": "metadata/validation/validation.tsv"}
    assert results["test"]["threshold_independent"]["num_files"] == 8
    tested = {line.split("\t")[0] for line in
              (tmp_path / "w/predictions/test_events.csv").read_text().splitlines()[1:]}
    validation = set(event_files.read_durations(root / dataset.DURATIONS["validation"]))
    assert tested and tested <= validation
    chosen_on = {line.split("\t")[0] for line in (tmp_path / "w/predictions/validation_events.csv")
                 .read_text().splitlines()[1:]}
    assert chosen_on and not chosen_on & validation  # the synthetic validation clips


def test_folder_without_the_split_its_roles_need_stops_with_one_line(tmp_path):
    root = _generate(tmp_path / "d", num_test=0)  # neither public eval nor synthetic21_validation
    proc = _main(root, tmp_path / "w")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {root / split_roles.SYNTH_VALIDATION[0]}: not found; no "
                           f"metadata/eval/public.tsv"), last


def test_checkpoint_is_chosen_by_validation_psds1(tmp_path):
    """The DESED configs keep the epoch of the best validation PSDS1 (mean_teacher.
    checkpoint_metric): the kept score is the PSDS1 the run then reports for validation."""
    root = _generate(tmp_path / "d", num_weak=8, num_unlabeled=8, num_strong=8,
                     num_validation=8, num_test=4)
    proc = _main(root, tmp_path / "w", "--config.mean_teacher.num_epochs=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "w/results.json").read_text())
    kept = results["mean_teacher"]["best_score"]
    reported = results["validation"]["threshold_independent"]["psds1"] or 0.0  # None: no class
    assert kept == pytest.approx(reported, abs=1e-9)
    # and not the event F1 the seed's recipe picks by
    assert tiny_desed.get_config().mean_teacher.checkpoint_metric == "psds1"
