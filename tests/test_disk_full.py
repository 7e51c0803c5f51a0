"""A full disk while writing features, pseudo-labels, checkpoints or results: one `error:` line
naming the file, exit status 75, no traceback, nothing half-written under the final name, and
the same command completes once space is freed."""

import errno
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from absl import flags

from configs import tiny
from sedjax.data import features
from sedjax.system import cli, files

ROOT = pathlib.Path(__file__).parents[1]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def disk_full_line(path) -> str:
    return (f"error: no space left on device writing {path}: free space and rerun the same "
            f"command; nothing half-written was kept")


def call(main) -> int:
    """Runs `main` as a command (no flags) in this process; its exit status."""
    return cli.call(main, flags.FlagValues(), [])


def half_then_full(f, *args, **kwargs):
    """np.save that writes the start of a .npy file, then finds the disk full."""
    f.write(b"\x93NUMPY half")
    raise OSError(ENOSPC.errno, ENOSPC.strerror)


# ---------------------------------------------------------------------------- atomic writes
def test_save_npy_on_a_full_disk_is_one_line_and_keeps_nothing(tmp_path, monkeypatch, capsys):
    path = tmp_path / "pass1" / "pseudo_labels.npy"  # as the two-pass recipe writes them
    labels = np.arange(12, dtype=np.float32).reshape(3, 4)

    def main(argv):
        files.save_npy(path, labels)

    with monkeypatch.context() as patch:
        patch.setattr(np, "save", half_then_full)
        assert call(main) == cli.EXIT_DISK_FULL == 75
    out = capsys.readouterr()
    assert out.err.strip().splitlines() == [disk_full_line(path)] and out.out == ""
    assert os.listdir(path.parent) == []  # neither the final name nor a *.partial
    assert call(main) == 0  # space freed: the same command writes it
    np.testing.assert_array_equal(np.load(path), labels)


def test_results_on_a_full_disk_keep_the_earlier_complete_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "results.json"
    files.write_text(path, '{"run": 1}\n')

    def main(argv):
        files.write_text(path, '{"run": 2}\n')

    def write_half(self, data):
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(ENOSPC.errno, ENOSPC.strerror)

    with monkeypatch.context() as patch:
        patch.setattr(pathlib.Path, "write_bytes", write_half)
        assert call(main) == cli.EXIT_DISK_FULL
    assert capsys.readouterr().err.strip().splitlines() == [disk_full_line(path)]
    assert os.listdir(tmp_path) == ["results.json"] and path.read_text() == '{"run": 1}\n'
    assert call(main) == 0 and path.read_text() == '{"run": 2}\n'


def test_a_full_disk_names_the_innermost_file_being_written(tmp_path, monkeypatch):
    outer, inner = tmp_path / "features.npy", tmp_path / "features.frames.npy"
    monkeypatch.setattr(np, "save", half_then_full)
    with pytest.raises(files.DiskFullError) as e:
        with files.atomic_path(outer):
            files.save_npy(inner, np.zeros(3))
    assert e.value.filename == str(inner) and e.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []


def test_a_full_quota_is_reported_too(tmp_path, capsys):
    def main(argv):
        with files.atomic_path(tmp_path / "a.txt"):
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    assert call(main) == cli.EXIT_DISK_FULL
    assert capsys.readouterr().err.strip() == (
        f"error: disk quota exceeded writing {tmp_path / 'a.txt'}: free space and rerun the "
        f"same command; nothing half-written was kept")


def test_other_write_errors_still_show_their_traceback(tmp_path):
    def main(argv):
        with files.atomic_path(tmp_path / "a.txt"):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    with pytest.raises(PermissionError):
        call(main)


# ---------------------------------------------------------------------------- features
def write_clips(folder: pathlib.Path, count: int) -> list[pathlib.Path]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        paths.append(folder / f"clip{i}.wav")
        soundfile.write(paths[-1], 0.1 * rng.standard_normal(22050).astype(np.float32), 44100)
    return paths


@pytest.fixture
def cfg():
    c = tiny.get_config().features
    c.frontend, c.batch_size, c.num_workers = "jax", 2, 1
    return c


