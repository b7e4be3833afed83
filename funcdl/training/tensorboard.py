"""TensorBoard event files without TensorBoard: scalars written in its record format by hand.

An event file is a sequence of records ``len (uint64) | masked CRC-32C of len | data | masked CRC-32C of data``,
each ``data`` an ``Event`` protocol buffer: ``wall_time`` (field 1, double), ``step`` (2, int64) and either
``file_version`` (3, string; the first record) or a ``Summary`` (5) holding ``Value``s of ``tag`` (1, string) and
``simple_value`` (2, float). Encoding those few fields needs no protobuf library, so ``--tensorboard`` costs
nothing to install; ``tensorboard --logdir RUN_DIR`` reads the files.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

__all__ = ["EventWriter", "crc32c"]


def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum TFRecord files use."""
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _masked(data: bytes) -> bytes:
    c = crc32c(data)
    return struct.pack("<I", (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:        # a length-delimited field
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(step: int, body: bytes) -> bytes:
    return b"\x09" + struct.pack("<d", time.time()) + b"\x10" + _varint(step) + body


class EventWriter:
    """Appends scalar summaries to ``DIR/events.out.tfevents.<time>.<host>``."""

    def __init__(self, folder):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
        self._write(_event(0, _field(3, b"brain.Event:2")))

    def _write(self, data: bytes):
        header = struct.pack("<Q", len(data))
        with open(self.path, "ab") as f:
            f.write(header + _masked(header) + data + _masked(data))

    def scalars(self, step: int, values: dict, prefix: str = ""):
        """One event at ``step`` with a scalar per (finite or not) number in ``values``, tagged ``prefix + key``."""
        summary = b"".join(
            _field(1, _field(1, f"{prefix}{k}".encode()) + b"\x15" + struct.pack("<f", float(v)))
            for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool))
        if summary:
            self._write(_event(int(step), _field(5, summary)))
