"""Reads a dataset in the DCASE2018 Task 4 or the DESED layout and encodes its labels as arrays.

Layouts (`LAYOUTS`, chosen by data.dataset; generated data by data.synthetic.layout):
- 'dcase2018': metadata/{train,test,eval}/*.csv; the DCASE2019 variant adds a strongly labelled
  training split, "synthetic" (metadata/train/synthetic.csv, audio/train/synthetic/), and
  DESED's validation split (metadata/validation/), read when asked for and present.
- 'desed' (DESED, as DCASE-REPO/DESED_task reads it): metadata/train/weak.tsv;
  audio/train/unlabel_in_domain/ without a list (every audio file in it); strongly labelled
  synthetic clips metadata/train/synthetic21_train/soundscapes.tsv (+ real ones,
  metadata/train/audioset_strong.tsv, when present: both are the "synthetic" split);
  metadata/validation/validation.tsv + validation_durations.tsv; the public evaluation set
  metadata/eval/public.tsv + public_durations.tsv is the test split. An audio folder X is read
  from X_16k (DESED_task's resampled copy) when that exists and the features run at 16 kHz.
  Under DESED_task's roles (sedjax.data.split_roles; a folder without the public evaluation set)
  the validation split is the synthetic validation set metadata/validation/
  synthetic21_validation/soundscapes.tsv + durations.tsv and the test split is
  metadata/validation/validation.tsv.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
from typing import Sequence

import numpy as np
from absl import logging

from sedjax.data import audio, event_files, split_roles
from sedjax.data.audio import AUDIO_EXTENSIONS  # the files of an unlisted audio folder
from sedjax.system import cli

# split name -> (metadata file, audio folder, kind of labels), relative to the dataset root.
SPLITS = DCASE2018 = {
    "weak": ("metadata/train/weak.csv", "audio/train/weak", "weak"),
    "unlabel_in_domain": ("metadata/train/unlabel_in_domain.csv",
                          "audio/train/unlabel_in_domain", "none"),
    "synthetic": ("metadata/train/synthetic.csv", "audio/train/synthetic", "strong"),
    "validation": ("metadata/validation/validation.tsv", "audio/validation", "strong"),
    "test": ("metadata/test/test.csv", "audio/test", "strong"),
    "eval": ("metadata/eval/eval.csv", "audio/eval", "strong"),
}
DESED = {
    "weak": ("metadata/train/weak.tsv", "audio/train/weak", "weak"),
    "unlabel_in_domain": (None, "audio/train/unlabel_in_domain", "none"),  # no list: the folder
    "synthetic": ("metadata/train/synthetic21_train/soundscapes.tsv",
                  "audio/train/synthetic21_train/soundscapes", "strong"),
    "validation": ("metadata/validation/validation.tsv", "audio/validation/validation",
                   "strong"),
    "test": ("metadata/eval/public.tsv", "audio/eval/public", "strong"),
}
# real strongly labelled clips (DCASE 2022-), joined to DESED's "synthetic" split when present
DESED_AUDIOSET_STRONG = ("metadata/train/audioset_strong.tsv", "audio/train/strong_label_real",
                         "strong")
LAYOUTS = {"dcase2018": DCASE2018, "desed": DESED}
# DESED's durations files (filename, duration): they list the clips without any event too
DURATIONS = {"validation": "metadata/validation/validation_durations.tsv",
             "test": "metadata/eval/public_durations.tsv"}
ERROR_LOG = "item_access_error.log.csv"

HOW_TO_GET_DATA = """\
The {layout} dataset is not at {root}.
  - Real data (82 GB, from YouTube): follow
    https://github.com/DCASE-REPO/dcase2018_baseline/tree/master/task4/dataset and point
    --config.data.root at the folder holding metadata/ and audio/.
  - Or see the whole system work on synthetic soundscapes in the same layout:
    python -m sedjax.main --config=configs/demo.py --workdir=/tmp/sedjax_demo"""


class DatasetError(cli.UserError, ValueError):
    """Bad dataset input: names the file (and line) and what is wrong."""


class DatasetNotFound(DatasetError, FileNotFoundError):
    """No dataset at the configured root; the message says how to get one."""


Event = tuple[float, float, str]  # onset s, offset s, label


@dataclasses.dataclass
class Split:
    """The clips of one split whose audio exists (and, once featurized, can be read), with
    their labels."""

    name: str
    filenames: list[str]
    paths: list[pathlib.Path]
    weak: np.ndarray | None = None  # (N, C) float32 multi-hot, for 'weak' and strong splits
    events: list[list[Event]] | None = None  # per clip, for strong splits
    # what it was read from, relative to the root: its metadata file (or unlisted folder);
    # under DESED_task's roles "validation" is read from synthetic21_validation's
    source: str = ""

    def __len__(self) -> int:
        return len(self.filenames)

    def reference_events(self, rows: Sequence[int] | None = None) -> list[dict]:
        """The events of a strong split (of `rows` only, when given) as sed_eval-style dicts:
        filename, onset, offset, event_label."""
        if self.events is None:
            raise ValueError(f"split {self.name!r} has no event labels")
        rows = range(len(self)) if rows is None else rows
        return [{"filename": self.filenames[i], "onset": on, "offset": off, "event_label": label}
                for i in rows for on, off, label in self.events[i]]


def multi_hot(labels: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    """Clip labels -> (N, C) float32 multi-hot."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(labels), len(classes)), np.float32)
    for n, clip in enumerate(labels):
        for label in clip:
            out[n, index[label]] = 1.0
    return out


