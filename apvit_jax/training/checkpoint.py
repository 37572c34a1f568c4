"""Checkpoints through orbax's CheckpointManager: the latest and the best-by-eval-accuracy steps are
kept, saves are asynchronous, and re-running the same command resumes from the latest one."""
from __future__ import annotations

import os
import pathlib
import re
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

METRIC = "accuracy"


def ranked_accuracy(metrics: dict) -> float:
  """What ranks a checkpoint as best: its test accuracy, or the replicas' mean accuracy (num_seeds > 1:
  one checkpoint holds every replica)."""
  return metrics[METRIC] if METRIC in metrics else metrics[METRIC + "_mean"]


class CheckpointMismatch(ValueError):
  """A checkpoint that does not fit the model/optimizer the config builds."""


class CheckpointCorrupt(ValueError):
  """A checkpoint whose files cannot be read back (truncated, overwritten, half-copied)."""


class CheckpointWriteError(OSError):
  """A save that the file system refused (disk full, quota, permissions); earlier checkpoints are kept."""


def _os_error_in(e: BaseException) -> OSError | None:
  """The OSError behind an exception: orbax may re-raise a writer thread's error wrapped, and tensorstore
  reports a failed write as a ValueError ending in "[os_error_code='28']" (ENOSPC)."""
  seen = set()
  while e is not None and id(e) not in seen:
    if isinstance(e, OSError):
      return e
    code = re.search(r"\[os_error_code='?(\d+)'?\]", str(e))
    if code:
      return OSError(int(code.group(1)), os.strerror(int(code.group(1))))
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  return None


# How orbax/tensorstore/json report unreadable bytes, as opposed to a structure that does not fit.
_CORRUPTION_SIGNS = ("DATA_LOSS", "OUT_OF_RANGE", "Error decoding", "is not valid for value of size",
                     "Unterminated string", "Expecting value", "Expecting ',' delimiter")


def state_to_save(state) -> dict:
  """The parts of a TrainState that a checkpoint holds (functions and static fields are rebuilt)."""
  step = state.step if isinstance(state.step, jax.Array) else np.asarray(state.step, np.int64)
  return {"step": step,
          "params": state.params, "opt_state": state.opt_state, "batch_stats": state.batch_stats}


def restore_target(state) -> dict:
  """The NumPy tree that Checkpointer.restore fills: state_to_save's structure, shapes and dtypes, from a
  TrainState or from its shapes (state.state_shapes). Zeros (allocated lazily), never read."""
  return jax.tree.map(lambda x: np.zeros(np.shape(x), x.dtype), state_to_save(state))


# Where orbax moves a checkpoint that the retention policy retires (one rename: atomic), for this class to
# remove. Removed in place instead (orbax's default on local disks), a process killed during the removal left
# a step folder with some of its files gone, listed as a finished step and failing to restore
# (tests/test_faults.py caught one).
RETIRED = "retired"


class Checkpointer:
  def __init__(self, workdir: str | pathlib.Path, *, async_save: bool = True, read_only: bool = False,
               keep_latest: int = 1):
    self.directory = pathlib.Path(workdir).expanduser().resolve() / "checkpoints"
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy([
            policies.LatestN(keep_latest),
            policies.BestN(get_metric_fn=ranked_accuracy, n=1)]),
        best_fn=ranked_accuracy, best_mode="max", todelete_subdir=None if read_only else RETIRED,
        enable_async_checkpointing=async_save, read_only=read_only, create=not read_only)
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    self._in_flight = None   # the step of the asynchronous save not yet known to be written
    self._read_only = read_only
    self._remove_retired()   # what a killed process left there

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def save(self, step: int, host_state: dict, metrics: dict | None) -> None:
    """host_state: NumPy tree from `state_to_save`; metrics must hold "accuracy" (or "accuracy_mean") to
    rank as best. A save the file system refuses raises CheckpointWriteError: here, for this save or for
    the asynchronous one before it (each save first waits for the previous one, as orbax would), or from
    `wait`."""
    self.wait()
    self._remove_retired()
    self._in_flight = step
    try:
      self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(host_state)),
                        metrics=metrics, force=True)
    except Exception as e:
      self._raise_write_error(e, step)
      raise

  def _raise_write_error(self, e: BaseException, step) -> None:
    os_error = _os_error_in(e)
    if os_error is not None:
      # Read from the directory: the manager's own list may be empty after a failed finalisation.
      kept = [s for s in finished_steps(self.directory.parent) if s != step]
      raise CheckpointWriteError(
          os_error.errno, f"saving checkpoint step {step} in {self.directory} failed: "
          f"{os_error.strerror or os_error}. The run stopped; the earlier checkpoints (steps {list(kept)}) are "
          f"kept. Free space (or fix the directory), then run the same command to resume") from e

  def restore(self, step: int, target: dict) -> dict:
    """Restores `step` into the structure of `target` (a NumPy tree), checking every shape."""
    if step not in self.manager.all_steps():
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; "
                              f"available: {self.manager.all_steps()}")
    try:
      restored = self.manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    except (ValueError, KeyError, TypeError) as e:
      if any(sign in str(e) for sign in _CORRUPTION_SIGNS):
        others = [s for s in self.manager.all_steps() if s != step]
        raise CheckpointCorrupt(
            f"checkpoint {self.directory}/{step} is corrupted or truncated and cannot be read "
            f"({str(e).splitlines()[0][:300]}). Nothing was changed; move that step's folder aside to resume "
            f"from another step (available: {others}), or use a new workdir") from e
      raise CheckpointMismatch(f"checkpoint {self.directory}/{step} does not match the model the "
                               f"config builds: {e}") from e
    mismatched = []
    def check(path, want, got):
      if np.shape(want) != np.shape(got):
        mismatched.append(f"{jax.tree_util.keystr(path)}: checkpoint {np.shape(got)} vs model "
                          f"{np.shape(want)}")
    jax.tree_util.tree_map_with_path(check, target, restored)
    if mismatched:
      raise CheckpointMismatch(f"checkpoint {self.directory}/{step} does not match the model the config "
                               f"builds ({len(mismatched)} arrays differ), e.g. " + "; ".join(mismatched[:3]))
    return restored

  def restore_saved(self, step: int) -> dict:
    """Step `step` as saved (NumPy arrays in the saved shapes), without a target structure."""
    if step not in self.manager.all_steps():
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}")
    return self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]

  def wait(self) -> None:
    """Until the asynchronous save in flight is written (raises CheckpointWriteError if it failed)."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:
      self._raise_write_error(e, self._in_flight)
      raise
    self._in_flight = None

  def close(self) -> None:
    self.manager.close()
    self._remove_retired()

  def _remove_retired(self) -> None:
    """Removes the checkpoints orbax retired into checkpoints/retired/ (not a step folder: a removal cut
    short leaves nothing that looks like a checkpoint, and the next Checkpointer finishes it). On the
    primary process only, as orbax retires (moves) checkpoints from there alone."""
    folder = self.directory / RETIRED
    if self._read_only or jax.process_index() != 0 or not folder.is_dir():
      return
    for retired in folder.iterdir():
      shutil.rmtree(retired, ignore_errors=True)


def finished_steps(workdir) -> list[int]:
  """The finished steps in WORKDIR/checkpoints, in order, read from the folder names (orbax names them by
  number; unfinished saves carry a temporary suffix). Reads nothing else and creates nothing."""
  directory = pathlib.Path(workdir).expanduser() / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def has_checkpoints(workdir) -> bool:
  """Whether WORKDIR/checkpoints holds a finished step."""
  return bool(finished_steps(workdir))
