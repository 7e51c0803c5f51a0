"""Hostile inputs: every file a user hands sedjax, corrupted the ways real files are.

Each case either runs (what was dropped is logged with the file and the reason) or stops with one
error line that names the file (and line) or the config field, the error type `sedjax.main`
prints as `error: ...` with exit status 2; never another exception (a traceback). A finished stage
of the workdir is never lost or overwritten by a failed run: every file the workdir held before
the case holds the same bytes after it. The cases: named ones (metadata of both layouts, audio,
embeddings, configs, model files) and metadata files mutated byte by byte by hypothesis
(tests/conftest.py's profiles: "sedjax", a dozen cases per file, by default; `pytest
--hypothesis-profile=long` for a deeper search). `pytest -s` prints the count of each outcome.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from typing import Callable

import numpy as np
import pytest
import soundfile

from configs import tiny, tiny_desed
from sedjax import detect, run
from sedjax.data import dataset, embeddings, prepare, synthetic
from sedjax.system import cli

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ROOT = pathlib.Path(__file__).parents[1]

OUTCOMES: collections.Counter = collections.Counter()  # (group, outcome) -> count


@dataclasses.dataclass
class Outcome:
    kind: str  # "ran" or "error"
    message: str = ""


def _snapshot(folder: pathlib.Path) -> dict[str, str]:
    """{relative path: sha1} of every file under folder but the error log (rewritten by design:
    it lists what is missing now)."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != dataset.ERROR_LOG}


def attempt(group: str, action: Callable[[], object], workdir: pathlib.Path | None = None
            ) -> Outcome:
    """Runs `action` as sedjax.main would: a user error is an Outcome('error'), any other
    exception fails the test (the user would have seen a traceback); the workdir's files
    before are all still there, unchanged."""
    before = _snapshot(workdir) if workdir is not None and workdir.exists() else {}
    try:
        action()
        outcome = Outcome("ran")
    except cli.user_errors() as e:  # what cli.run prints as one `error:` line, status 2
        outcome = Outcome("error", str(e))
        assert getattr(e, "exit_code", cli.EXIT_USER_ERROR) == cli.EXIT_USER_ERROR
        assert "\n" not in outcome.message.strip(), outcome.message
    OUTCOMES[group, outcome.kind] += 1
    if before:
        after = _snapshot(workdir)
        lost = {k for k in before if after.get(k) != before[k]}
        assert not lost, f"finished files lost or overwritten: {sorted(lost)[:5]}"
    return outcome


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    total = sum(OUTCOMES.values())
    print(f"\nbad-input matrix: {total} cases, tracebacks 0, finished stages lost 0")
    for (group, kind), n in sorted(OUTCOMES.items()):
        print(f"  {group:<12} {kind:<6} {n}")


# ------------------------------------------------------------------ data: both layouts

def _tiny_config(layout: str):
    return tiny.get_config() if layout == "dcase2018" else tiny_desed.get_config()


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """{layout: (dataset root, a workdir whose data and features stages finished)}."""
    out = {}
    for layout in ("dcase2018", "desed"):
        base = tmp_path_factory.mktemp(layout)
        config = _tiny_config(layout)
        synthetic.ensure_dataset(config.data, base / "data")
        config = _real(config, base / "data")
        prepare.load_data(config, base / "work")
        out[layout] = base / "data", base / "work"
    return out


def _real(config, root: pathlib.Path):
    """The config reading `root` as a user's dataset of the config's layout."""
    layout = config.data.synthetic.layout
    config.data.dataset, config.data.root = layout, str(root)
    return config


def _copy(templates, layout: str, tmp_path: pathlib.Path) -> tuple:
    """(config, dataset root, workdir): copies of the template (audio hard-linked)."""
    src_root, src_work = templates[layout]
    root, work = tmp_path / "data", tmp_path / "work"
    shutil.copytree(src_root, root, copy_function=os.link)
    shutil.copytree(src_work, work)
    for meta in root.rglob("*"):  # metadata files are edited in place: own copies
        if meta.suffix in (".csv", ".tsv"):
            text = meta.read_bytes()
            meta.unlink()
            meta.write_bytes(text)
    return _real(_tiny_config(layout), root), root, work