FRAME_LABELS = ("cover_half", "desed_task")  # data.frame_labels: strong_labels' rules
DEFAULT_FRAME_LABELS = "cover_half"  # without data.frame_labels (only the DESED configs set it)


def strong_labels(events: Sequence[Sequence[Event]], classes: Sequence[str], num_frames: int,
                  frame_seconds: float, rule: str = DEFAULT_FRAME_LABELS,
                  rate: tuple[int, int, int] | None = None) -> np.ndarray:
    """Strong events -> (N, num_frames, C) float32 frame targets.

    Frame i covers [i * frame_seconds, (i + 1) * frame_seconds). rule 'cover_half': it is active
    for an event that covers at least half of it: frames round(onset / frame_seconds) up to (not
    including) round(offset / frame_seconds), at least one frame, clipped to the num_frames
    frames (an event running past the last frame is cut). Python's round: an exact half rounds
    to even. rule 'desed_task' (DESED_task's ManyHotEncoder.encode_strong_df): every frame an
    event touches: floor(onset) up to ceil(offset) of t * sample_rate / hop / time_pooling
    (rate = (sample_rate, hop, time_pooling), DESED's arithmetic), clipped to [0, num_frames].
    """
    if rule not in FRAME_LABELS:
        raise ValueError(f"unknown frame label rule {rule!r}; choose one of {FRAME_LABELS}")
    if rule == "desed_task" and rate is None:
        raise ValueError("frame label rule 'desed_task' needs rate=(sample_rate, hop, pooling)")
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(events), num_frames, len(classes)), np.float32)
    for n, clip in enumerate(events):
        for onset, offset, label in clip:
            if rule == "desed_task":
                fs, hop, pool = rate
                start, stop = (np.clip(t * fs / hop / pool, 0, num_frames) for t in (onset, offset))
                start, stop = int(start), int(np.ceil(stop))
            else:
                start = max(int(round(onset / frame_seconds)), 0)  # >= 0: a slice never wraps
                stop = min(max(int(round(offset / frame_seconds)), start + 1), num_frames)
            out[n, start:stop, index[label]] = 1.0  # empty when start >= num_frames
    return out


DESED_HOW_TO = """\
  - Real DESED: DCASE-REPO/DESED_task's generate_dcase_task4_2023.py downloads it; point
    --config.data.root at the folder holding metadata/ and audio/ (docs/desed.md, "The layout").
  - Or the same layout generated: python -m sedjax.main --config=configs/demo_desed.py"""


def dataset_root(root: str | os.PathLike, layout: str = "dcase2018") -> pathlib.Path:
    """Expands the root and says how to get the data when it is not there."""
    path = pathlib.Path(os.path.expanduser(str(root)))
    if not (path / "metadata").is_dir():
        if layout == "desed":
            raise DatasetNotFound(f"The DESED dataset is not at {path}.\n{DESED_HOW_TO}")
        raise DatasetNotFound(HOW_TO_GET_DATA.format(root=path, layout="DCASE2018 Task 4"))
    return path


def audio_folder(root: pathlib.Path, audio_rel: str, sample_rate: int | None) -> pathlib.Path:
    """root/audio_rel, or its DESED_task resampled copy audio_rel_16k at 16 kHz when present."""
    folder = root / audio_rel
    if sample_rate and sample_rate % 1000 == 0:
        resampled = root / f"{audio_rel}_{sample_rate // 1000}k"
        if resampled.is_dir():
            return resampled
    return folder


