"""The official raw files, read offline: CIFAR python batches (`cifar-10-batches-py/`,
`cifar-100-python/`) and MNIST-style idx folders (`.gz` or plain)."""
from __future__ import annotations

import gzip
import pathlib
import pickle
import struct
from typing import Sequence

import numpy as np

from apvit_jax.data.types import DataError, Dataset, Split


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


