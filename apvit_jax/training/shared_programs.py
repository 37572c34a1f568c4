"""Runs in one process that would build the same programs share them: the model, optimizer and learning-
rate schedule of a run, its compiled train and evaluation steps and its initialisation program are built
once per key and handed to every later run with an equal key (a notebook's sweep over seeds, evaluating
after training in the same process, the test suite's many small runs).

Why it is needed: jax.jit and jax.pmap keep their compiled programs per function object, and a TrainState's
tree structure holds its apply_fn (a Flax module compares by identity) and its optimizer (optax's closures
compare by identity). Every run builds new ones, so a second equal run traced, lowered and loaded (or
compiled) every program again: ~0.3-0.5 s a program for the tests' one-block ViT, seconds for large models.

The key of a run is its whole config except PROGRAM_FREE_FIELDS, which choose values (seeds, which data),
cadence (logging, evaluation, checkpoints) or places, never a program; plus what the run derives from its
data and devices (training/run.py). A field added to the config later is in the key unless listed here: at
worst a share missed, never a program reused where it differs. jit still checks every call's argument
shapes and tree structures, so a run that changes its state's apply_fn (tests/compiled_sampling.py) gets
its own trace.

Shapes: none; the entries are Python objects. At most MAX_ENTRIES are kept (least recently used out)."""
from __future__ import annotations

import collections
import json
from typing import Callable, Hashable

PROGRAM_FREE_FIELDS = ("seed", "num_epochs", "total_steps", "eval_every_epochs", "log_every_steps",
                       "progress_bar", "compilation_cache", "distributed", "init_from", "log_efficiency",
                       "checkpoint", "data")
MAX_ENTRIES = 64

_entries: collections.OrderedDict = collections.OrderedDict()


def config_key(config) -> str:
  """The config without PROGRAM_FREE_FIELDS, as canonical JSON (sorted keys; tuples and lists alike).
  ml_collections' FrozenConfigDict is not used: in ml_collections 1.1.0 two of them built from configs
  that differ in a nested field compare equal."""
  kept = {k: v for k, v in config.to_dict().items() if k not in PROGRAM_FREE_FIELDS}
  return json.dumps(kept, sort_keys=True, default=repr)


def get(key: Hashable, build: Callable[[], object]):
  """The entry for `key`, built by build() the first time (an exception in build() leaves no entry)."""
  if key in _entries:
    _entries.move_to_end(key)
    return _entries[key]
  value = build()
  _entries[key] = value
  while len(_entries) > MAX_ENTRIES:
    _entries.popitem(last=False)
  return value


def clear() -> None:
  """Forgets every entry (their programs are freed once no run holds them)."""
  _entries.clear()


def size() -> int:
  """How many entries are kept."""
  return len(_entries)
