"""A light TensorBoard scalar writer: event files in TensorBoard's format without TensorFlow.

An event file is a sequence of TFRecords (length, masked CRC32-C of the length, payload, masked CRC32-C of
the payload); each payload is an `Event` protocol buffer. We write only what TensorBoard needs for
curves: the file-version event, scalar summaries (Event{wall_time, step, summary{value{tag,
simple_value}}}) and, for multi-seed runs, a Custom Scalars layout that draws each mean with a band of
one standard deviation; encoded by hand (a few varints), so nothing beyond the standard library is needed.

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


def encode_margin_layout(wall_time: float, charts: list[tuple[str, str, str]]) -> bytes:
  """An Event holding a Custom Scalars layout with one margin chart (a value line in a band) per
  (value, lower, upper) tag triple, in one category.

  Summary.Value: 1 tag "custom_scalars__config__", 9 metadata (SummaryMetadata: 1 plugin_data (PluginData:
  1 plugin_name "custom_scalars")), 8 tensor (TensorProto: 1 dtype DT_STRING = 7, 2 tensor_shape (scalar),
  8 string_val: the Layout). Layout: 2 category (Category: 1 title, 2 chart (Chart: 1 title, 3 margin
  (MarginChartContent: 1 series (Series: 1 value, 2 lower, 3 upper))))."""
  text = lambda number, value: _field(number, 2, value.encode())
  chart = lambda value, lower, upper: _field(2, 2, text(1, value) + _field(3, 2, _field(1, 2, (
      text(1, value) + text(2, lower) + text(3, upper)))))
  layout = _field(2, 2, text(1, "mean ± sd over seeds") + b"".join(chart(*c) for c in charts))
  tensor = _field(1, 0, _varint(7)) + _field(2, 2, b"") + _field(8, 2, layout)
  metadata = _field(1, 2, text(1, "custom_scalars"))
  value = text(1, "custom_scalars__config__") + _field(9, 2, metadata) + _field(8, 2, tensor)
  event = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(0))
  return event + _field(5, 2, _field(1, 2, value))


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

  def margin_layout(self, charts: list[tuple[str, str, str]]) -> None:
    """(value, lower, upper) tag triples drawn as bands in the Custom Scalars tab (the latest layout of
    a run is the one shown)."""
    with open(self.path, "ab") as f:
      f.write(record(encode_margin_layout(time.time(), charts)))
