"""A light TensorBoard scalar writer: event files in TensorBoard's format without TensorFlow.

An event file is a sequence of TFRecords (length, masked CRC32-C of the length, payload, masked CRC32-C of
the payload); each payload is an `Event` protocol buffer. We write only the two kinds TensorBoard needs
for curves: the file-version event and scalar summaries (Event{wall_time, step, summary{value{tag,
simple_value}}}), encoded by hand (a few varints), so nothing beyond the standard library is needed.

  tensorboard --logdir WORKDIR/tensorboard
"""
from __future__ import annotations

import pathlib
import socket
import struct
import time


def _crc32c_table() -> list[int]:
  table = []
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), as TFRecord uses."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  out = bytearray()
  n &= (1 << 64) - 1
  while True:
    byte, n = n & 0x7F, n >> 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
  key = _varint(number << 3 | wire)
  if wire == 2:  # length-delimited
    return key + _varint(len(payload)) + payload
  return key + payload


def encode_event(wall_time: float, step: int, *, file_version: str | None = None,
                 scalars: dict[str, float] | None = None) -> bytes:
  """Event: 1 wall_time (double), 2 step (int64), 3 file_version (string), 5 summary (Summary).
  Summary: 1 value (repeated Value). Value: 1 tag (string), 2 simple_value (float)."""
  event = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step))
  if file_version is not None:
    event += _field(3, 2, file_version.encode())
  if scalars:
    values = b"".join(_field(1, 2, _field(1, 2, tag.encode()) + _field(2, 5, struct.pack("<f", value)))
                      for tag, value in scalars.items())
    event += _field(5, 2, values)
  return event


def record(payload: bytes) -> bytes:
  length = struct.pack("<Q", len(payload))
  return length + struct.pack("<I", masked_crc32c(length)) + payload + struct.pack("<I", masked_crc32c(payload))


class EventWriter:
  """Appends scalar events to a new `events.out.tfevents.*` file under `logdir`."""

  def __init__(self, logdir: str | pathlib.Path):
    logdir = pathlib.Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    self.path = logdir / f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{time.monotonic_ns()}"
    with open(self.path, "ab") as f:
      f.write(record(encode_event(now, 0, file_version="brain.Event:2")))

  def scalars(self, step: int, values: dict[str, float]) -> None:
    with open(self.path, "ab") as f:
      f.write(record(encode_event(time.time(), step, scalars=values)))
