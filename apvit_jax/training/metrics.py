"""Metric sinks: a JSONL file in the workdir, TensorBoard event files in WORKDIR/tensorboard, and compact
stdout lines (process 0 only)."""
from __future__ import annotations

import json
import pathlib
import time

import jax

from apvit_jax.training.tensorboard import EventWriter


class MetricWriter:
  def __init__(self, workdir: str | pathlib.Path):
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self.enabled = jax.process_index() == 0
    self._events = None  # created on the first write, so reading a workdir writes nothing

  def write(self, step: int, split: str, metrics: dict, echo=print) -> None:
    if not self.enabled:
      return
    record = {"step": step, "split": split, "time": time.time(), **metrics}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    scalars = {f"{split}/{k}": float(v) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if scalars:
      self._events = self._events or EventWriter(self.path.parent / "tensorboard")
      self._events.scalars(step, scalars)
    if echo:
      echo(f"[{split} step {step}] " + " ".join(
          f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))

  def read(self) -> list[dict]:
    if not self.path.exists():
      return []
    return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
