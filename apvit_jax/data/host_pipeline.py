"""Host batches of streamed splits (tfds read from disk, Megapixel canvases, upscaled digits), made by grain
in worker processes (`data.workers`), in step order.

A pipeline is `grain.MapDataset.source(items).map(make)`: items are training steps (or evaluation
batches) and `make(item)` returns this host's slice of that global batch as NumPy arrays. Which examples a
step holds is decided by `batches.py` from (seed, step) alone, so the batch at step s is the same with any
number of workers, and a resumed run starts the pipeline at its first step. With W > 0 workers, grain's
`mp_prefetch` hands item i to worker i mod W (spawned processes; NumPy, grain and this package's data
modules only, no JAX) and yields the items back in order; with 0 everything runs in the calling process.

Unreadable examples (`bad_examples.GuardedSplit`) are found in the workers; each batch comes back with the
worker's record of them, which is merged into the training process's split so that counts and logs stay
where the trainer reads them.

Resident splits (in memory, put on every device once) need none of this: their batches are indices.
"""
from __future__ import annotations

import dataclasses
import gc
import os

import numpy as np

from apvit_jax.data import batches

MAX_AUTO_WORKERS = 16
MIN_CORES_FOR_WORKERS = 4   # below this, "auto" makes batches in the training process (see resolve_workers)
BUFFER_PER_WORKER = 2   # batches each worker makes ahead


def resolve_workers(requested: int, split) -> int:
  """data.workers -> the number of worker processes for `split`: 0 for a resident split; -1 ("auto"): one
  per CPU core this process may use, less one for the training process, at most MAX_AUTO_WORKERS, and
  none with fewer than MIN_CORES_FOR_WORKERS cores. A worker hands each batch over through shared memory
  (a copy into fresh pages: ~25 ms for a batch of 16 Megapixel canvases, 36 MB, on a 2-core machine), so
  on 2 cores 1 or 2 workers made batches 0.41-0.91x as fast as the training process does
  (bench/RESULTS.md). Where cores are many they should pay (not measured yet: no many-core host here)."""
  if split.resident:
    return 0
  if requested >= 0:
    return requested
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
  return min(MAX_AUTO_WORKERS, cores - 1) if cores >= MIN_CORES_FOR_WORKERS else 0


def host_batch(split, indices: np.ndarray, positions: np.ndarray, extra: dict | None = None) -> dict:
  """The examples at `indices` of `split`: {"position" (b,) int32, then "index" (b,) int32 for a resident
  split, or "images" (b, H, W, C) uint8 and "labels" for a streamed one, then `extra`}."""
  batch = {"position": positions.astype(np.int32)}
  if split.resident:
    batch["index"] = indices.astype(np.int32)
  else:
    batch["images"], batch["labels"] = split.get(indices)
  return {**batch, **(extra or {})}


def stack_batches(trees: list, axis: int = 1):
  """Equal-structured host batches (dicts of arrays, nested) -> one whose leaves gain an axis (replicas,
  or the steps of one call). `training/replicas.stack` does this for any pytree with jax.tree; workers
  must not import JAX."""
  if isinstance(trees[0], dict):
    return {k: stack_batches([t[k] for t in trees], axis) for k in trees[0]}
  return np.stack([np.asarray(t) for t in trees], axis)


@dataclasses.dataclass(frozen=True)
class Host:
  """Which share of every global batch this host reads (jax.process_index() / process_count(), read in the
  training process: workers never initialise JAX)."""
  index: int = 0
  count: int = 1

  def slice(self, global_array: np.ndarray) -> np.ndarray:
    return batches.host_slice(global_array, self.index, self.count)


@dataclasses.dataclass(frozen=True)
class TrainBatch:
  """step -> this host's slice of the global training batch of `step`. With several seeds, each draws its
  own batch from its own seed, stacked on axis 1: leaves (b, K, ...) (training/replicas.py)."""
  split: object
  seeds: tuple
  global_batch: int
  host: Host

  def __call__(self, step: int) -> dict:
    positions = self.host.slice(np.arange(self.global_batch))

    def one_seed(seed):
      indices = batches.train_indices(seed, int(step), len(self.split), self.global_batch)
      return host_batch(self.split, self.host.slice(indices), positions)
    if len(self.seeds) == 1:
      return one_seed(self.seeds[0])
    return stack_batches([one_seed(s) for s in self.seeds], axis=1)


@dataclasses.dataclass(frozen=True)
class CallBatch:
  """steps (a tuple) -> the training batches of those steps for one compiled call: one step's batch as
  `make` gives it, several stacked on axis 1 (leaves (b, k, ...), training/step.py `repeat_steps`)."""
  make: TrainBatch

  @property
  def split(self):
    return self.make.split

  def __call__(self, steps: tuple) -> dict:
    if len(steps) == 1:
      return self.make(steps[0])
    return stack_batches([self.make(s) for s in steps], axis=1)


@dataclasses.dataclass(frozen=True)
class EvalBatch:
  """(indices, mask) of a global evaluation batch (`batches.eval_batches`) -> this host's slice, with
  "mask" bool (b,)."""
  split: object
  host: Host

  def __call__(self, item) -> dict:
    indices, mask = item
    return host_batch(self.split, self.host.slice(indices), self.host.slice(np.arange(len(indices))),
                      {"mask": self.host.slice(mask)})


@dataclasses.dataclass(frozen=True)
class _WithBadExamples:
  """make(item) in a worker, returned with the worker's record of unreadable examples."""
  make: object

  def __call__(self, item):
    split = self.make.split
    return self.make(item), dict(getattr(split, "bad", {})), dict(getattr(split, "replacement", {}))


def iterate(make, items, workers: int):
  """Yields make(item) for each of `items` in order, made by `workers` grain worker processes (0: here).

  make: a `CallBatch` or `EvalBatch` (picklable; its split is sent to each worker once).
  """
  import grain  # only streamed data needs it
  from absl import flags
  if not flags.FLAGS.is_parsed():   # grain reads its options from absl flags (train.py parses them)
    flags.FLAGS.mark_as_parsed()
  ds = grain.MapDataset.source(items).map(_WithBadExamples(make))
  # No reading threads (grain's default is 16, each up to 500 elements ahead): an element is a whole batch,
  # a streamed split's `get` already reads its examples on a thread pool where that helps (tfds), and
  # the trainer ships one batch ahead. Each worker makes BUFFER_PER_WORKER batches ahead.
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  it = iter(ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                        per_worker_buffer_size=BUFFER_PER_WORKER)))
  try:
    for batch, bad, replacement in it:
      if workers and hasattr(make.split, "learn"):
        make.split.learn(bad, replacement)
      yield batch
  finally:
    close = getattr(it, "close", None)
    if close is not None:
      close()
    if workers:
      # A closed worker pool leaves its multiprocessing semaphores (50 for two workers) in reference
      # cycles. Freed by a later, arbitrary garbage collection, they can be finalised inside a call into
      # multiprocessing's resource tracker, which then warns "ResourceTracker called reentrantly ... might
      # leak" once per semaphore (CPython gh-109629). Freed here, nothing else is in progress.
      del it, ds, close
      gc.collect()
