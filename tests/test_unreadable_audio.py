"""Unreadable audio (corrupt, empty, truncated) is skipped and logged; odd formats are read;
process shares of the feature cache give what one process gives."""

import csv
import pathlib
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile

from configs import tiny
from sedjax.data import prepare
from sedjax.data import audio, dataset, features, pipeline
from sedjax.system import files, sharding

ROOT = pathlib.Path(__file__).parents[1]
SR = 44100


def quantized(seconds: float, sr: int, seed: int, channels: int = 1, levels: int = 32768
              ) -> np.ndarray:
    """A noisy tone on the grid of `levels` steps, so a PCM file holds exactly these values."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t)[:, None] + 0.05 * rng.standard_normal((n, channels))
    x = np.round(x * levels) / levels
    return (x[:, 0] if channels == 1 else x).astype(np.float32)


# name -> (signal, rate, subtype) of every clip that must be read
GOOD = {
    "mono.wav": (quantized(1, SR, 0), SR, "PCM_16"),
    "stereo.wav": (quantized(1, SR, 1, channels=2), SR, "PCM_16"),
    "rate48k.wav": (quantized(1, 48000, 2), 48000, "PCM_16"),
    "pcm8.wav": (quantized(1, SR, 3, levels=128), SR, "PCM_U8"),
    "float.wav": (quantized(1, SR, 4) * 1.5, SR, "FLOAT"),  # float may pass full scale
    "three_s.wav": (quantized(3, SR, 5), SR, "PCM_16"),
    "thirty_s.wav": (quantized(30, SR, 6), SR, "PCM_16"),
}
# name -> start of the reason the log gives
BAD = {
    "corrupt.wav": "cannot decode: ",
    "zero_bytes.wav": "empty: 0 bytes",
    "zero_samples.wav": "empty: 0 samples",
    "truncated.wav": "truncated: header says 88200 samples, file holds ",
}
# bad and good clips interleaved, so that each process share holds some of both
ORDER = ["corrupt.wav", "mono.wav", "stereo.wav", "zero_bytes.wav", "rate48k.wav", "pcm8.wav",
         "zero_samples.wav", "float.wav", "three_s.wav", "truncated.wav", "thirty_s.wav"]


def write_clip(path: pathlib.Path, name: str) -> None:
    """Writes clip `name` of GOOD or BAD to `path`."""
    if name in GOOD:
        y, sr, subtype = GOOD[name]
        soundfile.write(path, y, sr, subtype=subtype)
    elif name == "corrupt.wav":
        path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)))
    elif name == "zero_bytes.wav":
        path.write_bytes(b"")
    elif name == "zero_samples.wav":
        soundfile.write(path, np.zeros(0, np.float32), SR, subtype="PCM_16")
    elif name == "truncated.wav":  # a download cut short: the header still declares 2 s
        soundfile.write(path, quantized(2, SR, 7), SR, subtype="PCM_16")
        path.write_bytes(path.read_bytes()[: 44 + 2 * SR // 2])
    else:
        raise KeyError(name)


@pytest.fixture
def cfg():
    c = tiny.get_config().features
    c.frontend, c.batch_size, c.num_workers = "jax", 4, 2
    return c


@pytest.fixture
def clips(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    for name in ORDER:
        write_clip(folder / name, name)
    return [folder / name for name in ORDER]


def test_read_audio_gives_each_bad_file_its_reason(clips):
    for path in clips:
        if path.name in GOOD:
            y, sr = audio.read_audio(path)
            np.testing.assert_array_equal(y, GOOD[path.name][0])
            assert sr == GOOD[path.name][1]
        else:
            with pytest.raises(audio.AudioError) as err:
                audio.read_audio(path)
            assert err.value.reason.startswith(BAD[path.name]), (path.name, err.value.reason)
            assert path.name in str(err.value) and str(path.parent) not in err.value.reason


def test_a_whole_wav_with_a_streamed_header_is_not_truncated(tmp_path):
    """Writers that stream (ffmpeg to a pipe) leave the data size 0xFFFFFFFF: no length known."""
    path = tmp_path / "streamed.wav"
    soundfile.write(path, GOOD["mono.wav"][0], SR, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[40:44] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    y, _ = audio.read_audio(path)
    assert len(y) == SR


def test_extract_split_zeroes_and_names_the_bad_rows_and_reads_the_odd_formats(
        tmp_path, cfg, clips):
    feats, frames, errors = features.extract_split("weak", clips, ORDER, cfg, tmp_path / "c")
    assert {ORDER[i]: reason.split(":")[0] for i, reason in errors.items()} == {
        name: prefix.split(":")[0] for name, prefix in BAD.items()}
    for i, name in enumerate(ORDER):
        if name in BAD:
            assert errors[i].startswith(BAD[name]) and frames[i] == 0 and not feats[i].any()
            continue
        y, sr, _ = GOOD[name]  # mono mix, resampled, cut or padded: as log_mel does it
        np.testing.assert_allclose(feats[i], features.log_mel(y, sr, cfg), atol=1e-4, rtol=0)
        assert frames[i] == min(500, 1 + len(y) * SR // sr // 882), name
    assert frames[ORDER.index("three_s.wav")] == 151 and frames[ORDER.index("thirty_s.wav")] == 500
    # a resumed run reuses the cache and skips the same clips
    cached = {p: p.stat().st_mtime_ns for p in (tmp_path / "c").iterdir()}
    assert len(cached) == 3 and not list((tmp_path / "c").glob("*.partial"))
    again, frames_again, errors_again = features.extract_split("weak", clips, ORDER, cfg,
                                                               tmp_path / "c")
    assert errors_again == errors and {p: p.stat().st_mtime_ns for p in cached} == cached
    np.testing.assert_array_equal(again, feats)
    np.testing.assert_array_equal(frames_again, frames)


def test_the_librosa_frontend_skips_the_same_clips(tmp_path, cfg, clips):
    cfg.frontend = "librosa"
    chosen = [clips[ORDER.index(n)] for n in ("corrupt.wav", "stereo.wav", "truncated.wav")]
    feats, frames, errors = features.extract_split("weak", chosen, [p.name for p in chosen],
                                                   cfg, tmp_path / "c")
    assert sorted(errors) == [0, 2] and errors[2].startswith(BAD["truncated.wav"])
    assert not feats[0].any() and not feats[2].any() and list(frames) == [0, 51, 0]
    y, sr, _ = GOOD["stereo.wav"]
    np.testing.assert_allclose(feats[1], features.log_mel(y, sr, cfg), atol=1e-4, rtol=0)


def test_a_cache_written_before_errors_were_recorded_is_reused(tmp_path, cfg, clips):
    good = [p for p in clips if p.name in GOOD][:2]
    names = [p.name for p in good]
    feats, _, _ = features.extract_split("weak", good, names, cfg, tmp_path / "c")
    (sidecar,) = (tmp_path / "c").glob("*.errors.json")
    sidecar.unlink()
    again, _, errors = features.extract_split("weak", good, names, cfg, tmp_path / "c")
    assert errors == {} and not list((tmp_path / "c").glob("*.errors.json"))
    np.testing.assert_array_equal(again, feats)


def test_process_shares_give_what_one_process_gives_each_file_written_once(
        tmp_path, cfg, clips, monkeypatch):
    one, one_frames, one_errors = features.extract_split("weak", clips, ORDER, cfg,
                                                         tmp_path / "one")
    barrier = threading.Barrier(2, timeout=300)
    monkeypatch.setattr(sharding, "sync", lambda name: barrier.wait())  # two "processes"
    writes = []
    real_atomic_path = files.atomic_path

    def recording_atomic_path(path):
        writes.append((threading.current_thread().name, pathlib.Path(path).name))
        return real_atomic_path(path)

    monkeypatch.setattr(files, "atomic_path", recording_atomic_path)
    results, failures = {}, []

    def process(index):
        try:
            results[index] = features.extract_split("weak", clips, ORDER, cfg, tmp_path / "two",
                                                    process_index=index, process_count=2)
        except BaseException as e:  # reported by the test thread
            failures.append(e)
            barrier.abort()

    threads = [threading.Thread(target=process, args=(k,), name=f"process{k}") for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    names = [name for _, name in writes]
    assert len(names) == len(set(names)) == 6  # 2 shares x (features, frames, errors)
    for writer, name in writes:  # rows 0-5 by process 0, rows 5-11 by process 1
        assert (".rows0-5." in name) == (writer == "process0"), (writer, name)
    assert {p.name for p in (tmp_path / "two").iterdir()} == set(names)
    for feats, frames, errors in results.values():
        assert errors == one_errors and len(feats) == len(ORDER)
        np.testing.assert_array_equal(frames, one_frames)
        np.testing.assert_array_equal(feats[np.arange(len(ORDER))], one)
        np.testing.assert_array_equal(feats[3:7], feats[np.arange(3, 7)])  # slices, rows
        np.testing.assert_array_equal(feats[-1], feats[np.array([10])][0])


def test_the_shares_of_a_missing_process_are_a_clear_error(tmp_path, cfg, clips):
    with pytest.raises(FileNotFoundError, match="rows5-11.npy: feature share not found"):
        features.extract_split("weak", clips, ORDER, cfg, tmp_path / "c", process_index=0,
                               process_count=2)


def test_row_subset_reads_chosen_rows_without_a_copy(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(24, dtype=np.float32).reshape(6, 2, 2))
    base = np.load(path, mmap_mode="r")
    joined = pipeline.join_rows([base[:2], base[2:]])
    view = pipeline.take_rows(pipeline.take_rows(joined, [0, 2, 3, 5]), [3, 0, 2])
    expected = np.asarray(base)[[5, 0, 3]]
    assert view.shape == (3, 2, 2) and view.nbytes == expected.nbytes
    np.testing.assert_array_equal(np.asarray(view), expected)
    np.testing.assert_array_equal(view[1], expected[1])
    np.testing.assert_array_equal(view[1:], expected[1:])
    np.testing.assert_array_equal(view[np.array([2, 0, 2])], expected[[2, 0, 2]])
    assert view.base is joined.base  # a view of a view reads the memmaps directly


def dcase_folder(root: pathlib.Path, weak: list[str], unlabeled: list[str], test: list[str]
                 ) -> pathlib.Path:
    """A DCASE2018-layout folder holding the named clips of GOOD and BAD (others: missing)."""
    lists = {"weak": ("filename\tevent_labels", [f"{n}\tDog" for n in weak]),
             "unlabel_in_domain": ("filename", unlabeled),
             "test": ("filename\tonset\toffset\tevent_label",
                      [f"{n}\t0.1\t0.5\tDog" for n in test])}
    for split, (header, rows) in lists.items():
        meta, audio, _ = dataset.SPLITS[split]
        (root / meta).parent.mkdir(parents=True, exist_ok=True)
        (root / meta).write_text("\n".join([header, *rows]) + "\n")
        (root / audio).mkdir(parents=True, exist_ok=True)
        for line in rows:
            name = line.split("\t")[0]
            if name in GOOD or name in BAD:
                write_clip(root / audio / name, name)
    return root


def data_config(root: pathlib.Path):
    c = tiny.get_config()
    c.data.dataset, c.data.root, c.data.use_eval = "dcase2018", str(root), False
    c.features.batch_size, c.features.num_workers = 4, 2
    return c


def read_log(workdir: pathlib.Path) -> list[list[str]]:
    with open(workdir / dataset.ERROR_LOG, newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


def test_load_data_drops_the_bad_clips_logs_them_and_keeps_the_good_features(tmp_path):
    config = data_config(dcase_folder(tmp_path / "dcase", ORDER + ["gone.wav"], ["mono.wav"],
                                      ["three_s.wav"]))
    splits, arrays = prepare.load_data(config, tmp_path / "work")
    good = [n for n in ORDER if n in GOOD]
    weak = splits["weak"]
    assert weak.filenames == good and [p.name for p in weak.paths] == good
    assert weak.weak.shape == (len(good), 10) and arrays["weak"].labels.shape == weak.weak.shape
    log = read_log(tmp_path / "work")
    assert log[0] == ["filename", "split", "error"]
    assert [row[:2] for row in log[1:]] == [["gone.wav", "weak"]] + [
        [n, "weak"] for n in ORDER if n in BAD]
    for name, _, reason in log[2:]:
        assert reason.startswith(BAD[name]), (name, reason)
    # the same clips featurized without the bad ones give the same numbers
    alone, alone_frames, errors = features.extract_split(
        "alone", weak.paths, weak.filenames, config.features, tmp_path / "alone")
    assert errors == {} and len(arrays["weak"]) == len(good)
    np.testing.assert_array_equal(arrays["weak"].frames, alone_frames)
    np.testing.assert_array_equal(np.asarray(arrays["weak"].features), alone)
    # normalization statistics read the view like a memmap
    stats = prepare.normalization_stats(config, splits, arrays, tmp_path / "work")
    assert np.isfinite(stats).all()


def test_a_split_with_nothing_readable_is_a_dataset_error(tmp_path):
    root = dcase_folder(tmp_path / "dcase", ["mono.wav"], ["corrupt.wav", "zero_bytes.wav"],
                        ["mono.wav"])
    with pytest.raises(dataset.DatasetError,
                       match=r"audio/train/unlabel_in_domain: none of the 2 audio files of split "
                             r"'unlabel_in_domain' can be read \(e.g. corrupt.wav: cannot "):
        prepare.load_data(data_config(root), tmp_path / "work")
    assert [row[0] for row in read_log(tmp_path / "work")[1:]] == ["corrupt.wav",
                                                                   "zero_bytes.wav"]


def test_only_the_primary_process_writes_the_error_log(tmp_path, monkeypatch):
    root = dcase_folder(tmp_path / "dcase", ["mono.wav", "corrupt.wav", "gone.wav"],
                        ["mono.wav"], ["mono.wav"])
    monkeypatch.setattr(sharding, "is_primary", lambda: False)
    splits, _ = prepare.load_data(data_config(root), tmp_path / "work")
    assert splits["weak"].filenames == ["mono.wav"]
    assert not (tmp_path / "work" / dataset.ERROR_LOG).exists()


def test_a_run_with_a_corrupt_wav_in_the_weak_split_finishes(tmp_path):
    """The new user's try: real-data layout, one corrupt clip, python -m sedjax.main."""
    from sedjax.data import synthetic

    four = ("Alarm_bell_ringing", "Cat", "Dog", "Speech")
    root = synthetic.generate(tmp_path / "dcase", num_weak=20, num_unlabeled=16, num_test=8,
                              seed=3, classes=four, num_workers=1)
    bad = sorted((root / "audio" / "train" / "weak").glob("*.wav"))[5]
    bad.write_bytes(b"<html>429 Too Many Requests</html>")  # what a failed fetch may save
    workdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "sedjax.main", "--config=configs/tiny.py",
           f"--workdir={workdir}", "--config.data.dataset=dcase2018",
           f"--config.data.root={root}", "--config.data.classes=" + repr(four).replace(" ", ""),
           "--config.pass1.num_epochs=1", "--config.features.num_workers=2"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = read_log(workdir)
    assert len(log) == 2 and log[1][:2] == [bad.name, "weak"]
    assert log[1][2].startswith("cannot decode: ")
    assert "weak: 1 of 20 audio files cannot be read" in proc.stderr
    assert (workdir / "results.json").exists()
