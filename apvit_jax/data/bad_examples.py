"""Examples that cannot be read: a streamed split whose read raises for one example (a truncated JPEG, a
shard with a bad block, a network file system that keeps failing) stops the run with an error naming the
example, or, with `data.skip_bad_examples`, has that example replaced and counted.

A replacement never moves another example: the unreadable index i is served by the first readable one of
i+1, i+2, ... (mod N), in its place, so every other position of every batch (and the batch order of the
rest of the run) is what it would have been. A read is retried twice before an example counts as bad
(transient I/O errors pass). Resident splits are in memory and never fail mid-run; they are not wrapped.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import ClassVar

import numpy as np

from apvit_jax.data.types import DataError

RETRY_SECONDS = (0.05, 0.5)   # waits before the second and third attempt of one example
MAX_REPLACEMENT_TRIES = 64    # unreadable neighbours in a row before a skipping run stops anyway


@dataclasses.dataclass
class GuardedSplit:
  """A streamed split whose unreadable examples raise `DataError` or are replaced (see module docstring).

  split: the streamed split (`types.SplitSource`, `resident = False`); name: e.g. "tfds:imagenet2012
  train", used in messages; skip: data.skip_bad_examples. `get(indices)` -> (images (B, H, W, C) uint8,
  labels), as the wrapped split's. `bad` maps each unreadable index seen so far to its error,
  `replacement` each to the index that serves in its place.
  """
  split: object
  name: str
  skip: bool
  bad: dict = dataclasses.field(default_factory=dict)
  replacement: dict = dataclasses.field(default_factory=dict)
  resident: ClassVar[bool] = False

  def __post_init__(self):
    self._lock = threading.Lock()

  def __getstate__(self):   # sent to grain worker processes (data/host_pipeline.py): without the lock
    return {k: v for k, v in self.__dict__.items() if k != "_lock"}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def learn(self, bad: dict, replacement: dict) -> None:
    """Merges what a copy of this split (in a worker process) found unreadable and replaced."""
    with self._lock:
      self.bad.update(bad)
      self.replacement.update(replacement)

  def __len__(self):
    return len(self.split)

  @property
  def image_shape(self):
    return self.split.image_shape

  @property
  def bad_count(self) -> int:
    """How many distinct examples were found unreadable (and replaced) so far."""
    return len(self.bad)

  def get(self, indices):
    indices = np.asarray(indices)
    served = np.array([self.replacement.get(int(i), int(i)) for i in indices])
    try:
      return self.split.get(served)
    except Exception:   # some example of the batch failed: find which, one by one, then read again
      served = np.array([self._readable(int(i)) for i in served])
    try:
      return self.split.get(served)
    except Exception as e:   # each example read alone, but not the batch: name the batch
      raise DataError(f"reading a batch of {self.name} (indices {served.tolist()[:8]}...) failed although "
                      f"each of its examples reads alone: {type(e).__name__}: {e}") from e

  def _readable(self, index: int) -> int:
    """`index` if it reads, else its replacement (skip) or a DataError naming it."""
    for k in range(MAX_REPLACEMENT_TRIES + 1):
      other = (index + k) % len(self.split)
      if other in self.bad:
        continue
      try:
        self._read_with_retries(other)
      except Exception as e:
        self._found_bad(other, e)   # raises unless skipping
        continue
      if other != index:
        with self._lock:
          self.replacement[index] = other
      return other
    raise DataError(f"{MAX_REPLACEMENT_TRIES} examples of {self.name} after index {index} in a row cannot be "
                    f"read ({self.bad_count} bad so far); the data looks damaged beyond single examples")

  def _read_with_retries(self, index: int):
    for wait in RETRY_SECONDS:
      try:
        return self.split.get(np.array([index]))
      except Exception:
        time.sleep(wait)
    return self.split.get(np.array([index]))

  def _found_bad(self, index: int, error: Exception) -> None:
    where = getattr(self.split, "where", lambda i: "")(index)
    what = f"example {index} of {self.name}{f' ({where})' if where else ''}"
    if not self.skip:
      raise DataError(f"reading {what} failed after {len(RETRY_SECONDS) + 1} attempts: "
                      f"{type(error).__name__}: {error}. Repair or remove it, or set "
                      f"--config.data.skip_bad_examples=True to replace unreadable examples by the next "
                      f"readable one (counted as bad_examples in the logs)") from error
    with self._lock:
      first = index not in self.bad
      self.bad[index] = f"{type(error).__name__}: {error}"
    if first:
      print(f"skipping unreadable {what}: {type(error).__name__}: {error} "
            f"({self.bad_count} skipped so far)", flush=True)


def guard(dataset, skip: bool):
  """The dataset with its streamed splits wrapped in `GuardedSplit`; resident splits unchanged."""
  for split_name in ("train", "test"):
    split = getattr(dataset, split_name)
    if not split.resident:
      setattr(dataset, split_name, GuardedSplit(split, f"{dataset.name} {split_name}", skip))
  return dataset
