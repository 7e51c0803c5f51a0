"""DCASE event files: the one reader and writer of sedjax's tab-separated label and event tables.

Four kinds, each with its header line, as DCASE2018 Task 4 and DESED ship them:

    events     filename  onset  offset  event_label   strong labels and predictions: seconds;
               a clip without events is one row with empty fields (or the filename alone)
    weak       filename  event_labels                 clip labels, comma-separated (or none)
    filenames  filename                               unlabelled clips
    durations  filename  duration                     seconds (DESED's *_durations.tsv, the
                                                      format sed_scores_eval reads)

Fields are split at tabs (DCASE files quote nothing) and stripped; blank lines are skipped; a
byte-order mark is allowed. Every problem is an EventFileError naming the file and, for a bad
row, its line: `.../weak.tsv:4: unknown event label 'Elephant'; known labels: ...`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging

from sedjax.system import cli, files

HEADER = ("filename", "onset", "offset", "event_label")
WEAK_HEADER = ("filename", "event_labels")
FILENAMES_HEADER = ("filename",)
DURATIONS_HEADER = ("filename", "duration")


class EventFileError(cli.UserError, ValueError):
    """A missing, unreadable or malformed event file; the message names it (and the line)."""


def _rows(path, header: Sequence[str]) -> list[tuple[int, list[str]]]:
    """(line number, stripped fields) of every non-blank line after the header, which must be
    `header`; each row's first field, the filename, must be set."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # utf-8-sig: a byte-order mark is dropped
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise EventFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EventFileError(f"{path}: cannot read ({e})") from None
    if not lines or [h.strip() for h in lines[0].split("\t")] != list(header):
        found = repr(lines[0]) if lines else "an empty file"
        raise EventFileError(f"{path}:1: expected header columns "
                             f"{', '.join(map(repr, header))} (tab-separated), found {found}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if line.strip():
            fields = [x.strip() for x in line.split("\t")]
            if not fields[0]:
                raise EventFileError(f"{path}:{number}: empty filename")
            rows.append((number, fields))
    return rows


def _fields(where: str, fields: list[str], count: int) -> list[str]:
    """A row's `count` fields; a filename alone is padded with empty ones (no labels)."""
    if len(fields) == 1:
        return fields + [""] * (count - 1)
    if len(fields) != count:
        raise EventFileError(f"{where}: expected {count} tab-separated "
                             f"field{'s' if count > 1 else ''}, got {len(fields)}")
    return fields


def _label(label: str, classes: Sequence[str] | None, where: str) -> str:
    """The label, checked against `classes` when given."""
    if classes is not None and label not in classes:
        raise EventFileError(f"{where}: unknown event label {label!r}; "
                             f"known labels: {', '.join(classes)}")
    return label


def read_events(path, classes: Sequence[str] | None = None
                ) -> tuple[list[dict[str, Any]], list[str]]:
    """An events file: (event dicts: filename, onset, offset, event_label; every filename
    listed, in order of first appearance). With `classes`, any other label is an error."""
    events: list[dict[str, Any]] = []
    names: list[str] = []
    seen: dict[tuple, int] = {}  # event -> its first line
    repeated: list[tuple[int, int]] = []  # (line, first line) of rows that repeat an event
    for number, row in _rows(path, HEADER):
        where = f"{path}:{number}"
        name, onset, offset, label = _fields(where, row, 4)
        names.append(name)
        if not (onset or offset or label):
            continue  # a clip with no event
        if not (onset and offset and label):
            raise EventFileError(f"{where}: onset, offset and event_label must all be set or "
                                 "all empty")
        try:
            on, off = float(onset), float(offset)
        except ValueError:
            raise EventFileError(f"{where}: onset/offset must be numbers, got {onset!r}, "
                                 f"{offset!r}") from None
        if not (math.isfinite(on) and math.isfinite(off) and 0 <= on <= off):
            raise EventFileError(f"{where}: need 0 <= onset <= offset (finite seconds), got "
                                 f"{on}, {off}")
        event = {"filename": name, "onset": on, "offset": off,
                 "event_label": _label(label, classes, where)}
        key = tuple(event.values())
        if key in seen:  # counted once: a repeated reference event would be scored twice
            repeated.append((number, seen[key]))
            continue
        seen[key] = number
        events.append(event)
    if repeated:
        logging.warning("%s: %d rows repeat an event of an earlier row and are left out "
                        "(line %d repeats line %d)", path, len(repeated), *repeated[0])
    return events, list(dict.fromkeys(names))


def read_weak(path, classes: Sequence[str] | None = None
              ) -> tuple[list[str], list[list[str]]]:
    """A weak labels file: (filenames, each clip's labels). With `classes`, any other label is
    an error."""
    names, labels = [], []
    first: dict[str, int] = {}  # clip -> its line
    for number, row in _rows(path, WEAK_HEADER):
        where = f"{path}:{number}"
        name, field = _fields(where, row, 2)
        if name in first:  # which of two label sets is right cannot be known
            raise EventFileError(f"{where}: {name} is listed again (first at line "
                                 f"{first[name]}); a weak labels file lists each clip once")
        first[name] = number
        names.append(name)
        labels.append([_label(x.strip(), classes, where) for x in field.split(",") if x.strip()])
    return names, labels


def read_filenames(path) -> list[str]:
    """A file listing clips (header `filename`): their names."""
    return [_fields(f"{path}:{number}", row, 1)[0]
            for number, row in _rows(path, FILENAMES_HEADER)]


def read_durations(path) -> dict[str, float]:
    """A durations file: {filename: seconds}."""
    durations = {}
    for number, row in _rows(path, DURATIONS_HEADER):
        name, value = _fields(f"{path}:{number}", row, 2)
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds >= 0):
            raise EventFileError(f"{path}:{number}: duration must be a number of seconds, got "
                                 f"{value!r}")
        durations[name] = seconds
    return durations


def format_events(events: Sequence[Mapping[str, Any]], filenames: Sequence[str],
                  extra: Sequence[str] = ()) -> str:
    """An events file's text: the header (plus `extra` columns, numbers each event carries),
    then per file, in the order of `filenames`, its events by onset, offset and label, or one
    row with empty fields when it has none. Events of files not in `filenames` come last.
    Numbers with 3 decimals."""
    by_file: dict[str, list[Mapping[str, Any]]] = {name: [] for name in filenames}
    for event in events:
        by_file.setdefault(event["filename"], []).append(event)
    columns = (*HEADER, *extra)
    lines = ["\t".join(columns)]
    for name, rows in by_file.items():
        if not rows:  # as metadata/test/test.csv marks a clip with no event
            lines.append(name + "\t" * (len(columns) - 1))
        for e in sorted(rows, key=lambda e: (e["onset"], e["offset"], e["event_label"])):
            numbers = [f"{e[key]:.3f}" for key in ("onset", "offset", *extra)]
            lines.append("\t".join([name, *numbers[:2], e["event_label"], *numbers[2:]]))
    return "\n".join(lines) + "\n"


def write_events(path: str | os.PathLike, events: Sequence[Mapping[str, Any]],
                 filenames: Sequence[str]) -> None:
    """Writes an events file (format_events) atomically: a crash never leaves half of one."""
    files.write_text(path, format_events(events, filenames))
    listed = {*filenames, *(e["filename"] for e in events)}
    logging.info("Wrote %d events for %d files to %s", len(events), len(listed), path)
