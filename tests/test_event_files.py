"""sedjax.data.event_files: DCASE event, weak-label, filename and durations files, read and
written; every error names the file and the line."""

import re

import pytest

from sedjax.data import event_files
from sedjax.system import cli

EVENTS_HEADER = "filename\tonset\toffset\tevent_label\n"


def at(path, line=None) -> str:
    """A regex matching the start of an error about `path` (and `line`)."""
    return "^" + re.escape(str(path) if line is None else f"{path}:{line}")


def write(tmp_path, text, name="f.tsv", encoding="utf-8"):
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


def test_events_round_trip_with_empty_clips(tmp_path):
    events = [
        {"filename": "a.wav", "onset": 0.5, "offset": 2.25, "event_label": "Cat"},
        {"filename": "a.wav", "onset": 0.1, "offset": 9.0, "event_label": "Dog"},
        {"filename": "c.wav", "onset": 1.0, "offset": 1.5, "event_label": "Dog"},
    ]
    path = tmp_path / "out" / "est.csv"
    event_files.write_events(path, events, ["a.wav", "b.wav", "c.wav"])

    lines = path.read_text().splitlines()
    assert lines == ["filename\tonset\toffset\tevent_label", "a.wav\t0.100\t9.000\tDog",
                     "a.wav\t0.500\t2.250\tCat", "b.wav\t\t\t", "c.wav\t1.000\t1.500\tDog"]
    assert not [p for p in path.parent.iterdir() if p.name != "est.csv"]  # no temp file left

    read, filenames = event_files.read_events(path)
    assert filenames == ["a.wav", "b.wav", "c.wav"]

    def key(e):
        return e["filename"], e["onset"], e["event_label"]
    assert sorted(read, key=key) == sorted(events, key=key)


def test_format_with_an_extra_column_and_unlisted_files_last():
    events = [{"filename": "z.wav", "onset": 0.0, "offset": 1.0, "event_label": "Cat",
               "max_probability": 0.5},
              {"filename": "a.wav", "onset": 1.0, "offset": 2.5, "event_label": "Dog",
               "max_probability": 0.91234}]
    text = event_files.format_events(events, ["a.wav", "b.wav"], ("max_probability",))
    assert text == ("filename\tonset\toffset\tevent_label\tmax_probability\n"
                    "a.wav\t1.000\t2.500\tDog\t0.912\n"
                    "b.wav\t\t\t\t\n"
                    "z.wav\t0.000\t1.000\tCat\t0.500\n")


def test_read_dcase_style_file_with_bom_blank_lines_and_bare_filenames(tmp_path):
    path = write(tmp_path, EVENTS_HEADER + "Y1.wav\t0.000\t10.000\tSpeech\n"
                 "Y2.wav\t\t\t\n\n   \nY3.wav\nY1.wav\t3.5\t4\tDog\n", encoding="utf-8-sig")
    events, filenames = event_files.read_events(path)
    assert filenames == ["Y1.wav", "Y2.wav", "Y3.wav"]
    assert events == [
        {"filename": "Y1.wav", "onset": 0.0, "offset": 10.0, "event_label": "Speech"},
        {"filename": "Y1.wav", "onset": 3.5, "offset": 4.0, "event_label": "Dog"}]


@pytest.mark.parametrize("bad_line, message", [
    ("a.wav\t1.0\t2.0", "expected 4 tab-separated fields, got 3"),
    ("a.wav\tsoon\t2.0\tCat", "onset/offset must be numbers, got 'soon', '2.0'"),
    ("a.wav\t3.0\t2.0\tCat", r"need 0 <= onset <= offset \(finite seconds\), got 3.0, 2.0"),
    ("a.wav\t-1\t2.0\tCat", "need 0 <= onset <= offset"),
    ("a.wav\t1.0\tinf\tCat", "need 0 <= onset <= offset"),
    ("a.wav\tnan\t2.0\tCat", "need 0 <= onset <= offset"),
    ("a.wav\t1.0\t\tCat", "onset, offset and event_label must all be set or all empty"),
    ("\t1.0\t2.0\tCat", "empty filename"),
    ("a.wav\t1.0\t2.0\tElephant", "unknown event label 'Elephant'; known labels: Cat, Dog"),
])
def test_malformed_event_rows_name_file_and_line(tmp_path, bad_line, message):
    path = write(tmp_path, EVENTS_HEADER + f"ok.wav\t0\t1\tDog\n\n{bad_line}\n", "bad.csv")
    with pytest.raises(event_files.EventFileError, match=rf"{at(path, 4)}: {message}"):
        event_files.read_events(path, classes=["Cat", "Dog"])


