"""Host batches per second of the streamed pipelines (data/host_pipeline.py), with the batches made in the
training process (data.workers=0, the path before grain workers existed) and in grain worker processes.

Workloads: Megapixel MNIST (canvases drawn on demand, `ips_megapixel_mnist`'s shape: batch 16 of 1500² x 1,
digits from the built-in pool) and a streamed tfds split (`tfds.testing.mock_data` for imagenet2012:
random-size uint8 images resized and centre-cropped to 224² on the host, batch 64; the mock's images are
generated, not JPEG-decoded, so real ImageNet costs more per image). Each row: seconds to the first batch
(worker start-up included) and batches/s over the rest, consumed as fast as they come (no device step),
with the sum of a few pixels of every batch so that all rows are seen to read the same batches, and the CPU
time the training process itself spends per batch (with workers: taking each batch out of shared memory).
"""
from __future__ import annotations

import time

from apvit_jax import base_config
from apvit_jax.data import host_pipeline, sources
from bench import common


def _megapixel(num_batches: int, batch: int = 16):
  c = base_config.base_config()
  c.data.name, c.data.digits, c.data.canvas = "megapixel_mnist", "builtin", 1500
  c.data.num_train, c.data.num_test = batch * num_batches, batch
  return sources.load(c.data).train, batch, "Megapixel MNIST 1500² canvases"


def _tfds_mock(num_batches: int, batch: int = 64):
  import tensorflow_datasets as tfds
  c = base_config.base_config()
  c.data.name, c.data.in_memory, c.data.image_size = "tfds:imagenet2012", False, 224
  with tfds.testing.mock_data(num_examples=batch * num_batches):
    return sources.load(c.data).train, batch, "tfds mock imagenet2012 -> 224²"


WORKLOADS = {"megapixel": _megapixel, "tfds": _tfds_mock}


def time_pipeline(split, batch: int, workers: int, num_batches: int) -> dict:
  make = host_pipeline.TrainBatch(split, (0,), batch, host_pipeline.Host())
  t0 = time.perf_counter()
  it = host_pipeline.iterate(make, range(num_batches), workers)
  first = next(it)
  t1, cpu1 = time.perf_counter(), time.process_time()
  checksum = int(first["images"][:, ::97, ::97].sum())
  for b in it:
    checksum += int(b["images"][:, ::97, ::97].sum())
  t2, cpu2 = time.perf_counter(), time.process_time()
  del first
  rest = num_batches - 1
  return {"first_batch_s": t1 - t0, "batches_per_s": rest / (t2 - t1), "images_per_s": rest * batch / (t2 - t1),
          # CPU time of this (the training) process per batch, its threads included: what is left of the
          # host's work in the training process; the workers' own time is not in it.
          "main_cpu_ms_per_batch": (cpu2 - cpu1) / rest * 1e3, "checksum": checksum}


def run(*, workloads=("megapixel", "tfds"), workers=(0, 1, 2), num_batches: int = 48) -> list[dict]:
  rows = []
  for name in workloads:
    split, batch, what = WORKLOADS[name](num_batches)
    for w in workers:
      print(f"... {what}, workers={w}", flush=True)
      rows.append({"workload": what, "batch": batch, "workers": w,
                   "where": "training process (before)" if w == 0 else f"{w} grain worker processes",
                   **time_pipeline(split, batch, w, num_batches)})
    base = next(r for r in rows if r["workload"] == what and r["workers"] == 0)
    for r in rows:
      if r["workload"] == what:
        r["vs_in_process"] = r["batches_per_s"] / base["batches_per_s"]
        assert r["checksum"] == base["checksum"], f"{what}: workers={r['workers']} read other batches"
  print(common.table(rows, [
      ("workload", "workload", ""), ("batch", "batch", "d"), ("where", "batches made in", ""),
      ("first_batch_s", "first batch s", ".2f"), ("batches_per_s", "batches/s", ".1f"),
      ("images_per_s", "images/s", ",.0f"), ("vs_in_process", "vs in-process", ".2f"),
      ("main_cpu_ms_per_batch", "training-process CPU ms/batch", ".1f")]))
  return rows


def auto_workers() -> int:
  """What data.workers=-1 resolves to on this machine for a streamed split."""
  streamed = type("Streamed", (), {"resident": False})()
  return host_pipeline.resolve_workers(-1, streamed)