def fail_preallocation(fd, offset, length):
    raise OSError(ENOSPC.errno, ENOSPC.strerror)


def fail_flush(self):
    raise OSError(ENOSPC.errno, ENOSPC.strerror)


@pytest.mark.parametrize("target, failing, failed_file", [
    (os, ("posix_fallocate", fail_preallocation), ".npy"),  # the features memmap's blocks
    (np.memmap, ("flush", fail_flush), ".npy"),  # its pages at the end
    (np, ("save", half_then_full), ".frames.npy"),  # the valid-frame counts
])
def test_features_on_a_full_disk(tmp_path, monkeypatch, capsys, cfg, target, failing,
                                 failed_file):
    clips = write_clips(tmp_path / "audio", 3)
    cache = tmp_path / "cache"

    def main(argv):
        features.extract_split("weak", clips, [c.name for c in clips], cfg, cache)

    with monkeypatch.context() as patch:
        patch.setattr(target, *failing)
        assert call(main) == cli.EXIT_DISK_FULL
    stem = cache / f"weak-{features.cache_key(cfg, [c.name for c in clips])}"
    assert capsys.readouterr().err.strip().splitlines() == [
        disk_full_line(f"{stem}{failed_file}")]
    assert os.listdir(cache) == []  # no features file that reads as complete, no *.partial
    assert call(main) == 0
    feats, frames, errors = features.extract_split("weak", clips, [c.name for c in clips], cfg,
                                                   cache)
    assert feats.shape == (3, cfg.num_frames, cfg.n_mels) and frames.tolist() == [26] * 3
    assert np.abs(feats).sum() > 0 and errors == {}


# ---------------------------------------------------------------------------- checkpoints
ORBAX_ENOSPC = (  # what orbax's tensorstore writer raises (seen on a full tmpfs, orbax 0.12)
    'RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at local file "/w/pass1/'
    'checkpoints/latest/2.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/": '
    'Failed to write 195652 bytes to file 11: No space left on device [os_error_code=\'28\']')


def test_a_checkpoints_full_disk_is_one_line_naming_the_checkpoint(capsys):
    def main(argv):
        raise ValueError(ORBAX_ENOSPC)

    assert call(main) == cli.EXIT_DISK_FULL
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: no space left on device writing /w/pass1/checkpoints/latest/2.orbax-checkpoint-"
        "tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/: free space and rerun the same "
        "command"]  # orbax keeps a failed save under a temporary name: it never restores it


def test_an_error_caused_by_a_full_disk_is_one_line(capsys):
    def main(argv):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/w/tensorboard/events")
        except OSError as e:
            raise RuntimeError("summary writer failed") from e

    assert call(main) == cli.EXIT_DISK_FULL
    assert capsys.readouterr().err.strip() == (
        "error: no space left on device writing /w/tensorboard/events: free space and rerun "
        "the same command")


def library_record(level: int, exc: BaseException | None, message: str = "save failed"):
    exc_info = (type(exc), exc, None) if exc else None
    return logging.LogRecord("absl", level, "/venv/site-packages/orbax/checkpoint/x.py", 1,
                             message, (), exc_info)


def test_libraries_logs_of_the_full_disk_are_dropped_others_kept():
    assert not cli._quiet_libraries(library_record(logging.ERROR, ValueError(ORBAX_ENOSPC)))
    assert not cli._quiet_libraries(library_record(logging.ERROR, None, ORBAX_ENOSPC))
    assert cli._quiet_libraries(library_record(logging.ERROR, ValueError("shape mismatch")))
    assert not cli._quiet_libraries(library_record(logging.INFO, None))  # chatter, as before
    ours = logging.LogRecord("absl", logging.ERROR, "/work/sedjax/run.py", 1, ORBAX_ENOSPC, (),
                             None)
    assert cli._quiet_libraries(ours)


