"""TensorBoard event files without TensorFlow: CRC-32C test vector, TFRecord framing, and the Event /
Summary protocol buffers decoded back by a small independent parser."""
import struct

import numpy as np

from apvit_jax.training import tensorboard
from apvit_jax.training.metrics import MetricWriter


def read_varint(buf, i):
  shift = value = 0
  while True:
    b = buf[i]
    value |= (b & 0x7F) << shift
    i, shift = i + 1, shift + 7
    if not b & 0x80:
      return value, i


def parse(buf):
  """Protocol-buffer wire format -> {field: [values]} (bytes for length-delimited fields)."""
  out, i = {}, 0
  while i < len(buf):
    key, i = read_varint(buf, i)
    field, wire = key >> 3, key & 7
    if wire == 0:
      value, i = read_varint(buf, i)
    elif wire == 1:
      value, i = struct.unpack("<d", buf[i:i + 8])[0], i + 8
    elif wire == 5:
      value, i = struct.unpack("<f", buf[i:i + 4])[0], i + 4
    else:
      n, i = read_varint(buf, i)
      value, i = buf[i:i + n], i + n
    out.setdefault(field, []).append(value)
  return out


def read_events(path):
  data, i, events = path.read_bytes(), 0, []
  while i < len(data):
    (n,) = struct.unpack("<Q", data[i:i + 8])
    assert struct.unpack("<I", data[i + 8:i + 12])[0] == tensorboard.masked_crc32c(data[i:i + 8])
    payload = data[i + 12:i + 12 + n]
    assert struct.unpack("<I", data[i + 12 + n:i + 16 + n])[0] == tensorboard.masked_crc32c(payload)
    events.append(parse(payload))
    i += 16 + n
  return events


def test_crc32c_known_values():
  assert tensorboard.crc32c(b"123456789") == 0xE3069283  # the standard check value
  assert tensorboard.crc32c(b"") == 0


def test_metric_writer_writes_readable_scalar_events(tmp_path):
  writer = MetricWriter(tmp_path)
  writer.write(7, "train", {"loss": 2.5, "accuracy": 0.25, "note": "x"}, echo=None)
  writer.write(300, "test", {"accuracy": 0.875, "count": 40}, echo=None)
  (path,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
  events = read_events(path)
  assert events[0][3] == [b"brain.Event:2"]
  got = {}
  for e in events[1:]:
    for value in parse(e[5][0])[1]:
      v = parse(value)
      got[(e[2][0], v[1][0].decode())] = v[2][0]
  assert got.keys() == {(7, "train/loss"), (7, "train/accuracy"), (300, "test/accuracy"), (300, "test/count")}
  np.testing.assert_allclose([got[(7, "train/loss")], got[(300, "test/accuracy")], got[(300, "test/count")]],
                             [2.5, 0.875, 40.0])


def test_multi_seed_records_get_a_band_layout(tmp_path):
  """NAME_mean/NAME_sd pairs also go out as NAME_lower/_upper, and a Custom Scalars layout draws each
  mean inside its band (a margin chart); decoded here with the independent parser."""
  writer = MetricWriter(tmp_path)
  writer.write(4, "train", {"loss_mean": 2.0, "loss_sd": 0.25, "loss/seed0": 1.75, "lr": 0.1}, echo=None)
  writer.write(4, "test", {"accuracy_mean": 0.5, "accuracy_sd": 0.125}, echo=None)
  (path,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
  scalars, layouts = {}, []
  for e in read_events(path)[1:]:
    for value in parse(e[5][0])[1]:
      v = parse(value)
      if v[1][0] == b"custom_scalars__config__":
        assert parse(parse(v[9][0])[1][0])[1] == [b"custom_scalars"]
        tensor = parse(v[8][0])
        assert tensor[1] == [7]            # DT_STRING
        layouts.append(parse(tensor[8][0]))
      else:
        scalars[v[1][0].decode()] = v[2][0]
  np.testing.assert_allclose([scalars["train/loss_lower"], scalars["train/loss_upper"],
                              scalars["test/accuracy_lower"], scalars["test/accuracy_upper"]],
                             [1.75, 2.25, 0.375, 0.625])
  assert len(layouts) == 2   # one per new band: the latest holds both
  (category,) = [parse(c) for c in layouts[-1][2]]
  series = [parse(parse(parse(chart)[3][0])[1][0]) for chart in category[2]]
  assert [(s[1][0], s[2][0], s[3][0]) for s in series] == [
      (b"test/accuracy_mean", b"test/accuracy_lower", b"test/accuracy_upper"),
      (b"train/loss_mean", b"train/loss_lower", b"train/loss_upper")]
