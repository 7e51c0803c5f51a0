"""Tests of sedjax.reporting.tensorboard: the hand-written event files read back, by us and TensorBoard."""

import struct

import numpy as np
import pytest

from sedjax.reporting import tensorboard


def test_crc32c_known_values():
    # RFC 3720 (iSCSI) test vectors and the usual check value
    assert tensorboard.crc32c(b"123456789") == 0xE3069283
    assert tensorboard.crc32c(bytes(32)) == 0x8A9136AA
    assert tensorboard.crc32c(bytes([0xFF] * 32)) == 0x62A8AB43
    assert tensorboard.crc32c(bytes(range(32))) == 0x46DD794E


def write_some(logdir):
    points = {"train/loss": [(0, 0.75), (1, 0.5), (2, 0.25)],
              "val/score": [(0, 0.125), (1, 0.3), (2, -1.5e-3)],
              "lr": [(7, 3e-3), (-2, 1.0), (2**40, 12345.678)]}
    with tensorboard.SummaryWriter(logdir) as w:
        for tag, series in points.items():
            for step, value in series:
                w.scalar(tag, value, step)
    return points


def f32(x):
    return float(np.float32(x))


def test_write_and_read_back(tmp_path):
    points = write_some(tmp_path)
    files = tensorboard.event_files(tmp_path)
    assert len(files) == 1 and files[0].name.startswith("events.out.tfevents.")
    events = list(tensorboard.read_events(files[0]))
    assert events[0]["file_version"] == "brain.Event:2"
    got = tensorboard.read_scalars(tmp_path)
    assert got == {tag: [(s, f32(v)) for s, v in series] for tag, series in points.items()}


def test_second_writer_makes_second_file_and_truncated_tail_is_tolerated(tmp_path):
    with tensorboard.SummaryWriter(tmp_path) as w:
        w.scalars({"a": 1.0, "b": 2.0}, step=1, prefix="x/")
    with tensorboard.SummaryWriter(tmp_path) as w:
        w.scalar("x/a", 3.0, 2)
        w.flush()
        path = w.path
    assert len(tensorboard.event_files(tmp_path)) == 2
    assert tensorboard.read_scalars(tmp_path) == {"x/a": [(1, 1.0), (2, 3.0)], "x/b": [(1, 2.0)]}
    # a writer killed mid-record: the whole records before it still read
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    assert tensorboard.read_scalars(tmp_path) == {"x/a": [(1, 1.0)], "x/b": [(1, 2.0)]}
    # a flipped byte inside a record is an error, not silently wrong numbers
    bad = bytearray(data)
    bad[-6] ^= 0xFF
    path.write_bytes(bytes(bad))
    with pytest.raises(tensorboard.CorruptEventFile):
        tensorboard.read_scalars(tmp_path)


def test_record_framing_by_hand(tmp_path):
    with tensorboard.SummaryWriter(tmp_path) as w:
        w.scalar("t", 0.5, 3, wall_time=100.0)
    data = w.path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    first = data[12: 12 + n]
    second = data[12 + n + 4:]
    (m,) = struct.unpack("<Q", second[:8])
    assert struct.unpack("<I", second[8:12])[0] == tensorboard.masked_crc32c(second[:8])
    payload = second[12: 12 + m]
    assert struct.unpack("<I", second[12 + m: 16 + m])[0] == tensorboard.masked_crc32c(payload)
    # Event{wall_time: 100.0, step: 3, summary{value{tag: "t", simple_value: 0.5}}}
    assert payload == (b"\x09" + struct.pack("<d", 100.0) + b"\x10\x03"
                       + b"\x2a\x0a" + b"\x0a\x08" + b"\x0a\x01t" + b"\x15"
                       + struct.pack("<f", 0.5))
    assert b"brain.Event:2" in first
    assert len(data) == 12 + n + 4 + 12 + m + 4


def test_tensorboard_reads_the_same_scalars(tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator")
    points = write_some(tmp_path)
    acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == sorted(points)
    for tag, series in points.items():
        got = [(e.step, e.value) for e in acc.Scalars(tag)]  # in file order
        assert got == [(s, f32(v)) for s, v in series], tag
