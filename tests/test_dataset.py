"""DCASE-layout reader on hand-written fixtures, including every kind of bad input."""

import logging
import pathlib

import numpy as np
import pytest

from configs.baseline import CLASSES
from sedjax.data import dataset

WEAK = "filename\tevent_labels\na.wav\tDog,Speech\nb.wav\t\nc.wav\tBlender\n"
UNL = "filename\nu1.wav\nu2.wav\n"
TEST = ("filename\tonset\toffset\tevent_label\n"
        "t1.wav\t0.5\t1.25\tDog\n"
        "t1.wav\t3.0\t9.5\tVacuum_cleaner\n"
        "t2.wav\t\t\t\n"
        "t3.wav\t0.0\t10.0\tFrying\n")
SYN = ("filename\tonset\toffset\tevent_label\n"  # the DCASE2019 strong training split
       "s1.wav\t0.5\t1.0\tCat\n"
       "s1.wav\t2.0\t3.3\tSpeech\n"
       "s2.wav\t\t\t\n"
       "s3.wav\t9.5\t10.0\tDishes\n")


def make_root(tmp_path: pathlib.Path, weak=WEAK, unl=UNL, test=TEST, eval_=None, synthetic=None,
              missing=(), validation=None) -> pathlib.Path:
    root = tmp_path / "dcase"
    files = {"weak": weak, "unlabel_in_domain": unl, "synthetic": synthetic, "test": test,
             "eval": eval_, "validation": validation}
    for split, text in files.items():
        if text is None:
            continue
        meta, audio, _ = dataset.SPLITS[split]
        (root / meta).parent.mkdir(parents=True, exist_ok=True)
        (root / meta).write_text(text)
        (root / audio).mkdir(parents=True, exist_ok=True)
        for line in text.splitlines()[1:]:
            name = line.split("\t")[0]
            if name and name not in missing:
                (root / audio / name).write_bytes(b"")
    return root


def test_reads_all_splits_and_encodes_labels(tmp_path):
    splits = dataset.load_dataset(make_root(tmp_path), CLASSES, tmp_path / "work")
    assert set(splits) == {"weak", "unlabel_in_domain", "test"}  # no eval.csv: skipped
    weak = splits["weak"]
    assert weak.filenames == ["a.wav", "b.wav", "c.wav"]
    expected = np.zeros((3, 10), np.float32)
    expected[0, [CLASSES.index("Dog"), CLASSES.index("Speech")]] = 1
    expected[2, CLASSES.index("Blender")] = 1
    np.testing.assert_array_equal(weak.weak, expected)
    assert splits["unlabel_in_domain"].filenames == ["u1.wav", "u2.wav"]
    test = splits["test"]
    assert test.filenames == ["t1.wav", "t2.wav", "t3.wav"]
    assert test.events[0] == [(0.5, 1.25, "Dog"), (3.0, 9.5, "Vacuum_cleaner")]
    assert test.events[1] == []
    strong = dataset.strong_labels(test.events, CLASSES, 500, 0.02)
    dog = strong[0, :, CLASSES.index("Dog")]
    assert dog[25:62].all() and dog.sum() == 37 and not dog[24] and not dog[62]
    assert strong[1].sum() == 0
    assert strong[2, :, CLASSES.index("Frying")].all()
    assert test.weak[0, CLASSES.index("Vacuum_cleaner")] == 1


def test_eval_split_read_when_present(tmp_path):
    root = make_root(tmp_path, eval_=TEST.replace("t1", "e1").replace("t2", "e2")
                     .replace("t3", "e3"))
    splits = dataset.load_dataset(root, CLASSES, tmp_path / "w")
    assert splits["eval"].filenames == ["e1.wav", "e2.wav", "e3.wav"]
    assert "eval" not in dataset.load_dataset(root, CLASSES, tmp_path / "w", use_eval=False)


