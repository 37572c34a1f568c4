"""Feeding batches: this host's slice of each global batch (batches.py decides which examples), built on
the host from a split (`types.SplitSource`), with the family's host-side step where it has one, then
sharded over the local devices. Resident splits live on every device once and batches carry indices;
streamed splits' batches carry the images. The next training batch is made while the current step runs.

A host batch: "position" int32 (b,) (each example's place in the global batch), then "index" int32 (b,)
for resident splits or "images" uint8 (b, H, W, C) and "labels" for streamed ones; eval batches add
"mask" bool (b,).
"""
from __future__ import annotations

import concurrent.futures

import jax
import numpy as np

from apvit_jax.data import batches
from apvit_jax.training import replicas


def device_data(par, split) -> dict:
  """A resident split's arrays on every device; {} for a streamed split (its batches carry images)."""
  return par.replicate(split.arrays()) if split.resident else {}


def host_batch(split, indices: np.ndarray, positions: np.ndarray, extra: dict | None = None) -> dict:
  batch = {"position": positions.astype(np.int32), **(extra or {})}
  if split.resident:
    batch["index"] = indices.astype(np.int32)
  else:
    batch["images"], batch["labels"] = split.get(indices)
  return batch


def _this_host(global_array: np.ndarray) -> np.ndarray:
  return batches.host_slice(global_array, jax.process_index(), jax.process_count())


def train_batch_maker(run, *, on_host: bool = False):
  """-> make_batch(step): this host's slice of the step's global training batch, sharded over the devices
  (left on the host with on_host, for a family's host-side step). With several replicas each draws its
  own batch from its own seed, stacked on axis 1: leaves (b, K, ...) (training/replicas.py)."""
  split, gb = run.dataset.train, run.config.batch_size
  positions = _this_host(np.arange(gb))

  def one_seed(seed: int, step: int) -> dict:
    return host_batch(split, _this_host(batches.train_indices(seed, step, len(split), gb)), positions)

  def make_batch(step: int) -> dict:
    if run.num_replicas == 1:
      batch = one_seed(run.seeds[0], step)
    else:
      batch = replicas.stack([one_seed(s, step) for s in run.seeds], axis=1)
    return batch if on_host else run.par.shard(batch)
  return make_batch


def eval_batches(run, split, state, inputs_key):
  """Yields the sharded eval batches covering `split` in order (the last one padded and masked); the
  family's host-side step, if any, selects with the replicated `state` and `inputs_key`."""
  select = run.host_inputs
  for idx, mask in batches.eval_batches(len(split), run.config.batch_size):
    batch = host_batch(split, _this_host(idx), _this_host(np.arange(len(idx))), {"mask": _this_host(mask)})
    if select:
      batch = select(batch, run.par.first_copy(state), inputs_key)
    yield run.par.shard(batch)


class OneAhead:
  """Makes batch s+1 in a background thread while the device runs step s (matters for streamed data)."""

  def __init__(self, make_batch, first: int, end: int):
    self._make, self._end = make_batch, end
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    self._next = self._pool.submit(make_batch, first) if first < end else None

  def take(self, step: int) -> dict:
    """The batch of `step` (the one made ahead), and starts making the next."""
    batch = self._next.result()
    self._next = self._pool.submit(self._make, step + 1) if step + 1 < self._end else None
    return batch

  def close(self) -> None:
    self._pool.shutdown()
