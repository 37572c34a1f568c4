"""Prepared tfds datasets through `tfds.data_source` (random access, no TensorFlow at train time): read
fully into memory, or streamed from disk as a `StreamingSplit`."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
from typing import ClassVar

import numpy as np

from apvit_jax.data.types import DataError, Dataset, Split


@dataclasses.dataclass
class StreamingSplit:
  """A tfds data source read on demand, images resized to `image_size`² on the host.

  `get(indices)` -> (images (B, S, S, C) uint8, labels (B,) int32).
  """
  source: object
  image_size: int
  channels: int
  resident: ClassVar[bool] = False

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

  def where(self, index: int) -> str:
    """The shard file and record number holding example `index`, where the source can say ("" if not)."""
    try:
      from tensorflow_datasets.core.data_sources import base
      return shard_of(base.file_instructions(self.source.dataset_info, self.source.split), index)
    except Exception:  # a mock or another kind of source: the caller names the index alone
      return ""

  def get(self, indices):
    # Record reads, JPEG decoding and PIL resizing release the GIL: threads scale over host cores.
    records = list(_decode_pool().map(self._read, indices))
    images = np.stack([im for im, _ in records]).astype(np.uint8)
    return images, np.asarray([label for _, label in records], np.int32)


def shard_of(file_instructions, index: int) -> str:
  """Where example `index` of a split read through tfds file instructions (objects with filename, skip and
  take, in order) is stored: "file F, record R", or "" if past their end."""
  for fi in file_instructions:
    if index < fi.take:
      return f"file {fi.filename}, record {fi.skip + index}"
    index -= fi.take
  return ""


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