def test_labels_are_only_checked_against_classes_when_given(tmp_path):
    path = write(tmp_path, EVENTS_HEADER + "a.wav\t1\t2\tElephant\n")
    assert event_files.read_events(path)[0][0]["event_label"] == "Elephant"


@pytest.mark.parametrize("text, found", [
    ("a.wav\t0\t1\tDog\n", "found 'a.wav\\t0\\t1\\tDog'"),
    ("", "found an empty file"),
    ("filename\tonset\toffset\n", "found 'filename\\tonset\\toffset'"),
])
def test_a_wrong_header_is_an_error_on_line_1(tmp_path, text, found):
    path = write(tmp_path, text, "noheader.csv")
    with pytest.raises(ValueError) as err:
        event_files.read_events(path)
    assert str(err.value) == (f"{path}:1: expected header columns 'filename', 'onset', "
                              f"'offset', 'event_label' (tab-separated), {found}")


def test_a_missing_or_undecodable_file_is_a_user_error_naming_it(tmp_path):
    missing = tmp_path / "missing.tsv"
    with pytest.raises(cli.UserError, match=rf"{at(missing)}: no such file$"):
        event_files.read_durations(missing)
    binary = tmp_path / "binary.tsv"
    binary.write_bytes(b"filename\n\xff\xfe\xfa")
    with pytest.raises(event_files.EventFileError, match=rf"{at(binary)}: cannot read"):
        event_files.read_filenames(binary)


def test_weak_labels(tmp_path):
    path = write(tmp_path, "filename\tevent_labels\na.wav\tDog, Cat\nb.wav\t\nc.wav\n")
    assert event_files.read_weak(path, ["Cat", "Dog"]) == (
        ["a.wav", "b.wav", "c.wav"], [["Dog", "Cat"], [], []])
    bad = write(tmp_path, "filename\tevent_labels\na.wav\tDog\nb.wav\tDog,Hamster\n", "weak.tsv")
    with pytest.raises(event_files.EventFileError,
                       match=rf"{at(bad, 3)}: unknown event label 'Hamster'"):
        event_files.read_weak(bad, ["Cat", "Dog"])
    extra = write(tmp_path, "filename\tevent_labels\na.wav\tDog\tmore\n", "extra.tsv")
    with pytest.raises(event_files.EventFileError,
                       match=rf"{at(extra, 2)}: expected 2 tab-separated fields, got 3"):
        event_files.read_weak(extra)


def test_filenames(tmp_path):
    path = write(tmp_path, "filename\na.wav\n b.wav \n")
    assert event_files.read_filenames(path) == ["a.wav", "b.wav"]
    bad = write(tmp_path, "filename\na.wav\tDog\n", "unl.tsv")
    with pytest.raises(event_files.EventFileError,
                       match=rf"{at(bad, 2)}: expected 1 tab-separated field, got 2"):
        event_files.read_filenames(bad)


@pytest.mark.parametrize("value", ["ten", "-1", "nan", ""])
def test_durations(tmp_path, value):
    path = write(tmp_path, "filename\tduration\na.wav\t10.0\nb.wav\t9.5\n")
    assert event_files.read_durations(path) == {"a.wav": 10.0, "b.wav": 9.5}
    bad = write(tmp_path, f"filename\tduration\na.wav\t10.0\nb.wav\t{value}\n", "d.tsv")
    with pytest.raises(event_files.EventFileError,
                       match=rf"{at(bad, 3)}: duration must be a number of seconds, got "
                             rf"'{value}'"):
        event_files.read_durations(bad)
