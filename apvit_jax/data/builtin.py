"""Datasets built in, with no files and no download: random "synthetic:HxWxC:CLASSES" images, the
cluttered digits (scikit-learn's bundled 8×8 digits on a canvas), and those digits at 28×28."""
from __future__ import annotations

import functools
import gzip
import importlib.util
import pathlib

import numpy as np

from apvit_jax.data.types import Dataset, Split


@functools.lru_cache(maxsize=1)
def bundled_digits() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's bundled 8×8 digits (what `sklearn.datasets.load_digits` returns): images (1797, 8, 8)
  float64 in 0..16, labels (1797,) int. Read from the file scikit-learn ships, without importing
  scikit-learn (2.4 s of every start of a process on a small CPU); load_digits where the file is absent."""
  spec = importlib.util.find_spec("sklearn")   # finds the package without running it
  for folder in (spec.submodule_search_locations or []) if spec else []:
    path = pathlib.Path(folder) / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
      with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",")
      return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
  from sklearn.datasets import load_digits
  d = load_digits()
  return d.images, d.target


def synthetic(name: str, num_train: int, num_test: int, seed: int = 0) -> Dataset:
  """"synthetic:HxWxC:CLASSES" -> uniformly random uint8 images and labels, for benchmarks and trying a
  config's shapes without data (throughput does not depend on pixel values)."""
  try:
    shape, classes = name.split(":")[1:]
    h, w, c = (int(v) for v in shape.lower().split("x"))
    classes = int(classes)
    if min(h, w, c, classes, num_train, num_test) < 1:
      raise ValueError
  except ValueError:
    raise ValueError(f"data.name={name!r}: expected 'synthetic:HxWxC:CLASSES' with positive sizes, e.g. "
                     f"'synthetic:32x32x3:10' (and num_train, num_test >= 1)") from None
  rng = np.random.default_rng(seed)
  split = lambda n: Split(rng.integers(0, 256, (n, h, w, c), np.uint8), rng.integers(0, classes, n).astype(np.int32))
  return Dataset(split(num_train), split(num_test), classes, name)


def cluttered_digits(seed: int = 0, num_train: int = 10_000, num_test: int = 2_000, canvas: int = 40,
                     scale: int = 2, clutter: int = 6, fragment: int = 5) -> Dataset:
  """Cluttered digits from scikit-learn's bundled 8×8 digits: no download, deterministic by seed.

  Each example: one digit upscaled `scale`× (bilinear) at a random position on a `canvas`² black canvas,
  plus `clutter` random fragment² crops of other digits at random positions, like the cluttered-MNIST
  task of the spatial-transformer paper. Train and test draw from disjoint source digits.
  """
  images, targets = bundled_digits()
  src = (images / 16.0).astype(np.float32)  # (1797, 8, 8) in [0, 1]
  size = 8 * scale
  if canvas < size:
    raise ValueError(f"cluttered_digits: canvas {canvas} is smaller than a digit ({size})")
  # Bilinear upscaling with a separable interpolation matrix (align_corners=False semantics).
  pos = (np.arange(size) + 0.5) / scale - 0.5
  lo = np.clip(np.floor(pos).astype(int), 0, 7)
  hi = np.clip(lo + 1, 0, 7)
  frac = np.clip(pos - np.floor(pos), 0, 1) * (pos > 0) * (pos < 7) + (pos >= 7)
  m = np.zeros((size, 8), np.float32)
  m[np.arange(size), lo] += 1 - frac
  m[np.arange(size), hi] += frac
  big = np.einsum("ij,njk,lk->nil", m, src, m)
  order = np.random.default_rng(seed).permutation(len(src))
  n_test_src = len(src) // 5
  sources = {"test": order[:n_test_src], "train": order[n_test_src:]}

  def make(split_seed, pool, n):
    rng = np.random.default_rng([seed, split_seed])
    out = np.zeros((n, canvas, canvas), np.float32)
    for i in range(n):
      for _ in range(clutter):
        j = rng.choice(pool)
        r, c = rng.integers(0, size - fragment + 1, 2)
        y, x = rng.integers(0, canvas - fragment + 1, 2)
        frag = big[j, r:r + fragment, c:c + fragment]
        out[i, y:y + fragment, x:x + fragment] = np.maximum(out[i, y:y + fragment, x:x + fragment], frag)
    labels = np.empty(n, np.int32)
    for i in range(n):
      j = rng.choice(pool)
      y, x = rng.integers(0, canvas - size + 1, 2)
      out[i, y:y + size, x:x + size] = np.maximum(out[i, y:y + size, x:x + size], big[j])
      labels[i] = targets[j]
    return Split((np.clip(out, 0, 1) * 255).round().astype(np.uint8)[..., None], labels)

  return Dataset(make(1, sources["train"], num_train), make(2, sources["test"], num_test), 10,
                 "cluttered_digits")




def digits_28() -> Dataset:
  """scikit-learn's 8×8 digits upscaled 3× and padded to 28×28 (MNIST's size), a fixed 80/20 split."""
  digit_images, targets = bundled_digits()
  big = np.pad(np.kron(digit_images / 16.0, np.ones((3, 3))), ((0, 0), (2, 2), (2, 2)))  # 8 -> 24 -> 28
  images = (big * 255).round().astype(np.uint8)[..., None]
  order = np.random.default_rng(0).permutation(len(images))
  test, train = order[:len(order) // 5], order[len(order) // 5:]
  labels = targets.astype(np.int32)
  return Dataset(Split(images[train], labels[train]), Split(images[test], labels[test]), 10, "builtin_digits")
