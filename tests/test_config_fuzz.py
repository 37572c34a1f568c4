"""Config fuzzing: every field of base_config() set to values a person could type by mistake (wrong
type, negative, zero, huge, not finite, empty, an unknown choice). Each must give a one-line error naming
the field before anything is compiled, or start a run that works (those are then trained for two steps; a
learning rate so large that the loss diverges stops with the non-finite-loss error, which names it)."""
import math

import pytest

from apvit_jax import config_checks
from apvit_jax.base_config import base_config, set_fields
from apvit_jax.training import loop, run as run_lib, state as state_lib

from test_training import TINY_MODEL, load_config


def bad_values(default):
  if isinstance(default, bool):
    return ["maybe", 2]
  if isinstance(default, int):
    return [-1, 0, 10 ** 12, 2.5, "x"]
  if isinstance(default, float):
    return [-1.0, 0.0, 1e30, math.nan, math.inf, "x"]
  if isinstance(default, str):
    return ["", "no_such_choice", 3]
  return [(), (-1.0,), ("a",), (1e30, -1e30, 0.0, 0.0, 0.0)]


def tiny_config_for(field):
  """A smoke config in which `field` is used: IPS fields on IPS, adaptive fields on APViT; the ViTs with
  the tests' one-block encoder (test_training.TINY_MODEL; IPS has no ViT encoder)."""
  name = "ips_megapixel_mnist" if field.startswith("model.ips.") else (
      "apvit_quickstart" if field.startswith("model.adaptive.") else "quickstart")
  c = set_fields(load_config(name), TINY_MODEL)
  c.progress_bar = False
  c.checkpoint.async_save = False
  return c


class ReachedCompilation(Exception):
  pass


def set_field(c, field, value):
  node = c
  *parents, leaf = field.split(".")
  for name in parents:
    node = node[name]
  node[leaf] = value   # a locked ConfigDict checks the type, as the command line does


def start_up(field, value, monkeypatch):
  """-> "type" / "refused" (a clear error first) or "accepted" (reached the first compilation)."""
  c = tiny_config_for(field)
  c.lock()
  try:
    set_field(c, field, value)
  except TypeError as e:
    assert field.split(".")[-1] in str(e)
    return "type", c
  def stop(*args, **kwargs):
    raise ReachedCompilation
  monkeypatch.setattr(state_lib, "create_state", stop)
  try:
    run_lib.setup(c)
  except ReachedCompilation:
    return "accepted", c
  except (ValueError, KeyError, FileNotFoundError, OverflowError) as e:
    message = str(e)
    assert "\n" not in message and field.split(".")[-1] in message, f"{field}={value!r}: {message!r}"
    return "refused", c
  finally:
    monkeypatch.undo()
  raise AssertionError(f"{field}={value!r}: setup returned without compiling")


def test_every_field_has_a_rule():
  assert sorted(config_checks.flat_fields(base_config())) == sorted(config_checks.RULES)


FIELDS = sorted(config_checks.flat_fields(base_config()).items())


def test_more_than_400_bad_values_are_tried():
  assert sum(len(bad_values(default)) for _, default in FIELDS) > 400


@pytest.mark.slow
@pytest.mark.parametrize("field,default", FIELDS, ids=[field for field, _ in FIELDS])
def test_fuzzed_field_fails_clearly_or_runs(field, default, tmp_path, monkeypatch):
  """One field, every bad value: a clear error, or a run that trains (one test per field, so the ~20
  trainings spread over the test workers)."""
  for i, value in enumerate(bad_values(default)):
    outcome, config = start_up(field, value, monkeypatch)
    if outcome != "accepted" or config_checks.flat_fields(tiny_config_for(field))[field] == value:
      continue
    if field == "total_steps":   # 0: the length comes from num_epochs; one epoch is 4 steps here
      config.num_epochs = 1.0
    elif field != "num_epochs":
      config.total_steps = 2
    try:
      summary = loop.train_and_evaluate(config, tmp_path / str(i))
    except FloatingPointError as e:   # a valid value that diverges (optim.lr=1e30): stopped, naming the cause
      assert field == "optim.lr" and "Lower the learning rate" in str(e), (field, value, e)
      continue
    assert summary["final_step"] == config.total_steps or field in ("total_steps", "num_epochs"), (field, value)
    assert math.isfinite(summary["best_accuracy"]), (field, value, summary)