def test_strong_split_read_when_asked_and_present(tmp_path):
    root = make_root(tmp_path, synthetic=SYN,
                     eval_=TEST.replace("t1", "e1").replace("t2", "e2").replace("t3", "e3"))
    assert list(dataset.load_dataset(root, CLASSES, tmp_path / "w")) == [
        "weak", "unlabel_in_domain", "test", "eval"]  # use_strong defaults to False
    splits = dataset.load_dataset(root, CLASSES, tmp_path / "w", use_strong=True)
    assert list(splits) == ["weak", "unlabel_in_domain", "synthetic", "test", "eval"]
    syn = splits["synthetic"]
    assert syn.filenames == ["s1.wav", "s2.wav", "s3.wav"]
    assert syn.paths == [root / "audio/train/synthetic" / n for n in syn.filenames]
    assert syn.events == [[(0.5, 1.0, "Cat"), (2.0, 3.3, "Speech")], [], [(9.5, 10.0, "Dishes")]]
    expected = np.zeros((3, 10), np.float32)
    expected[0, [CLASSES.index("Cat"), CLASSES.index("Speech")]] = 1
    expected[2, CLASSES.index("Dishes")] = 1
    np.testing.assert_array_equal(syn.weak, expected)
    frames = dataset.strong_labels(syn.events, CLASSES, 125, 0.08)
    assert np.flatnonzero(frames[0, :, CLASSES.index("Cat")]).tolist() == list(range(6, 12))
    assert np.flatnonzero(frames[0, :, CLASSES.index("Speech")]).tolist() == list(range(25, 41))
    assert not frames[1].any()
    assert np.flatnonzero(frames[2, :, CLASSES.index("Dishes")]).tolist() == list(range(119, 125))
    no_eval = dataset.load_dataset(root, CLASSES, tmp_path / "w", use_eval=False, use_strong=True)
    assert list(no_eval) == ["weak", "unlabel_in_domain", "synthetic", "test"]


def test_strong_split_absent_goes_on_without_it(tmp_path, caplog):
    root = make_root(tmp_path)  # the DCASE2018 layout: no metadata/train/synthetic.csv
    with caplog.at_level(logging.INFO):
        splits = dataset.load_dataset(root, CLASSES, tmp_path / "w", use_strong=True)
    assert list(splits) == ["weak", "unlabel_in_domain", "test"]
    said = [r.getMessage() for r in caplog.records if "synthetic.csv" in r.getMessage()]
    assert len(said) == 1 and caplog.records[[r.getMessage() for r in caplog.records].index(
        said[0])].levelno == logging.INFO
    assert not (tmp_path / "w" / dataset.ERROR_LOG).exists()


def test_strong_split_missing_audio_is_logged_and_skipped(tmp_path):
    root = make_root(tmp_path, synthetic=SYN, missing=("s1.wav",))
    splits = dataset.load_dataset(root, CLASSES, tmp_path / "w", use_strong=True)
    assert splits["synthetic"].filenames == ["s2.wav", "s3.wav"]
    assert splits["synthetic"].events == [[], [(9.5, 10.0, "Dishes")]]  # events stay aligned
    log = (tmp_path / "w" / dataset.ERROR_LOG).read_text().splitlines()
    assert [line.split("\t")[:2] for line in log[1:]] == [["s1.wav", "synthetic"]]


def _frames(events, num_frames, frame_seconds, label="Dog"):
    out = dataset.strong_labels([events], CLASSES, num_frames, frame_seconds)
    assert out.dtype == np.float32 and out.shape == (1, num_frames, 10)
    assert out[0, :, [i for i, c in enumerate(CLASSES) if c != label]].sum() == 0
    return np.flatnonzero(out[0, :, CLASSES.index(label)]).tolist()


def test_strong_labels_frames_at_20_ms():
    # frame i covers [0.02 i, 0.02 (i + 1)); active when the event covers >= half of it
    assert _frames([(0.5, 1.25, "Dog")], 500, 0.02) == list(range(25, 62))  # 62.5: half, to even
    assert _frames([(0.013, 0.5, "Dog")], 500, 0.02) == list(range(1, 25))  # 0.65 -> from 1
    assert _frames([(0.011, 0.049, "Dog")], 500, 0.02) == [1]  # 0.55 .. 2.45
    assert _frames([(0.5, 0.504, "Dog")], 500, 0.02) == [25]  # shorter than a frame: one frame
    assert _frames([(0.0, 10.0, "Dog")], 500, 0.02) == list(range(500))
    assert _frames([(0.0, 0.3, "Dog"), (0.2, 0.5, "Dog")], 500, 0.02) == list(range(25))


