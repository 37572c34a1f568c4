"""Streamed splits for tests, in a module of their own (NumPy only) so that grain worker processes can
import them cheaply (tests/test_host_pipeline.py)."""
import numpy as np


class FlakySplit:
  """A streamed split of N random images; reading an index in `broken` raises, and one in `transient`
  raises on its first read only (then reads)."""
  resident = False

  def __init__(self, n=50, broken=(), transient=()):
    rng = np.random.default_rng(0)
    self.images = rng.integers(0, 256, (n, 4, 4, 1), dtype=np.uint8)
    self.labels = rng.integers(0, 10, n).astype(np.int32)
    self.broken, self.transient = set(broken), set(transient)
    self.reads = 0

  def __len__(self):
    return len(self.labels)

  @property
  def image_shape(self):
    return (4, 4, 1)

  def get(self, indices):
    self.reads += 1
    for i in map(int, indices):
      if i in self.broken:
        raise OSError(5, f"Input/output error reading record {i}")
      if i in self.transient:
        self.transient.discard(i)
        raise TimeoutError("read timed out")
    return self.images[indices], self.labels[indices]