def list_audio_folder(folder: pathlib.Path, split: str) -> list[str]:
    """The audio files of an unlisted folder (DESED's unlabel_in_domain), sorted; other files
    are logged and left out."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: audio folder of split {split!r} not found")
    names, other = [], []
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            (names if p.suffix.lower() in AUDIO_EXTENSIONS else other).append(p.name)
    if other:
        logging.warning("%s: %d files that are not audio (%s) left out: %s", folder, len(other),
                        "/".join(AUDIO_EXTENSIONS), ", ".join(other[:5]))
    if not names:
        raise DatasetError(f"{folder}: split {split!r} has no audio files "
                           f"({'/'.join(AUDIO_EXTENSIONS)})")
    return names


def _read_metadata(root: pathlib.Path, meta: pathlib.Path, kind: str,
                   durations_rel: str | None, classes: Sequence[str]):
    """(filenames, weak labels or None, per-clip events or None) of a split's metadata file;
    durations_rel: DESED's durations file beside a strong one (read when present)."""
    if kind == "weak":
        names, labels = event_files.read_weak(meta, classes)
        return names, labels, None
    if kind == "strong":
        found, names = event_files.read_events(meta, classes)
        by_name: dict[str, list[Event]] = {name: [] for name in names}
        for e in found:
            by_name[e["filename"]].append((e["onset"], e["offset"], e["event_label"]))
        durations = root / durations_rel if durations_rel else None
        if durations is not None and durations.is_file():
            # DESED lists only events in <split>.tsv: a clip without any is only in durations
            for name in event_files.read_durations(durations):
                by_name.setdefault(name, [])
        return list(by_name), None, list(by_name.values())
    return event_files.read_filenames(meta), None, None


def load_split(root: pathlib.Path, split: str, classes: Sequence[str],
               error_log: pathlib.Path | None = None, layout: str = "dcase2018",
               sample_rate: int | None = None, spec: tuple | None = None,
               durations: str | None = None) -> Split:
    """Reads one split; clips whose audio is missing are logged to `error_log` and skipped.

    spec: (metadata, audio folder, kind) in place of the layout's entry for `split`, with
    `durations` its durations file (None: none); without spec the layout's (DURATIONS)."""
    meta_rel, audio_rel, kind = spec or LAYOUTS[layout][split]
    if spec is None:
        durations = DURATIONS.get(split)
    folder = audio_folder(root, audio_rel, sample_rate)
    meta = folder if meta_rel is None else root / meta_rel
    if meta_rel is not None and not meta.is_file():
        raise DatasetError(f"{meta}: metadata file of split {split!r} not found")
    if meta_rel is None:  # an unlisted folder (DESED's unlabel_in_domain): its audio files
        names, labels, events = list_audio_folder(folder, split), None, None
    else:
        try:
            names, labels, events = _read_metadata(root, meta, kind, durations, classes)
        except event_files.EventFileError as e:  # a user's data: the dataset's error type
            raise DatasetError(str(e)) from None
    if not names:
        raise DatasetError(f"{meta}: split {split!r} lists no clips")
    audio_rel = folder.relative_to(root)
    paths = [root / audio_rel / n for n in names]
    keep = [i for i, p in enumerate(paths) if p.is_file()]
    missing = [names[i] for i in sorted(set(range(len(names))) - set(keep))]
    if missing:
        logging.warning("%s: %d of %d audio files missing; skipped and listed in %s",
                        split, len(missing), len(names), error_log or "(no log)")
        if error_log is not None:
            reason = f"audio file not found in {root / audio_rel}"
            append_error_log(error_log, split, [(name, reason) for name in missing])
    if not keep:
        raise DatasetError(f"{root / audio_rel}: none of the {len(names)} audio files "
                           f"listed in {meta} exist")
    weak = None
    if kind == "weak":
        weak = multi_hot([labels[i] for i in keep], classes)
    if kind == "strong":
        events = [events[i] for i in keep]
        warn_events_past_the_end(meta, [paths[i] for i in keep], events)
        weak = multi_hot([[e[2] for e in clip] for clip in events], classes)
    return Split(split, [names[i] for i in keep], [paths[i] for i in keep], weak, events,
                 meta_rel or audio_rel)


LATE_TOLERANCE_S = 0.1  # annotations may end a little after the clip (10.001 s of 10 s)


def warn_events_past_the_end(meta: pathlib.Path, paths: Sequence[pathlib.Path],
                             events: Sequence[Sequence[Event]]) -> None:
    """Logs the clips whose events end after the clip (its length read from the file's
    header); they are kept and scored as written."""
    late = []
    for path, clip in zip(paths, events):
        if clip:
            end, length = max(e[1] for e in clip), audio.duration(path)
            if length is not None and end > length + LATE_TOLERANCE_S:
                late.append((path.name, end, length))
    if late:
        logging.warning("%s: %d clips have events that end after the clip (e.g. %s: %.3f s, "
                        "the clip %.3f s); kept as written", meta, len(late), *late[0])


