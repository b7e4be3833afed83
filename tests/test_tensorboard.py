"""--tensorboard: event files in TensorBoard's record format, written without TensorBoard."""

import struct

import pytest

from funcdl.training.loop import train
from funcdl.training.tensorboard import EventWriter, crc32c


def _records(path):
    """Read back the records, checking each length and data checksum."""
    data, out, i = path.read_bytes(), [], 0
    masked = lambda b: ((((c := crc32c(b)) >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF  # noqa: E731
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        assert struct.unpack("<I", data[i + 8:i + 12])[0] == masked(data[i:i + 8])
        body = data[i + 12:i + 12 + n]
        assert struct.unpack("<I", data[i + 12 + n:i + 16 + n])[0] == masked(body)
        out.append(body)
        i += 16 + n
    return out


def test_crc32c_known_value():
    assert crc32c(b"123456789") == 0xE3069283


def test_records_are_well_formed(tmp_path):
    w = EventWriter(tmp_path)
    w.scalars(3, {"loss": 0.5, "name": "skipped", "flag": True})
    first, second = _records(w.path)
    assert b"brain.Event:2" in first
    assert b"loss" in second and struct.pack("<f", 0.5) in second and b"name" not in second


def test_training_writes_events_tensorboard_can_read(tmp_path):
    from test_train import blobs, cfg, mlp_task

    train(mlp_task(), blobs(), cfg(epochs=2, tensorboard=True), tmp_path)
    (events,) = tmp_path.glob("events.out.tfevents.*")
    assert len(_records(events)) > 3
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert {"train/loss", "train/lr", "val/loss", "val/accuracy"} <= set(acc.Tags()["scalars"])
    losses = acc.Scalars("train/loss")
    assert [e.step for e in losses] == sorted(e.step for e in losses) and losses[-1].value < losses[0].value
