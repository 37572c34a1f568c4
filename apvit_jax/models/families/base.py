"""The interface between a model family and the generic trainer. The trainer, the train/eval steps and
the evaluator call these methods and never test a family's name; a new family subclasses `Family`,
overrides what differs, and adds one line to `models/registry.py`'s table.

Shapes: a batch dict holds "index" (int32 (b,), rows of the device-resident `data`) or "images" (uint8
(b, H, W, C)) and "labels"; see training/step.py.
"""
from __future__ import annotations

from typing import Callable, ClassVar


def fetch(data, batch):
  """(images uint8 (b, H, W, C), labels) from the device-resident dataset or the batch itself."""
  if "index" in batch:
    return data["images"][batch["index"]], data["labels"][batch["index"]]
  return batch.get("images"), batch["labels"]


class Family:
  """One kind of model, configured by config.model (and config.augment, for its inputs). One object
  serves every run of a process with an equal config (training/shared_programs.py): it keeps no state
  of a run."""
  name: ClassVar[str]

  def __init__(self, model_cfg, augment_cfg=None):
    self.model_cfg, self.augment = model_cfg, augment_cfg

  def check(self, image_shape) -> None:
    """Raises, naming the field, when the model cannot be built for images of this shape (no compilation)."""
    raise NotImplementedError

  def check_replicas(self, num_seeds: int) -> None:
    """Raises, naming the field, when config.num_seeds > 1 replicas cannot share one compiled step (no
    compilation). Default: they can (every step's work is inside the compiled step)."""

  def tasks(self, task_spec: dict, dataset_name: str) -> tuple:
    """The trained tasks ((name, num_classes, "softmax" | "sigmoid"), ...) from the dataset's
    {task: (num_classes, activation)}. Default: exactly one task, the dataset's."""
    if len(task_spec) > 1:
      raise ValueError(f"dataset {dataset_name!r} has {len(task_spec)} tasks {list(task_spec)}; model.name="
                       f"{self.model_cfg.name!r} has one head: use model.name='ips'")
    return tuple((name, *spec) for name, spec in task_spec.items())

  def build(self, num_classes: int, tasks: tuple | None = None):
    """-> a Flax module; module.apply(variables, *inputs, train=...) -> (logits, intermediates)."""
    raise NotImplementedError

  def init_inputs(self, image_shape) -> tuple | None:
    """Dummy inputs for model.init, or None: one image of image_shape."""
    return None

  def model_inputs(self, state, data, batch, key, *, train: bool):
    """Inside the compiled step, per device: -> (inputs to the model (a tuple), labels). `key` is the
    step's inputs key (training/step.py: inputs_key / eval_inputs_key)."""
    raise NotImplementedError

  def host_inputs(self, model, device) -> Callable | None:
    """None, or a function (host batch, state copy on `device`, inputs key) -> host batch applied on the
    host before each batch is sharded (IPS lazy loading). Built once per run."""
    return None

  def uncounted_loops(self, apply_fn, variables, batch: int, image_shape) -> list | None:
    """The loops of the train step whose bodies XLA's cost analysis counts once: [(iterations beyond the
    first, the body compiled alone)] for a program of `batch` images of one replica (apply_fn and
    variables: that replica's); [] where the step has none, None where they cannot be counted here (the
    step's FLOP count is then a lower bound)."""
    return []

  def description(self) -> str:
    """One line for the run summary."""
    return f"{self.model_cfg.name} {self.model_cfg.variant}"

  def figures(self, model, variables, images, labels, tasks, out_dir, prefix: str, inputs_key) -> list:
    """Figures of where the model looks for images (K, H, W, C) uint8 -> the files written."""
    raise NotImplementedError