def test_strong_labels_frames_at_80_ms():
    # 0.5 / 0.08 = 6.25 -> 6; 1.0 / 0.08 = 12.5 -> 12: frames 6..11
    assert _frames([(0.5, 1.0, "Dog")], 125, 0.08) == list(range(6, 12))
    assert _frames([(2.0, 3.3, "Dog")], 125, 0.08) == list(range(25, 41))  # 41.25 -> 41
    assert _frames([(0.03, 0.13, "Dog")], 125, 0.08) == [0, 1]  # 0.375 .. 1.625: 50 ms of each
    assert _frames([(0.05, 0.13, "Dog")], 125, 0.08) == [1]  # 0.625 .. 1.625: 30 ms of frame 0


def test_strong_labels_clip_events_past_the_end():
    assert _frames([(9.5, 12.0, "Dog")], 125, 0.08) == list(range(119, 125))  # cut at frame 124
    assert _frames([(9.7, 10.0, "Dog")], 500, 0.02) == list(range(485, 500))
    assert _frames([(10.5, 11.0, "Dog")], 125, 0.08) == []  # wholly past the end: no frame
    assert _frames([(9.99, 10.3, "Dog")], 125, 0.08) == []  # covers < half of the last frame
    assert _frames([(9.95, 10.3, "Dog")], 125, 0.08) == [124]
    assert _frames([(-0.1, 0.2, "Dog")], 125, 0.08) == [0, 1]  # before the start: cut, no wrap
    empty = dataset.strong_labels([[], []], CLASSES, 7, 0.02)
    assert empty.shape == (2, 7, 10) and empty.dtype == np.float32 and not empty.any()


def test_missing_audio_is_logged_and_skipped(tmp_path, caplog):
    root = make_root(tmp_path, missing=("b.wav", "u2.wav", "t3.wav"))
    work = tmp_path / "work"
    splits = dataset.load_dataset(root, CLASSES, work)
    assert splits["weak"].filenames == ["a.wav", "c.wav"]
    assert splits["weak"].weak.shape == (2, 10)
    assert splits["weak"].weak[1, CLASSES.index("Blender")] == 1  # labels stay aligned
    assert splits["unlabel_in_domain"].filenames == ["u1.wav"]
    assert len(splits["test"].events) == 2
    log = (work / dataset.ERROR_LOG).read_text().splitlines()
    assert log[0] == "filename\tsplit\terror"
    assert [line.split("\t")[:2] for line in log[1:]] == [
        ["b.wav", "weak"], ["u2.wav", "unlabel_in_domain"], ["t3.wav", "test"]]
    # a rerun rewrites the log instead of appending duplicates
    dataset.load_dataset(root, CLASSES, work)
    assert len((work / dataset.ERROR_LOG).read_text().splitlines()) == 4


@pytest.mark.parametrize("split,text,message", [
    ("weak", "filename\tevent_labels\na.wav\tDog,Hamster\n", "weak.csv:2: unknown event label"),
    ("weak", "filename\tlabels\na.wav\tDog\n", "weak.csv:1: expected header"),
    ("weak", "filename\tevent_labels\na.wav\tDog\textra\n", "weak.csv:2: expected 2"),
    ("weak", "filename\tevent_labels\n", "weak.csv: split 'weak' lists no clips"),
    ("test", "filename\tonset\toffset\tevent_label\nt.wav\t1.0\tabc\tDog\n",
     "test.csv:2: onset/offset must be numbers"),
    ("test", "filename\tonset\toffset\tevent_label\nt.wav\t1.0\t2.0\tDog\nt.wav\t5\t2\tCat\n",
     "test.csv:3: need 0 <= onset <= offset"),
    ("test", "filename\tonset\toffset\tevent_label\nt.wav\t1.0\t2.0\n",
     "test.csv:2: expected 4"),
    ("test", "filename\tonset\toffset\tevent_label\nt.wav\t1.0\t2.0\tdog\n",
     "test.csv:2: unknown event label 'dog'"),
    ("unlabel_in_domain", "filename\na.wav\tDog\n", "unlabel_in_domain.csv:2: expected 1"),
    ("unlabel_in_domain", "", "unlabel_in_domain.csv:1: expected header"),
])
def test_bad_input_names_file_and_line(tmp_path, split, text, message):
    kwargs = {"weak": WEAK, "unl": UNL, "test": TEST}
    kwargs[{"unlabel_in_domain": "unl"}.get(split, split)] = text
    root = make_root(tmp_path, **kwargs)
    with pytest.raises(dataset.DatasetError, match=message.replace(".", r"\.")
                       .replace("(", r"\(").replace(")", r"\)")):
        dataset.load_dataset(root, CLASSES, tmp_path / "w")


