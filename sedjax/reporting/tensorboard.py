"""TensorBoard scalars without TensorFlow: a small event-file writer and reader.

`SummaryWriter(logdir).scalar(tag, value, step)` appends to `<logdir>/events.out.tfevents.
<seconds>.<host>[.<n>]`, the file format TensorBoard reads (`tensorboard --logdir DIR`):

* TFRecord framing: uint64 length, uint32 masked CRC-32C of the length, the data, uint32 masked
  CRC-32C of the data (all little-endian; mask = rotate right 15 + 0xa282ead8);
* data = an `Event` protocol buffer (tensorflow/core/util/event.proto): wall_time (1, double),
  step (2, int64), file_version (3, string; "brain.Event:2" in the first event of a file) or
  summary (5) = Summary{value (1): Value{tag (1, string), simple_value (2, float)}}.

The protocol buffers are encoded by hand (no protobuf / TensorFlow dependency); CRC-32C is a
table-driven pure-Python implementation (a few microseconds per scalar).

Multi-process runs: write from one process only (the caller checks `jax.process_index() == 0`);
two writers in one directory make two files, which TensorBoard reads one after the other.

`read_scalars(logdir)` parses such files back into {tag: [(step, value), ...]}.
"""

from __future__ import annotations

import os
import pathlib
import socket
import struct
import time
from collections.abc import Iterator, Mapping

FILE_VERSION = "brain.Event:2"
_MASK_DELTA = 0xA282EAD8


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli, reflected
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of data, as TFRecord uses it."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 bits, add 0xa282ead8 (mod 2**32)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, data, its masked CRC."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + data
            + struct.pack("<I", masked_crc32c(data)))


# ---- protocol buffer encoding (the few field kinds Event needs) ------------------------------

def _varint(n: int) -> bytes:
    n &= 0xFFFFFFFFFFFFFFFF  # negative int64: ten-byte two's complement, as protobuf writes it
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _bytes_field(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def _event(wall_time: float, step: int, *, file_version: str | None = None,
           summary: bytes | None = None) -> bytes:
    out = _key(1, 1) + struct.pack("<d", float(wall_time))
    if step:
        out += _key(2, 0) + _varint(int(step))
    if file_version is not None:
        out += _bytes_field(3, file_version.encode("utf-8"))
    if summary is not None:
        out += _bytes_field(5, summary)
    return out


def _scalar_summary(tag: str, value: float) -> bytes:
    v = _bytes_field(1, tag.encode("utf-8")) + _key(2, 5) + struct.pack("<f", float(value))
    return _bytes_field(1, v)


class SummaryWriter:
    """Appends scalar summaries to a new TensorBoard event file in `logdir`.

    Call from one process only (the caller checks `jax.process_index() == 0`). Events are
    buffered: flush() (or close(), or more than flush_secs since the last flush at a write)
    puts them on disk. Usable as a context manager.
    """

    def __init__(self, logdir: str | os.PathLike, flush_secs: float = 10.0,
                 filename_suffix: str = ""):
        self.logdir = pathlib.Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        base = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
        path, n = self.logdir / (base + filename_suffix), 0
        while path.exists():  # two writers within one second
            n += 1
            path = self.logdir / f"{base}.{n}{filename_suffix}"
        self.path = path
        self._file = open(path, "xb")
        self._flush_secs = float(flush_secs)
        self._last_flush = time.time()
        self._file.write(_record(_event(time.time(), 0, file_version=FILE_VERSION)))
        self.flush()

    def scalar(self, tag: str, value: float, step: int, wall_time: float | None = None) -> None:
        """Adds one scalar point (tag, e.g. 'train/loss'; value; step, e.g. the epoch)."""
        if self._file is None:
            raise ValueError(f"SummaryWriter for {self.path} is closed")
        now = time.time()
        self._file.write(_record(_event(now if wall_time is None else wall_time, int(step),
                                        summary=_scalar_summary(str(tag), float(value)))))
        if now - self._last_flush > self._flush_secs:
            self.flush()

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        """scalar() for every (tag, value) of a mapping; tags get `prefix` (e.g. 'pass1/')."""
        for tag, value in values.items():
            self.scalar(prefix + str(tag), value, step)

    def flush(self) -> None:
        """Writes the buffered events to the file."""
        if self._file is not None:
            self._file.flush()
            self._last_flush = time.time()

    def close(self) -> None:
        """Flushes and closes the file; later calls do nothing."""
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._file = None

    def __enter__(self) -> "SummaryWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- reading -------------------------------------------------------------------------------

class CorruptEventFile(ValueError):
    """An event file whose record framing or checksums are wrong."""


def _records(path: pathlib.Path) -> Iterator[bytes]:
    """The TFRecord payloads of a file; a truncated last record (a killed writer) ends it."""
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        if pos + 12 > len(data):
            return
        length_bytes = data[pos: pos + 8]
        (length,) = struct.unpack("<Q", length_bytes)
        (length_crc,) = struct.unpack("<I", data[pos + 8: pos + 12])
        if masked_crc32c(length_bytes) != length_crc:
            raise CorruptEventFile(f"{path}: bad length checksum at byte {pos}")
        end = pos + 12 + length + 4
        if end > len(data):
            return
        payload = data[pos + 12: pos + 12 + length]
        (data_crc,) = struct.unpack("<I", data[end - 4: end])
        if masked_crc32c(payload) != data_crc:
            raise CorruptEventFile(f"{path}: bad data checksum at byte {pos}")
        yield payload
        pos = end


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of a protobuf message; value is int or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos: pos + 8], pos + 8
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos: pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos: pos + 4], pos + 4
        else:
            raise CorruptEventFile(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _int64(n: int) -> int:
    return n - (1 << 64) if n >= 1 << 63 else n


def read_events(path: str | os.PathLike) -> Iterator[dict]:
    """The events of one file: {'wall_time', 'step', and 'file_version' or 'scalars':
    [(tag, value)]} (summary values other than simple_value are skipped)."""
    for payload in _records(pathlib.Path(path)):
        event: dict = {"wall_time": 0.0, "step": 0}
        for field, wire, value in _fields(payload):
            if field == 1 and wire == 1:
                event["wall_time"] = struct.unpack("<d", value)[0]
            elif field == 2 and wire == 0:
                event["step"] = _int64(value)
            elif field == 3 and wire == 2:
                event["file_version"] = value.decode("utf-8")
            elif field == 5 and wire == 2:
                scalars = event.setdefault("scalars", [])
                for vf, vw, v in _fields(value):
                    if vf != 1 or vw != 2:
                        continue
                    tag, simple = None, None
                    for f, w, x in _fields(v):
                        if f == 1 and w == 2:
                            tag = x.decode("utf-8")
                        elif f == 2 and w == 5:
                            simple = struct.unpack("<f", x)[0]
                    if tag is not None and simple is not None:
                        scalars.append((tag, simple))
        yield event


def event_files(logdir: str | os.PathLike) -> list[pathlib.Path]:
    """The event files directly in logdir, in name (= creation time) order."""
    return sorted(p for p in pathlib.Path(logdir).iterdir()
                  if p.is_file() and "tfevents" in p.name)


def read_scalars(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every event file directly in logdir, in file order.

    Values come back as written, rounded to float32 (the format's simple_value).
    """
    out: dict[str, list[tuple[int, float]]] = {}
    for path in event_files(logdir):
        for event in read_events(path):
            for tag, value in event.get("scalars", ()):
                out.setdefault(tag, []).append((event["step"], value))
    return out