# ---------------------------------------------------------------------------- a real full disk
FEATURIZE = """
import pathlib, sys
from absl import flags
from configs import tiny
from sedjax.data import features
from sedjax.system import cli

def main(argv):
    cfg = tiny.get_config().features
    cfg.frontend, cfg.batch_size, cfg.num_workers = "jax", 2, 1
    clips = sorted(pathlib.Path(argv[1]).glob("*.wav"))
    features.extract_split("weak", clips, [c.name for c in clips], cfg, argv[2])

cli.run(main, flags.FlagValues())
"""
# in a mount namespace of its own: a tmpfs too small for the features, then grown
ON_A_SMALL_DISK = """
mount -t tmpfs -o size=256k tmpfs "$DISK" || exit 77
"$PYTHON" "$SCRIPT" "$AUDIO" "$DISK/cache" 2> "$LOGS/first.err"
echo "first $?"; ls -a "$DISK/cache"
mount -o remount,size=64m "$DISK"
"$PYTHON" "$SCRIPT" "$AUDIO" "$DISK/cache" 2> "$LOGS/rerun.err"
echo "rerun $?"; ls "$DISK/cache"
"""


def test_generating_the_synthetic_dataset_on_a_full_disk(tmp_path, monkeypatch, capsys):
    """libsndfile reports a full disk as "System error." without errno: clips are encoded in
    memory and written by files.write_bytes, so the command says which clip, in one line."""
    from sedjax.data import synthetic
    original, full = pathlib.Path.write_bytes, []

    def write_bytes(self, data):
        if ".wav." in self.name and len(full) >= 3:  # the 4th clip finds the disk full
            raise OSError(ENOSPC.errno, ENOSPC.strerror)
        full.append(self.name)
        return original(self, data)

    def main(argv):
        synthetic.generate(tmp_path, num_weak=4, num_unlabeled=2, num_test=2, seed=0,
                           sample_rate=8000, classes=tiny.get_config().data.classes,
                           num_workers=1, clip_seconds=1.0)

    with monkeypatch.context() as patch:
        patch.setattr(pathlib.Path, "write_bytes", write_bytes)
        assert call(main) == cli.EXIT_DISK_FULL
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in "\n".join(err)
    fourth = re.search(r"writing (\S+\.wav):", lines[0])
    assert fourth and lines[0] == disk_full_line(fourth.group(1))
    assert not list(tmp_path.rglob("*.partial")) and not pathlib.Path(fourth.group(1)).exists()
    assert not (tmp_path / synthetic.MARKER).exists()  # the dataset is not taken as complete
    assert call(main) == 0 and (tmp_path / synthetic.MARKER).exists()


def can_mount_a_tmpfs() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs none /mnt"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not can_mount_a_tmpfs(), reason="needs user namespaces (unshare -rm)")
def test_features_on_a_really_full_disk(tmp_path, cfg):
    # A memmap page that a full disk cannot hold kills the process with SIGBUS, silently
    clips = write_clips(tmp_path / "audio", 3)  # 384 kB of features > the 256 kB disk
    (tmp_path / "disk").mkdir()
    (tmp_path / "featurize.py").write_text(FEATURIZE)
    env = dict(os.environ, SEDJAX_NO_REEXEC="1", PYTHON=sys.executable, DISK=str(
        tmp_path / "disk"), SCRIPT=str(tmp_path / "featurize.py"), AUDIO=str(
        tmp_path / "audio"), LOGS=str(tmp_path), PYTHONPATH=str(ROOT))
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", ON_A_SMALL_DISK], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    first = (tmp_path / "first.err").read_text()
    stem = tmp_path / "disk" / "cache" / f"weak-{features.cache_key(cfg, [c.name for c in clips])}"
    assert proc.stdout.split("\n")[0] == f"first {cli.EXIT_DISK_FULL}", (proc.stdout, first)
    assert [line for line in first.splitlines() if not re.match(r"[IW]\d{4} ", line)] == [
        disk_full_line(f"{stem}.npy")]  # absl's info and warning lines aside
    assert "Traceback" not in first
    listing_then_rerun = proc.stdout.split("\n")[1:]
    assert listing_then_rerun[:3] == [".", "..", "rerun 0"], proc.stdout
    assert sorted(listing_then_rerun[3:-1]) == [
        f"{stem.name}.errors.json", f"{stem.name}.frames.npy", f"{stem.name}.npy"]
