"""Feeding batches: this host's slice of each global batch (batches.py decides which examples), built on
the host from a split (`types.SplitSource`), with the family's host-side step where it has one, then
sharded over the local devices. Resident splits live on every device once and batches carry indices;
streamed splits' batches carry the images and are made by grain, in worker processes with data.workers
(data/host_pipeline.py). The next training batch is shipped to the devices while the current step runs.

A host batch: "position" int32 (b,) (each example's place in the global batch), then "index" int32 (b,)
for resident splits or "images" uint8 (b, H, W, C) and "labels" for streamed ones; eval batches add
"mask" bool (b,).
"""
from __future__ import annotations

import concurrent.futures

import jax

from apvit_jax.data import batches, host_pipeline


def device_data(par, split) -> dict:
  """A resident split's arrays on every device; {} for a streamed split (its batches carry images)."""
  return par.replicate(split.arrays()) if split.resident else {}


def _this_host() -> host_pipeline.Host:
  return host_pipeline.Host(jax.process_index(), jax.process_count())


def _workers(run, split) -> int:
  return host_pipeline.resolve_workers(run.config.data.workers, split)


def _host_batches(run, make, items, split):
  """make(item) for each item in order: in grain worker processes for a streamed split, here otherwise."""
  if split.resident:
    return map(make, items)
  return host_pipeline.iterate(make, items, _workers(run, split))


def train_host_batch(run) -> host_pipeline.TrainBatch:
  """step -> this host's slice of the step's global training batch, on the host (see host_pipeline.py)."""
  return host_pipeline.TrainBatch(run.dataset.train, tuple(run.seeds), run.config.batch_size, _this_host())


def train_batch_maker(run, *, on_host: bool = False):
  """-> make_batch(step): this host's slice of the step's global training batch, sharded over the devices
  (left on the host with on_host, for a family's host-side step), made here. With several replicas each
  draws its own batch from its own seed, stacked on axis 1: leaves (b, K, ...) (training/replicas.py)."""
  make = train_host_batch(run)
  return make if on_host else lambda step: run.par.shard(make(step))


def train_batches(run, first: int, end: int, *, on_host: bool = False) -> "OneAhead":
  """The training batches of steps first..end-1 in order, as `train_batch_maker` makes them, streamed
  splits' in grain workers (data.workers), each shipped to the devices while the previous step runs."""
  split = run.dataset.train
  host_batches = _host_batches(run, train_host_batch(run), range(first, end), split)
  return OneAhead(host_batches, (lambda b: b) if on_host else run.par.shard, first, end)


def eval_batches(run, split, state, inputs_key):
  """Yields the sharded eval batches covering `split` in order (the last one padded and masked); the
  family's host-side step, if any, selects with the replicated `state` and `inputs_key`."""
  select = run.host_inputs
  items = list(batches.eval_batches(len(split), run.config.batch_size))
  for batch in _host_batches(run, host_pipeline.EvalBatch(split, _this_host()), items, split):
    if select:
      batch = select(batch, run.par.first_copy(state), inputs_key)
    yield run.par.shard(batch)


class OneAhead:
  """Batches of steps first..end-1 from `host_batches` (an iterator, in step order), each passed through
  `ship` (sharding onto the devices) in a background thread while the device runs the step before."""

  def __init__(self, host_batches, ship, first: int, end: int):
    self._host_batches, self._ship, self._end = iter(host_batches), ship, end
    self._expected = first
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    self._next = self._pool.submit(self._make) if first < end else None

  def _make(self):
    return self._ship(next(self._host_batches))

  def take(self, step: int) -> dict:
    """The batch of `step` (the one made ahead), and starts making the next."""
    if step != self._expected or self._next is None:
      raise RuntimeError(f"batches are taken in step order: expected step {self._expected}, asked for {step}")
    batch = self._next.result()
    self._expected = step + 1
    self._next = self._pool.submit(self._make) if step + 1 < self._end else None
    return batch

  def close(self) -> None:
    """Waits for the batch in flight, then stops the pipeline (and its worker processes)."""
    self._pool.shutdown()
    close = getattr(self._host_batches, "close", None)
    if close is not None:
      close()
