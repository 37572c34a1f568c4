"""Large images drawn on demand from 28x28 digits, for IPS: Megapixel MNIST and MNIST upscaled.

Megapixel MNIST (the attention-sampling protocol of Katharopoulos & Fleuret 2019, used by IPS).

Each example is a black canvas (1500x1500 by default) with 50 noise patches drawn first (28x28 line
scribbles, from 50 patterns per dataset), then 5 non-overlapping 28x28 MNIST digits: 3 of a random target
class and 2 of other classes. Tasks:
  majority: the target class; max: the largest digit; top: the digit with the smallest row (topmost);
  multi: a 10-way multi-hot vector of the digits present.
Only a small layout record per example is stored; `get(indices)` draws the canvases on demand, so a
dataset of 5,000 canvases (11 GB as uint8) is never materialised. Deterministic by seed.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from apvit_jax.data.types import Dataset

TASKS = {"majority": (10, "softmax"), "max": (10, "softmax"), "top": (10, "softmax"), "multi": (10, "sigmoid")}
DIGIT = 28


def noise_patterns(rng: np.random.Generator, count: int = 50, size: int = DIGIT) -> np.ndarray:
  """`count` line-scribble patterns (count, size, size) uint8: a few random strokes each."""
  patterns = np.zeros((count, size, size), np.uint8)
  t = np.linspace(0.0, 1.0, 4 * size)
  for pattern in patterns:
    for _ in range(rng.integers(2, 5)):
      (x0, y0), (x1, y1) = rng.uniform(0, size - 1, (2, 2))
      xs = np.rint(x0 + (x1 - x0) * t).astype(int)
      ys = np.rint(y0 + (y1 - y0) * t).astype(int)
      pattern[ys, xs] = 255
  return patterns


@dataclasses.dataclass
class MegapixelSplit:
  """Layouts of n canvases over a pool of digits; `get(indices)` -> (images (B, S, S, 1) uint8,
  labels {task: (B,) int32, "multi": (B, 10) float32})."""
  digits: np.ndarray          # (pool, 28, 28) uint8 source digits
  noise: np.ndarray           # (50, 28, 28) uint8 patterns
  digit_ids: np.ndarray       # (n, 5) indices into digits
  digit_xy: np.ndarray        # (n, 5, 2) top-left (row, col) of each digit
  noise_ids: np.ndarray       # (n, K) pattern indices
  noise_xy: np.ndarray        # (n, K, 2)
  classes: np.ndarray         # (n, 5) class of each placed digit
  canvas: int
  resident: ClassVar[bool] = False

  def __len__(self):
    return len(self.digit_ids)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.canvas, self.canvas, 1)

  def draw(self, i: int) -> np.ndarray:
    image = np.zeros((self.canvas, self.canvas), np.uint8)
    for pattern, (r, c) in zip(self.noise_ids[i], self.noise_xy[i]):
      np.maximum(image[r:r + DIGIT, c:c + DIGIT], self.noise[pattern], out=image[r:r + DIGIT, c:c + DIGIT])
    for d, (r, c) in zip(self.digit_ids[i], self.digit_xy[i]):
      image[r:r + DIGIT, c:c + DIGIT] = self.digits[d]
    return image[..., None]

  def labels(self, indices) -> dict:
    cls, rows = self.classes[indices], self.digit_xy[indices, :, 0]
    multi = np.zeros((len(cls), 10), np.float32)
    np.put_along_axis(multi, cls, 1.0, axis=1)
    return {"majority": cls[:, 0].astype(np.int32), "max": cls.max(1).astype(np.int32),
            "top": np.take_along_axis(cls, rows.argmin(1)[:, None], 1)[:, 0].astype(np.int32), "multi": multi}

  def get(self, indices):
    indices = np.asarray(indices)
    return np.stack([self.draw(int(i)) for i in indices]), self.labels(indices)


def _non_overlapping_boxes(rng: np.random.Generator, canvas: int, count: int = 5, tries: int = 1000):
  """Top-left corners (count, 2) of non-overlapping DIGIT x DIGIT boxes by rejection sampling. A layout
  can leave no room for the last box on a small canvas, so a layout that gets stuck is drawn again."""
  for _ in range(tries):
    placed = []
    for _ in range(50 * count):
      r, c = rng.integers(0, canvas - DIGIT + 1, 2)
      if all(abs(r - r2) >= DIGIT or abs(c - c2) >= DIGIT for r2, c2 in placed):
        placed.append((r, c))
        if len(placed) == count:
          return np.array(placed)
  raise ValueError(f"megapixel canvas={canvas}: could not place {count} non-overlapping digits")


def make_split(images: np.ndarray, labels: np.ndarray, n: int, seed: int, canvas: int = 1500,
               num_noise: int = 50, noise: np.ndarray | None = None) -> MegapixelSplit:
  """Layouts for n canvases from a digit pool (images (pool, 28, 28) uint8, labels (pool,))."""
  if canvas < 4 * DIGIT:
    raise ValueError(f"megapixel canvas={canvas} is too small for 5 non-overlapping {DIGIT}x{DIGIT} digits")
  images = images.reshape(len(images), DIGIT, DIGIT) if images.ndim == 4 else images
  if images.shape[1:] != (DIGIT, DIGIT):
    raise ValueError(f"megapixel MNIST needs 28x28 digits, got {images.shape[1:]}")
  rng = np.random.default_rng(seed)
  noise = noise_patterns(rng) if noise is None else noise
  by_class = [np.flatnonzero(labels == k) for k in range(10)]
  if any(len(c) == 0 for c in by_class):
    raise ValueError("megapixel MNIST needs digits of all 10 classes in the source pool")
  digit_ids, digit_xy, classes = (np.zeros((n, 5, *s), np.int64) for s in ((), (2,), ()))
  for i in range(n):
    target = rng.integers(10)
    others = rng.choice(np.delete(np.arange(10), target), 2)
    cls = np.array([target] * 3 + list(others))
    classes[i] = cls
    digit_ids[i] = [rng.choice(by_class[k]) for k in cls]
    digit_xy[i] = _non_overlapping_boxes(rng, canvas)
  noise_ids = rng.integers(0, len(noise), (n, num_noise))
  noise_xy = rng.integers(0, canvas - DIGIT + 1, (n, num_noise, 2))
  return MegapixelSplit(images, noise, digit_ids, digit_xy, noise_ids, noise_xy, classes, canvas)


@dataclasses.dataclass
class ResizedSplit:
  """In-memory small images, upscaled (bilinear, PIL) to size x size when read: a streamed split."""
  images: np.ndarray
  labels: np.ndarray
  size: int
  resident: ClassVar[bool] = False

  def __len__(self):
    return len(self.labels)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.size, self.size, self.images.shape[-1])

  def get(self, indices):
    from PIL import Image
    resize = lambda im: np.asarray(Image.fromarray(im[..., 0]).resize((self.size, self.size), Image.BILINEAR))
    indices = np.asarray(indices)
    return np.stack([resize(self.images[i]) for i in indices])[..., None], self.labels[indices]


def load_resized(data_cfg, digits: Dataset) -> Dataset:
  """"mnist_resized": the digits upscaled to data.image_size."""
  size = data_cfg.image_size
  if size < DIGIT:
    raise ValueError(f"mnist_resized needs --config.data.image_size >= {DIGIT}, got {size}")
  split = lambda s: ResizedSplit(s.images, s.labels, size)
  return Dataset(split(digits.train), split(digits.test), 10, f"mnist_resized{size}")


def load(data_cfg, digits: Dataset) -> Dataset:
  """"megapixel_mnist": data.canvas² canvases over the digits, data.num_train / num_test of them."""
  seed, canvas, num_noise = data_cfg.seed, data_cfg.canvas, data_cfg.num_noise
  noise = noise_patterns(np.random.default_rng([seed, 0]))  # one set of patterns for the dataset
  train = make_split(digits.train.images, digits.train.labels, data_cfg.num_train, seed * 2 + 1, canvas,
                     num_noise=num_noise, noise=noise)
  test = make_split(digits.test.images, digits.test.labels, data_cfg.num_test, seed * 2 + 2, canvas,
                    num_noise=num_noise, noise=noise)
  return Dataset(train, test, 10, f"megapixel_mnist{canvas}", tasks=dict(TASKS))