def append_error_log(path: pathlib.Path, split: str,
                     entries: Sequence[tuple[str, str]]) -> None:
    """Appends (filename, reason) rows of a split's skipped clips to the error log."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        if new:
            writer.writerow(["filename", "split", "error"])
        for name, reason in entries:
            writer.writerow([name, split, reason])


def drop_unreadable(split: Split, reasons: dict[int, str], error_log: pathlib.Path,
                    write_log: bool = True) -> Split:
    """The split without rows `reasons` ({row: why}: clips whose audio cannot be read), which
    are appended to `error_log` when write_log; a split with none readable is a DatasetError."""
    if not reasons:
        return split
    logging.warning("%s: %d of %d audio files cannot be read; skipped and listed in %s",
                    split.name, len(reasons), len(split), error_log)
    if write_log:
        append_error_log(error_log, split.name,
                         [(split.filenames[i], reasons[i]) for i in sorted(reasons)])
    keep = [i for i in range(len(split)) if i not in reasons]
    if not keep:
        first = min(reasons)
        raise DatasetError(f"{split.paths[first].parent}: none of the {len(split)} audio files "
                           f"of split {split.name!r} can be read (e.g. "
                           f"{split.filenames[first]}: {reasons[first]}); see {error_log}")
    return dataclasses.replace(
        split, filenames=[split.filenames[i] for i in keep], paths=[split.paths[i] for i in keep],
        weak=None if split.weak is None else split.weak[keep],
        events=None if split.events is None else [split.events[i] for i in keep])


def join_splits(name: str, parts: Sequence[Split]) -> Split:
    """One split of several (DESED's synthetic + real strongly labelled clips)."""
    if len(parts) == 1:
        return parts[0]
    return Split(name, [f for p in parts for f in p.filenames], [f for p in parts for f in p.paths],
                 np.concatenate([p.weak for p in parts]), [e for p in parts for e in p.events],
                 " + ".join(p.source for p in parts))


def load_dataset(root, classes: Sequence[str], workdir, use_eval: bool = True,
                 use_strong: bool = False, write_log: bool = True,
                 use_validation: bool = True, layout: str = "dcase2018",
                 sample_rate: int | None = None, roles: str = split_roles.SEDJAX
                 ) -> dict[str, Split]:
    """Reads the splits of a root in `layout` (LAYOUTS): {name: Split}, in the order weak,
    unlabel_in_domain, synthetic, validation, test, eval.

    synthetic (strongly labelled training clips) only with use_strong and when its metadata
    file is present; validation only with use_validation and when present; eval (DCASE2018
    layout) only with use_eval and when present. write_log: whether this process (re)writes
    workdir's error log (one process of a multi-process run does). sample_rate: the features'
    rate (DESED's resampled *_16k folders are read at 16 kHz). roles: data.split_roles
    (sedjax.data.split_roles: which DESED split is validation and which is test).
    """
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown dataset layout {layout!r}; known: {', '.join(LAYOUTS)}")
    splits_of = LAYOUTS[layout]
    root = dataset_root(root, layout)
    # {split: (spec, durations file)} read in place of the layout's (DESED_task's roles)
    replaced = {}
    if split_roles.resolve(roles, root, layout) == split_roles.DESED_TASK:
        replaced = {"validation": (split_roles.SYNTH_VALIDATION,
                                   split_roles.SYNTH_VALIDATION_DURATIONS),
                    "test": (DESED["validation"], DURATIONS["validation"])}
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    error_log = workdir / ERROR_LOG
    if write_log and error_log.exists():
        error_log.unlink()  # rewritten from scratch: it lists what is missing now
    splits = {}
    log = error_log if write_log else None
    for name in ("weak", "unlabel_in_domain", "synthetic", "validation", "test", "eval"):
        if name not in splits_of:
            continue
        spec, durations = replaced.get(name, (None, None))
        meta_rel = (spec or splits_of[name])[0]
        meta = root / meta_rel if meta_rel else None
        if name == "eval" and not (use_eval and meta.is_file()):
            continue
        if name == "validation" and not (use_validation and meta.is_file()):
            continue
        if name == "synthetic" and not use_strong:
            continue
        real_strong = layout == "desed" and (root / DESED_AUDIOSET_STRONG[0]).is_file()
        if name == "synthetic" and not (meta.is_file() or real_strong):
            logging.info("no strongly labelled training split (%s not found; a DCASE2018 "
                         "layout has none): going on without it", meta)
            continue
        parts = []
        if meta is None or meta.is_file() or name != "synthetic":  # missing: one error
            parts.append(load_split(root, name, classes, log, layout, sample_rate, spec,
                                    durations))
        if name == "synthetic" and real_strong:
            parts.append(load_split(root, name, classes, log, layout, sample_rate,
                                    spec=DESED_AUDIOSET_STRONG))
        splits[name] = join_splits(name, parts)
        logging.info("split %-18s %6d clips (%s)", name, len(splits[name]),
                     splits[name].source)
    return splits
