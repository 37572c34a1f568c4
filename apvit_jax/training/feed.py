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


def train_batch_maker(run, *, on_host: bool = False, steps_per_call: int = 1):
  """-> make_batch(step): this host's slice of the step's global training batch, sharded over the devices
  (left on the host with on_host, for a family's host-side step), made here. With several replicas each
  draws its own batch from its own seed, stacked on axis 1: leaves (b, K, ...) (training/replicas.py).
  steps_per_call > 1: the batch of the call of that many steps from `step`, steps stacked on axis 1."""
  make = host_pipeline.CallBatch(train_host_batch(run))
  one = lambda step: make(tuple(range(step, step + steps_per_call)))
  return one if on_host else lambda step: run.par.shard(one(step))


def epoch_end(step: int, steps_per_epoch: int, end: int) -> int:
  """The step at which the epoch holding `step` ends (the run evaluates and saves there), at most `end`."""
  return min((step // steps_per_epoch + 1) * steps_per_epoch, end)


def call_plan(first: int, end: int, steps_per_epoch: int, steps_per_call: int) -> list[tuple]:
  """Steps first..end-1 cut into the calls the training loop makes: steps_per_call steps per compiled call
  where they fit before the epoch's end, else one (config.steps_per_call); calls never cross an epoch's end."""
  calls, step = [], first
  while step < end:
    n = steps_per_call if step + steps_per_call <= epoch_end(step, steps_per_epoch, end) else 1
    calls.append(tuple(range(step, step + n)))
    step += n
  return calls


def train_batches(run, first: int, end: int, *, on_host: bool = False, steps_per_call: int = 1) -> "OneAhead":
  """The training batches of steps first..end-1 in order, as `train_batch_maker` makes them, streamed
  splits' in grain workers (data.workers), each shipped to the devices while the previous call runs.
  With steps_per_call > 1, one batch per call of `call_plan`: its steps' batches stacked on axis 1."""
  split = run.dataset.train
  calls = call_plan(first, end, run.steps_per_epoch, steps_per_call)
  host_batches = _host_batches(run, host_pipeline.CallBatch(train_host_batch(run)), calls, split)
  return OneAhead(host_batches, (lambda b: b) if on_host else run.par.shard, calls)


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
  """The batches of `calls` (tuples of steps, in order) from `host_batches` (an iterator, one per call),
  each passed through `ship` (sharding onto the devices) in a background thread while the device runs
  the call before."""

  def __init__(self, host_batches, ship, calls: list[tuple]):
    self._host_batches, self._ship, self._calls = iter(host_batches), ship, list(calls)
    self._index = 0
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    self._next = self._pool.submit(self._make) if self._calls else None

  def _make(self):
    return self._ship(next(self._host_batches))

  def take(self, step: int) -> tuple[tuple, dict]:
    """-> (the steps of the call starting at `step`, its batch, the one made ahead); starts making the next."""
    if self._next is None or self._calls[self._index][0] != step:
      expected = self._calls[self._index][0] if self._next is not None else "none (all taken)"
      raise RuntimeError(f"batches are taken in step order: expected step {expected}, asked for {step}")
    steps, batch = self._calls[self._index], self._next.result()
    self._index += 1
    self._next = self._pool.submit(self._make) if self._index < len(self._calls) else None
    return steps, batch

  def close(self) -> None:
    """Waits for the batch in flight, then stops the pipeline (and its worker processes)."""
    self._pool.shutdown()
    close = getattr(self._host_batches, "close", None)
    if close is not None:
      close()
