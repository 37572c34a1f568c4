"""Dataset sources. Each returns a `Split` of uint8 NHWC images and int32 labels held in host memory,
or, for datasets too large for memory (tfds `in_memory=False`), a `StreamingSplit` read on demand.

- "cluttered_digits": built in, no download, no files (scikit-learn's bundled 8×8 digits).
- "cifar10_raw" / "cifar100_raw": the official python batches (`cifar-10-batches-py/`, `cifar-100-python/`).
- "mnist_raw" / "fashion_mnist_raw": MNIST-style idx `.gz` folders.
- "tfds:NAME" (e.g. "tfds:cifar10", "tfds:imagenet2012"): `tfds.data_source`, no TensorFlow at train time.
- "megapixel_mnist" (data/megapixel.py) and "mnist_resized" (MNIST upscaled to data.image_size): large
  images drawn on demand, for IPS. Their digits come from data.digits: "mnist_raw" (idx files in
  data.data_dir), "tfds:mnist", or "builtin" (scikit-learn's digits at 28x28, offline, for smoke tests).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import gzip
import os
import pathlib
import pickle
import struct
from typing import Sequence

import numpy as np

RAW_SOURCES = ("cluttered_digits", "cifar10_raw", "cifar100_raw", "mnist_raw", "fashion_mnist_raw")
LARGE_IMAGE_SOURCES = ("megapixel_mnist", "mnist_resized")


@dataclasses.dataclass
class Split:
  """images (N, H, W, C) uint8, labels (N,) int32."""
  images: np.ndarray
  labels: np.ndarray

  def __len__(self):
    return len(self.labels)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.images.shape[1:])


@dataclasses.dataclass
class Dataset:
  train: Split
  test: Split
  num_classes: int
  name: str
  tasks: dict | None = None   # {task: (num_classes, "softmax" | "sigmoid")}; None: one softmax "label"

  @property
  def task_spec(self) -> dict:
    return self.tasks or {"label": (self.num_classes, "softmax")}

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.train.image_shape


class DataError(ValueError):
  """Missing, truncated or malformed data, with the path and what was expected."""


def load(data_cfg) -> Dataset:
  """config.data -> Dataset. Raises DataError/ValueError before anything is compiled."""
  name = data_cfg.name
  if name.startswith("tfds:"):
    return load_tfds(name[5:], data_cfg.get("data_dir") or None, data_cfg.get("image_size") or None,
                     in_memory=data_cfg.get("in_memory", True))
  if name == "cluttered_digits":
    return cluttered_digits(seed=data_cfg.get("seed", 0), num_train=data_cfg.get("num_train", 10_000),
                            num_test=data_cfg.get("num_test", 2_000), canvas=data_cfg.get("canvas", 40))
  if name.startswith("synthetic:"):
    return synthetic(name, data_cfg.get("num_train", 10_000), data_cfg.get("num_test", 2_000),
                     data_cfg.get("seed", 0))
  if name in LARGE_IMAGE_SOURCES:
    from apvit_jax.data import megapixel
    return megapixel.load(data_cfg, load_digits_28(data_cfg))
  if name not in RAW_SOURCES:
    raise ValueError(f"unknown dataset name {name!r}; choose from {RAW_SOURCES + LARGE_IMAGE_SOURCES}, "
                     f"'tfds:NAME' or 'synthetic:HxWxC:CLASSES'")
  data_dir = data_cfg.get("data_dir")
  if not data_dir:
    raise DataError(f"dataset {name!r} reads raw files: set --config.data.data_dir=PATH")
  if name in ("cifar10_raw", "cifar100_raw"):
    return load_cifar(data_dir, 10 if name == "cifar10_raw" else 100)
  return load_mnist_idx(data_dir, name.removesuffix("_raw"))


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


# --- CIFAR python batches -------------------------------------------------------------------------

def _find_dir(data_dir: str | pathlib.Path, folder: str, needed: Sequence[str]) -> pathlib.Path:
  """data_dir itself or data_dir/folder, whichever holds every needed file."""
  root = pathlib.Path(data_dir).expanduser()
  for d in (root, root / folder):
    if all((d / f).is_file() for f in needed):
      return d
  missing = [f for f in needed if not (root / folder / f).is_file() and not (root / f).is_file()]
  raise DataError(f"missing data files in {root} (or {root / folder}): {missing}")


def _read_cifar_batch(path: pathlib.Path, label_key: bytes):
  try:
    with open(path, "rb") as f:
      d = pickle.load(f, encoding="bytes")
    data = np.asarray(d[b"data"], np.uint8)
    labels = np.asarray(d[label_key], np.int32)
  except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
    raise DataError(f"cannot read CIFAR batch {path}: {type(e).__name__}: {e}") from e
  if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
    raise DataError(f"CIFAR batch {path} has data {data.shape} and {len(labels)} labels; "
                    f"expected (N, 3072) and N")
  # Stored as R, G, B planes of 32×32, row-major.
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar(data_dir, num_classes: int) -> Dataset:
  if num_classes == 10:
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    d = _find_dir(data_dir, "cifar-10-batches-py", train_files + ["test_batch"])
    parts = [_read_cifar_batch(d / f, b"labels") for f in train_files]
    train = Split(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = Split(*_read_cifar_batch(d / "test_batch", b"labels"))
  else:
    d = _find_dir(data_dir, "cifar-100-python", ["train", "test"])
    train = Split(*_read_cifar_batch(d / "train", b"fine_labels"))
    test = Split(*_read_cifar_batch(d / "test", b"fine_labels"))
  return Dataset(train, test, num_classes, f"cifar{num_classes}")


# --- MNIST-style idx ----------------------------------------------------------------------------

def _read_idx(path: pathlib.Path) -> np.ndarray:
  """idx file (gzip or plain) -> uint8 array, checking the header against the payload size."""
  opener = gzip.open if path.suffix == ".gz" else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as e:  # gzip raises these on truncated files
    raise DataError(f"cannot read idx file {path}: {e}") from e
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
    raise DataError(f"{path} is not an unsigned-byte idx file (bad magic {raw[:4]!r})")
  ndim = raw[3]
  dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
  offset = 4 + 4 * ndim
  if len(raw) - offset != int(np.prod(dims)):
    raise DataError(f"{path} is truncated or padded: header says {dims} = {int(np.prod(dims))} bytes, "
                    f"file has {len(raw) - offset}")
  return np.frombuffer(raw, np.uint8, offset=offset).reshape(dims)


def load_mnist_idx(data_dir, name: str = "mnist") -> Dataset:
  """Reads train-/t10k- images and labels idx files; names may carry suffixes (e.g. subsets)."""
  root = pathlib.Path(data_dir).expanduser()
  arrays = {}
  for key in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
    found = sorted(root.glob(key + "*")) if root.is_dir() else []
    if not found:
      raise DataError(f"missing data file {key}[.gz] in {root}")
    arrays[key] = _read_idx(found[0])
  def split(prefix):
    images, labels = arrays[f"{prefix}-images-idx3-ubyte"], arrays[f"{prefix}-labels-idx1-ubyte"]
    if len(images) != len(labels):
      raise DataError(f"{root}: {prefix} has {len(images)} images but {len(labels)} labels")
    return Split(images[..., None].copy(), labels.astype(np.int32))
  return Dataset(split("train"), split("t10k"), 10, name)


# --- built-in cluttered digits --------------------------------------------------------------------

def cluttered_digits(seed: int = 0, num_train: int = 10_000, num_test: int = 2_000, canvas: int = 40,
                     scale: int = 2, clutter: int = 6, fragment: int = 5) -> Dataset:
  """Cluttered digits from scikit-learn's bundled 8×8 digits: no download, deterministic by seed.

  Each example: one digit upscaled `scale`× (bilinear) at a random position on a `canvas`² black canvas,
  plus `clutter` random fragment² crops of other digits at random positions, like the cluttered-MNIST
  task of the spatial-transformer paper. Train and test draw from disjoint source digits.
  """
  from sklearn.datasets import load_digits  # bundled with scikit-learn: no download
  digits = load_digits()
  src = (digits.images / 16.0).astype(np.float32)  # (1797, 8, 8) in [0, 1]
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
      labels[i] = digits.target[j]
    return Split((np.clip(out, 0, 1) * 255).round().astype(np.uint8)[..., None], labels)

  return Dataset(make(1, sources["train"], num_train), make(2, sources["test"], num_test), 10,
                 "cluttered_digits")


def load_digits_28(data_cfg) -> Dataset:
  """28x28 digits for the large-image datasets, from data.digits (see the module docstring)."""
  source = data_cfg.get("digits", "mnist_raw")
  if source == "builtin":
    from sklearn.datasets import load_digits  # bundled: no download
    d = load_digits()
    big = np.pad(np.kron(d.images / 16.0, np.ones((3, 3))), ((0, 0), (2, 2), (2, 2)))  # 8 -> 24 -> 28
    images = (big * 255).round().astype(np.uint8)[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    test, train = order[:len(order) // 5], order[len(order) // 5:]
    labels = d.target.astype(np.int32)
    return Dataset(Split(images[train], labels[train]), Split(images[test], labels[test]), 10, "builtin_digits")
  if source == "mnist_raw":
    if not data_cfg.get("data_dir"):
      raise DataError("data.digits='mnist_raw' reads MNIST idx files: set --config.data.data_dir=PATH")
    return load_mnist_idx(data_cfg.data_dir)
  if source.startswith("tfds:"):
    return load_tfds(source[5:], data_cfg.get("data_dir") or None, None)
  raise ValueError(f"unknown data.digits={source!r}; choose 'mnist_raw', 'tfds:mnist' or 'builtin'")


@dataclasses.dataclass
class ResizedSplit:
  """In-memory small images, upscaled (bilinear, PIL) to size x size when read; `get` as StreamingSplit."""
  images: np.ndarray
  labels: np.ndarray
  size: int

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


# --- tfds ----------------------------------------------------------------------------------------

@dataclasses.dataclass
class StreamingSplit:
  """A tfds data source read on demand, images resized to `image_size`² on the host.

  `get(indices)` -> (images (B, S, S, C) uint8, labels (B,) int32).
  """
  source: object
  image_size: int
  channels: int

  def __len__(self):
    return len(self.source)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, self.channels)

  def _read(self, index: int):
    """One record -> (image (S, S, C) uint8, label): short side resized to S, then centre crop."""
    from PIL import Image
    record = self.source[int(index)]
    im = np.asarray(record["image"])
    if im.shape[:2] != (self.image_size, self.image_size):
      h, w = im.shape[:2]
      s = self.image_size / min(h, w)
      pil = Image.fromarray(im.squeeze(-1) if im.shape[-1] == 1 else im)
      pil = pil.resize((max(self.image_size, round(w * s)), max(self.image_size, round(h * s))),
                       Image.BILINEAR)
      im = np.asarray(pil).reshape(pil.size[1], pil.size[0], -1)
      top, left = (im.shape[0] - self.image_size) // 2, (im.shape[1] - self.image_size) // 2
      im = im[top:top + self.image_size, left:left + self.image_size]
    return im, record["label"]

  def get(self, indices):
    # Record reads, JPEG decoding and PIL resizing release the GIL: threads scale over host cores.
    records = list(_decode_pool().map(self._read, indices))
    images = np.stack([im for im, _ in records]).astype(np.uint8)
    return images, np.asarray([label for _, label in records], np.int32)


@functools.lru_cache(maxsize=1)
def _decode_pool() -> concurrent.futures.ThreadPoolExecutor:
  return concurrent.futures.ThreadPoolExecutor(max_workers=min(32, os.cpu_count() or 1))


def load_tfds(name: str, data_dir: str | None, image_size: int | None, in_memory: bool = True):
  """A prepared tfds dataset through `tfds.data_source` (random access, no TensorFlow needed).

  Small datasets are read fully into memory; `in_memory=False` streams (e.g. imagenet2012) and needs
  `image_size`. Preparing a dataset the first time needs internet and TensorFlow (see README).
  """
  try:
    import tensorflow_datasets as tfds  # imported lazily: raw-file runs never need it
  except ImportError as e:
    raise DataError("tfds datasets need `pip install tensorflow-datasets`") from e
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # tfds raises DatasetNotFoundError and others
    raise ValueError(f"unknown tfds dataset {name!r}: {e}") from e
  info = builder.info
  label = info.features["label"]
  test_split = "test" if "test" in info.splits else "validation"
  try:
    sources = {s: tfds.data_source(name, split=s, data_dir=data_dir, download=False)
               for s in ("train", test_split)}
  except Exception as e:
    raise DataError(f"tfds dataset {name!r} is not prepared in {data_dir or '~/tensorflow_datasets'} "
                    f"in the array_record format ({type(e).__name__}: {e}). Prepare it once with internet and "
                    f"TensorFlow: `tfds build {name} --file_format=array_record`") from e
  shape = info.features["image"].shape
  channels = shape[-1] or 3
  if not in_memory or shape[0] is None:
    if not image_size:
      raise ValueError(f"tfds:{name} has variable image sizes: set --config.data.image_size")
    train, test = (StreamingSplit(sources[s], image_size, channels) for s in ("train", test_split))
    return Dataset(train, test, label.num_classes, name)

  def read_all(src):
    images, labels = StreamingSplit(src, shape[0], channels).get(range(len(src)))
    return Split(images, labels)

  return Dataset(read_all(sources["train"]), read_all(sources[test_split]), label.num_classes, name)