def test_all_audio_missing_is_an_error(tmp_path):
    root = make_root(tmp_path, missing=("u1.wav", "u2.wav"))
    with pytest.raises(dataset.DatasetError, match="none of the 2 audio files"):
        dataset.load_dataset(root, CLASSES, tmp_path / "w")


def test_missing_metadata_file_of_a_needed_split_is_one_error_naming_it(tmp_path):
    for split in ("weak", "test"):
        root = make_root(tmp_path / split)
        (root / dataset.SPLITS[split][0]).unlink()  # was: a traceback joining no part
        with pytest.raises(dataset.DatasetError,
                           match=f"{root / dataset.SPLITS[split][0]}: metadata file of split "
                                 f"'{split}' not found"):
            dataset.load_dataset(root, CLASSES, tmp_path / "w")


def test_missing_root_says_how_to_get_data(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        dataset.load_dataset(tmp_path / "nowhere", CLASSES, tmp_path / "w")
    text = str(err.value)
    assert str(tmp_path / "nowhere") in text
    assert "configs/demo.py" in text and "dcase2018_baseline" in text


# DESED's validation.tsv lists events only; a clip without any is only in the durations file
VAL = ("filename\tonset\toffset\tevent_label\n"
       "v1.wav\t0.5\t1.0\tCat\n"
       "v1.wav\t2.0\t3.3\tSpeech\n"
       "v3.wav\t9.5\t10.0\tDishes\n")
VAL_DURATIONS = "filename\tduration\nv1.wav\t10.0\nv2.wav\t10.0\nv3.wav\t10.0\n"


def test_validation_split_read_with_its_quiet_clips_from_the_durations_file(tmp_path):
    root = make_root(tmp_path, validation=VAL)
    (root / "audio/validation/v2.wav").write_bytes(b"")
    splits = dataset.load_dataset(root, CLASSES, tmp_path / "w")
    assert list(splits) == ["weak", "unlabel_in_domain", "validation", "test"]
    assert splits["validation"].filenames == ["v1.wav", "v3.wav"]  # no durations file yet
    (root / dataset.DURATIONS["validation"]).write_text(VAL_DURATIONS)
    val = dataset.load_dataset(root, CLASSES, tmp_path / "w")["validation"]
    assert val.filenames == ["v1.wav", "v3.wav", "v2.wav"]
    assert val.events == [[(0.5, 1.0, "Cat"), (2.0, 3.3, "Speech")], [(9.5, 10.0, "Dishes")], []]
    assert val.weak[2].sum() == 0 and val.weak[1, CLASSES.index("Dishes")] == 1
    assert "validation" not in dataset.load_dataset(root, CLASSES, tmp_path / "w",
                                                    use_validation=False)


def test_bad_durations_file_names_its_line(tmp_path):
    root = make_root(tmp_path, validation=VAL)
    (root / dataset.DURATIONS["validation"]).write_text("filename\tduration\nv1.wav\tten\n")
    with pytest.raises(dataset.DatasetError, match=r"validation_durations.tsv:2: duration"):
        dataset.load_dataset(root, CLASSES, tmp_path / "w")