# metadata files edited by the cases (relative to the dataset root)
WEAK = {"dcase2018": "metadata/train/weak.csv", "desed": "metadata/train/weak.tsv"}
STRONG = {"dcase2018": "metadata/test/test.csv", "desed": "metadata/validation/validation.tsv"}


def _lines(path: pathlib.Path) -> list[str]:
    return path.read_text().splitlines()


def _edit(path: pathlib.Path, change: Callable[[list[str]], list[str]]) -> None:
    path.write_text("\n".join(change(_lines(path))) + "\n")


def _row(lines: list[str], label_column: int = 3) -> int:
    """Index of the first row with a label in that column."""
    return next(i for i, line in enumerate(lines[1:], 1)
                if len(line.split("\t")) > label_column and line.split("\t")[label_column])


def _set(lines, column, value, label_column=3):
    i = _row(lines, label_column)
    fields = lines[i].split("\t")
    fields[column] = value
    return lines[:i] + ["\t".join(fields)] + lines[i + 1:]


def _truncate_last(lines):
    return lines[:-1] + [lines[-1][:len(lines[-1]) // 2]]


def L(change: Callable[[list[str]], list[str]]) -> Callable[[bytes], bytes]:
    """A change of a file's lines as a change of its bytes."""
    return lambda data: ("\n".join(change(data.decode().splitlines())) + "\n").encode()


def _latin1_label(lines):
    i = _row(lines)
    fields = lines[i].split("\t")
    fields[3] += "\xe9"
    return lines[:i] + ["\t".join(fields)] + lines[i + 1:]


def _onset_after_offset(lines):
    i = _row(lines)
    fields = lines[i].split("\t")
    fields[1] = str(float(fields[2]) + 1.0)
    return lines[:i] + ["\t".join(fields)] + lines[i + 1:]


def _twice_other_labels(lines):
    i = _row(lines, 1)
    name, labels = lines[i].split("\t")[:2]
    other = "Speech" if "Speech" not in labels else "Cat"
    return lines + [f"{name}\t{other}"]


# name -> (file kind, change of its bytes, expected outcome: see _check)
METADATA_CASES = {
    "truncated row": ("strong", L(_truncate_last), "either"),  # may end as a bare filename
    "comma separated": ("strong", L(lambda ls: [line.replace("\t", ",") for line in ls]),
                        "file"),
    "BOM": ("strong", b"\xef\xbb\xbf".__add__, "ran"),
    "CRLF": ("strong", lambda b: b.replace(b"\n", b"\r\n"), "ran"),
    "Latin-1 byte in a name": ("strong", lambda b: b.replace(b".wav", b"\xe9.wav", 1), "file"),
    "Latin-1 label": ("strong", lambda b: L(_latin1_label)(b).replace(b"\xc3\xa9", b"\xe9"),
                      "file"),
    "no header": ("strong", L(lambda ls: ls[1:]), "file"),
    "renamed header": ("strong", L(lambda ls: ["file\tstart\tend\tlabel"] + ls[1:]), "file"),
    "empty file": ("strong", lambda b: b"", "file"),
    "duplicate rows": ("strong", L(lambda ls: ls + ls[1:3]), "ran:repeat an event"),
    "onset > offset": ("strong", L(_onset_after_offset), "line"),
    "negative time": ("strong", L(lambda ls: _set(ls, 1, "-1")), "line"),
    "NaN time": ("strong", L(lambda ls: _set(ls, 2, "nan")), "line"),
    "event past the clip": ("strong", L(lambda ls: _set(ls, 2, "600.0")),
                            "ran:end after the clip"),
    "unknown label": ("strong", L(lambda ls: _set(ls, 3, "Elephant")), "line"),
    "label with spaces": ("strong", L(lambda ls: _set(ls, 3, " Dog ")), "either"),
    "label in lower case": ("strong", L(lambda ls: _set(ls, 3, "dog")), "line"),
    "weak: unknown label": ("weak", L(lambda ls: _set(ls, 1, "Cat,Elephant", 1)),
                            "line"),
    "weak: clip twice, other labels": ("weak", L(_twice_other_labels), "line"),
    "weak: truncated row": ("weak", L(lambda ls: ls + [ls[1].split("\t")[0]]),
                            "line"),
}


@pytest.mark.parametrize("layout", ["dcase2018", "desed"])
@pytest.mark.parametrize("case", list(METADATA_CASES))
def test_a_corrupt_metadata_file_runs_or_names_its_line(templates, tmp_path, layout, case,
                                                        caplog):
    kind, change, expected = METADATA_CASES[case]
    config, root, work = _copy(templates, layout, tmp_path)
    path = root / (STRONG if kind == "strong" else WEAK)[layout]
    path.write_bytes(change(path.read_bytes()))
    outcome = attempt("metadata", lambda: prepare.load_data(config, work), work)
    _check(outcome, expected, path, caplog.text)


def _check(outcome: Outcome, expected: str, path: pathlib.Path, logged: str) -> None:
    """expected: "ran"; "ran:TEXT" (ran and logged a warning naming path with TEXT); "line"
    (an error naming path:line); "file" (an error naming path); "either" (ran, or an error
    naming path)."""
    if expected.startswith("ran"):
        assert outcome.kind == "ran", outcome.message
        text = expected.partition(":")[2]
        assert not text or any(str(path) in line and text in line
                               for line in logged.splitlines()), logged
    elif outcome.kind == "error" or expected != "either":
        at = re.escape(str(path)) + (r":\d+: " if expected == "line" else "")
        assert outcome.kind == "error" and re.match(at, outcome.message), (
            outcome.kind, outcome.message)


def test_durations_file_missing_a_listed_clip(templates, tmp_path):
    """DESED: a clip with events that its durations file does not list still counts (its
    events say it exists); one the durations file lists without events is a clip without any."""
    config, root, work = _copy(templates, "desed", tmp_path)
    durations = root / dataset.DURATIONS["validation"]
    listed = _lines(root / STRONG["desed"])[_row(_lines(root / STRONG["desed"]))].split("\t")[0]
    _edit(durations, lambda ls: [line for line in ls if not line.startswith(listed)])
    outcome = attempt("metadata", lambda: prepare.load_data(config, work), work)
    assert outcome.kind == "ran"
    splits, _ = prepare.load_data(config, work)
    assert listed in splits["validation"].filenames


# mutations of a metadata file's bytes: (kind, position in [0, 1), bytes)
MUTATION = st.tuples(
    st.sampled_from(["truncate", "insert", "replace", "duplicate line", "drop line"]),
    st.floats(0, 1, exclude_max=True),
    st.sampled_from([b"\t", b",", b"\n", b"\r\n", b"\x00", b"\xe9", b"\xff\xfe", b"\"",
                     b" ", b"-", b"nan", b"1e309", b"Dog", b"\xef\xbb\xbf", b"#"]))


def _mutate(data: bytes, mutations) -> bytes:
    for what, where, piece in mutations:
        i = int(where * max(len(data), 1))
        lines = data.split(b"\n")
        j = int(where * len(lines))
        if what == "truncate":
            data = data[:i]
        elif what == "insert":
            data = data[:i] + piece + data[i:]
        elif what == "replace":
            data = data[:i] + piece + data[i + len(piece):]
        elif what == "duplicate line":
            data = b"\n".join(lines[:j + 1] + lines[j:])
        else:
            data = b"\n".join(lines[:j] + lines[j + 1:])
    return data


@pytest.mark.parametrize("layout, kind", [("dcase2018", "strong"), ("dcase2018", "weak"),
                                          ("desed", "strong"), ("desed", "weak")])
def test_mutated_metadata_runs_or_stops_with_one_line(templates, tmp_path_factory, layout, kind):
    @given(st.lists(MUTATION, min_size=1, max_size=4))
    def one(mutations):
        config, root, work = _copy(templates, layout, tmp_path_factory.mktemp("case"))
        path = root / (STRONG if kind == "strong" else WEAK)[layout]
        path.write_bytes(_mutate(path.read_bytes(), mutations))
        outcome = attempt("generated", lambda: prepare.load_data(config, work), work)
        if outcome.kind == "error":  # names the file it could not read (or the split's)
            assert str(root) in outcome.message, outcome.message
    one()


# ------------------------------------------------------------------ audio

def _tone(seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * 440 * t)
    return np.repeat(y[:, None], channels, axis=1) if channels > 1 else y


def _write_wav(path, y, sr, subtype="PCM_16"):
    soundfile.write(path, y, sr, subtype=subtype)


def _nan_samples(path):
    y = _tone(2, 16000)
    y[100:200] = np.nan
    soundfile.write(path, y.astype(np.float32), 16000, subtype="FLOAT")


def _flac_named_wav(path):
    soundfile.write(path, _tone(2, 16000), 16000, format="FLAC")


# name -> (writes the clip at path, expected: "ran", or the reason the error log gives)
AUDIO_CASES = {
    "zero-length file": (lambda p: p.write_bytes(b""), "empty: 0 bytes"),
    "text named .wav": (lambda p: p.write_text("not audio\n"), "cannot decode"),
    "FLAC named .wav": (_flac_named_wav, "ran"),
    "8-bit": (lambda p: _write_wav(p, _tone(2, 16000), 16000, "PCM_U8"), "ran"),
    "96 kHz": (lambda p: _write_wav(p, _tone(2, 96000), 96000), "ran"),
    "6 channels": (lambda p: _write_wav(p, _tone(2, 16000, 6), 16000), "ran"),
    "1 hour": (lambda p: _write_wav(p, _tone(3600, 8000), 8000, "PCM_U8"), "ran"),
    "NaN samples": (_nan_samples, "NaN or infinite"),
    "directory named .wav": (lambda p: p.mkdir(), "audio file not found"),
}


@pytest.mark.parametrize("case", list(AUDIO_CASES))
def test_bad_audio_is_read_or_skipped_and_logged(templates, tmp_path, case):
    """A new clip of the test split, listed in its metadata, in each bad form."""
    write, expected = AUDIO_CASES[case]
    config, root, work = _copy(templates, "dcase2018", tmp_path)
    name = "added_clip.wav"
    write(root / "audio" / "test" / name)
    meta = root / STRONG["dcase2018"]
    _edit(meta, lambda ls: ls + [f"{name}\t0.5\t1.5\tDog"])
    outcome = attempt("audio", lambda: prepare.load_data(config, work), work)
    assert outcome.kind == "ran", outcome.message
    log = (work / dataset.ERROR_LOG)
    logged = [r for r in log.read_text().splitlines() if r.startswith(name)] if log.exists() else []
    splits, arrays = prepare.load_data(config, work)
    if expected == "ran":
        assert not logged and name in splits["test"].filenames
        row = splits["test"].filenames.index(name)
        assert np.isfinite(np.asarray(arrays["test"].features[row])).all()
    else:
        assert logged and expected in logged[0], logged
        assert name not in splits["test"].filenames


# ------------------------------------------------------------------ embeddings

EMBEDDING_CASES = {
    "a clip missing": (lambda names, v: (names[1:], v[1:]), "no embeddings for 1 clips"),
    "wrong dimension": (lambda names, v: (names, v[:, :-1]), r"expected \(N, 16, 20\)"),
    "NaN values": (lambda names, v: (names, np.where(v > 2, np.nan, v)), "not finite"),
}


@pytest.mark.parametrize("case", list(EMBEDDING_CASES))
def test_bad_embeddings_name_the_file(tmp_path, case):
    change, expected = EMBEDDING_CASES[case]
    names = [f"c{i}.wav" for i in range(4)]
    values = np.random.default_rng(0).standard_normal((4, 16, 20)).astype(np.float32)
    stored_names, stored = change(names, values)
    np.savez(tmp_path / "weak.npz", filenames=np.array([n[:-4] for n in stored_names]),
             frame_embeddings=stored)
    outcome = attempt("embeddings", lambda: embeddings.load(tmp_path, "weak", names, 20, 16))
    assert outcome.kind == "error" and re.search(expected, outcome.message), outcome.message
    assert str(tmp_path) in outcome.message


# ------------------------------------------------------------------ configs

# name -> (the override a user types, the field the error must name)
CONFIG_CASES = {
    "unknown field": ("--config.pass1.num_epoch=3", "num_epoch"),
    "wrong type": ("--config.pass1.num_epochs=three", "pass1.num_epochs"),
    "negative size": ("--config.pass1.batch_size=-8", "pass1.batch_size"),
    "zero epochs": ("--config.pass1.num_epochs=0", "pass1.num_epochs"),
    "duplicate class": ("--config.data.classes=('Cat','Dog','Cat')", "data.classes"),
    "batch not divisible": ("--config.pass1.batch_size=6", "pass1.batch_size"),
    "negative learning rate": ("--config.pass1.learning_rate=-0.001", "pass1.learning_rate"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_a_bad_config_value_is_one_line_naming_the_field(tmp_path, case):
    """`sedjax.main --validate_only` with the override: one `error:` line, status 2."""
    override, field = CONFIG_CASES[case]
    proc = subprocess.run(
        [sys.executable, "-m", "sedjax.main", "--config=configs/tiny.py",
         f"--workdir={tmp_path}", "--validate_only", override],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    outcome = Outcome("error" if proc.returncode == 2 else "ran", " ".join(errors))
    OUTCOMES["config", outcome.kind] += 1
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(errors) == 1 and field in errors[0], proc.stderr[-2000:]


# ------------------------------------------------------------------ model files

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run's workdir (its model/ folder is what sedjax.detect loads)."""
    work = tmp_path_factory.mktemp("finished")
    run.train_and_evaluate(tiny.get_config(), work)
    return work


def _truncate(path: pathlib.Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _other_model(work: pathlib.Path):
    config = json.loads((work / "config.json").read_text())
    config["model"]["conv_features"] = [c * 2 for c in config["model"]["conv_features"]]
    (work / "config.json").write_text(json.dumps(config))


MODEL_CASES = {
    "truncated weights": (lambda w: _truncate(w / "model" / "variables.msgpack"), "unreadable"),
    "weights of another model": (_other_model, "does not match the model"),
    "weights missing": (lambda w: (w / "model" / "variables.msgpack").unlink(), "model"),
    "garbage config.json": (lambda w: (w / "config.json").write_text("{not json"), "config.json"),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_a_bad_model_folder_names_the_file(finished, tmp_path, case):
    change, expected = MODEL_CASES[case]
    work = tmp_path / "w"
    shutil.copytree(finished, work, ignore=shutil.ignore_patterns("features", "checkpoints",
                                                                   "synthetic"))
    change(work)
    outcome = attempt("model", lambda: detect.Detector.from_workdir(work))
    assert outcome.kind == "error" and expected in outcome.message, outcome.message
    assert str(work) in outcome.message


def test_the_command_prints_one_error_line_and_exits_2(templates, tmp_path):
    """The same cases through the command a user types: one `error:` line, status 2."""
    config, root, work = _copy(templates, "dcase2018", tmp_path)
    _edit(root / STRONG["dcase2018"], _onset_after_offset)
    proc = subprocess.run(
        [sys.executable, "-m", "sedjax.main", "--config=configs/tiny.py", f"--workdir={work}",
         "--config.data.dataset=dcase2018", f"--config.data.root={root}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert str(root / STRONG["dcase2018"]) in errors[0]
