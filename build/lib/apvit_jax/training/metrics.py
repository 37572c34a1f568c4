"""Metric sinks: a JSONL file in the workdir, TensorBoard event files in WORKDIR/tensorboard, and compact
stdout lines (process 0 only)."""
from __future__ import annotations

import json
import pathlib
import time

import jax

from apvit_jax.training.tensorboard import EventWriter


def read_records(path: pathlib.Path) -> list[dict]:
  """The records of a metrics.jsonl. A last line without its newline is a write cut short (the process
  was killed mid-write): it is not a record and is left out; any other unreadable line is an error."""
  if not path.exists():
    return []
  records = []
  for number, line in enumerate(path.read_text().split("\n")[:-1], 1):  # [-1]: "" or the cut line
    if line.strip():
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}, line {number}: not a JSON record ({e}): {line[:80]!r}") from e
  return records


class MetricWriter:
  def __init__(self, workdir: str | pathlib.Path):
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self.enabled = jax.process_index() == 0
    self._events = None  # created on the first write, so reading a workdir writes nothing
    self._checked_tail = False
    self._bands = set()   # tags drawn as mean with a band (multi-seed runs)

  def _set_aside_partial_line(self) -> None:
    """Before the first append: a last line cut short by a kill is moved to metrics.jsonl.partial
    (kept, never deleted), so the next record starts on a line of its own."""
    self._checked_tail = True
    if not self.path.exists():
      return
    data = self.path.read_bytes()
    if not data or data.endswith(b"\n"):
      return
    cut = data.rfind(b"\n") + 1
    with open(self.path.with_name(self.path.name + ".partial"), "ab") as f:
      f.write(data[cut:] + b"\n")
    with open(self.path, "r+b") as f:
      f.truncate(cut)

  def write(self, step: int, split: str, metrics: dict, echo=print) -> None:
    if not self.enabled:
      return
    if not self._checked_tail:
      self._set_aside_partial_line()
    record = {"step": step, "split": split, "time": time.time(), **metrics}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    scalars = {f"{split}/{k}": float(v) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    # Several seeds: NAME_mean and NAME_sd also as a band, NAME_lower/_upper = mean -/+ sd (TensorBoard
    # only), drawn by the Custom Scalars tab's margin charts.
    bands = [k[:-len("_mean")] for k in scalars if k.endswith("_mean") and k[:-len("_mean")] + "_sd" in scalars]
    for b in bands:
      mean, sd = scalars[b + "_mean"], scalars[b + "_sd"]
      scalars[b + "_lower"], scalars[b + "_upper"] = mean - sd, mean + sd
    if scalars:
      self._events = self._events or EventWriter(self.path.parent / "tensorboard")
      self._events.scalars(step, scalars)
    if set(bands) - self._bands:
      self._bands |= set(bands)
      self._events.margin_layout([(b + "_mean", b + "_lower", b + "_upper") for b in sorted(self._bands)])
    if echo:  # each replica's values (NAME/seedS) stay in the file: the line shows their mean and sd
      echo(f"[{split} step {step}] " + " ".join(
          f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
          for k, v in metrics.items() if "/seed" not in k))

  def read(self) -> list[dict]:
    return read_records(self.path)
