"""Deterministic batch order: the global batch at step s depends only on (seed, s), so a resumed
run, or a run on another number of devices or hosts, sees the same examples in the same places."""
from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=2)
def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32)


def train_indices(seed: int, step: int, n: int, global_batch: int) -> np.ndarray:
  """Dataset indices of the global batch at `step` (drops each epoch's last partial batch)."""
  steps_per_epoch = n // global_batch
  if steps_per_epoch == 0:
    raise ValueError(f"global batch {global_batch} is larger than the training set ({n} examples)")
  epoch, i = divmod(step, steps_per_epoch)
  return epoch_permutation(seed, epoch, n)[i * global_batch:(i + 1) * global_batch]


def eval_batches(n: int, global_batch: int):
  """Yields (indices, mask) covering 0..n-1 in order, the last batch padded with masked repeats."""
  for start in range(0, n, global_batch):
    idx = np.arange(start, start + global_batch)
    mask = idx < n
    yield np.where(mask, idx, 0).astype(np.int32), mask


def host_slice(global_array: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
  """This host's contiguous share of a global batch."""
  per_host = len(global_array) // process_count
  return global_array[process_index * per_host:(process_index + 1) * per_host]
