"""What every dataset split is to the trainer: a length, an image shape, and `get(indices)` ->
(images (B, H, W, C) uint8, labels). A *resident* split (`resident = True`) also holds all its arrays
(`arrays()`), which the trainer puts on every device once; batches then carry indices only. A streamed
split (`resident = False`: tfds on disk, canvases drawn on demand, upscaled digits) is read per batch
on the host.

Labels are int32 (B,) for one softmax task, or a dict {task: (B,) int32 or (B, classes) float32}.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Protocol

import numpy as np


class DataError(ValueError):
  """Missing, truncated or malformed data, with the path and what was expected."""


class SplitSource(Protocol):
  """The interface every split implements (see the module docstring)."""
  resident: ClassVar[bool]

  def __len__(self) -> int: ...

  @property
  def image_shape(self) -> tuple[int, int, int]: ...

  def get(self, indices): ...


@dataclasses.dataclass
class Split:
  """A resident split: images (N, H, W, C) uint8, labels (N,) int32."""
  images: np.ndarray
  labels: np.ndarray
  resident: ClassVar[bool] = True

  def __len__(self):
    return len(self.labels)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.images.shape[1:])

  def get(self, indices):
    indices = np.asarray(indices)
    return self.images[indices], self.labels[indices]

  def arrays(self) -> dict:
    return {"images": self.images, "labels": self.labels}


@dataclasses.dataclass
class Dataset:
  train: SplitSource
  test: SplitSource
  num_classes: int
  name: str
  tasks: dict | None = None   # {task: (num_classes, "softmax" | "sigmoid")}; None: one softmax "label"

  @property
  def task_spec(self) -> dict:
    return self.tasks or {"label": (self.num_classes, "softmax")}

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.train.image_shape
