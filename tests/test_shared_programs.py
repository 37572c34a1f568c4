"""Runs of one process with equal program keys share their model, optimizer and compiled programs
(training/shared_programs.py); runs that differ in anything a program depends on do not, and a shared
program computes what a freshly built one computes."""
import jax
import numpy as np
import pytest

from apvit_jax.base_config import base_config
from apvit_jax.training import run as run_lib, shared_programs
from test_training import run_steps, tiny_config

ONE_DEVICE = jax.devices()[:1]


def leaf_fields(config, prefix=""):
  """Every leaf field of a ConfigDict as dotted names."""
  for name, value in config.items():
    if hasattr(value, "items"):
      yield from leaf_fields(value, f"{prefix}{name}.")
    else:
      yield f"{prefix}{name}"


def changed(value):
  """A different value of the same type."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, (int, float)):
    return value + 1
  if isinstance(value, str):
    return value + "x"
  if isinstance(value, tuple):
    return value + value[:1] if value else (1,)
  raise TypeError(f"no change for {value!r}")


def test_every_field_but_the_program_free_ones_is_in_the_key():
  """A change of any base_config field outside PROGRAM_FREE_FIELDS changes the key; the listed fields
  exist (a misspelt one would silently be in the key) and change nothing."""
  base = base_config()
  top = set(base.keys())
  assert set(shared_programs.PROGRAM_FREE_FIELDS) <= top, set(shared_programs.PROGRAM_FREE_FIELDS) - top
  key = shared_programs.config_key(base)
  checked = 0
  for field in leaf_fields(base):
    c = base_config()
    *path, last = field.split(".")
    node = c
    for part in path:
      node = node[part]
    node[last] = changed(node[last])
    free = field.split(".")[0] in shared_programs.PROGRAM_FREE_FIELDS
    assert (shared_programs.config_key(c) == key) == free, field
    checked += 1
  assert checked > 100


@pytest.mark.slow
def test_equal_runs_share_model_optimizer_and_steps_and_different_runs_do_not():
  shared_programs.clear()
  first = run_lib.setup(tiny_config(seed=1), devices=ONE_DEVICE)
  # Other seeds, data, checkpoint and logging settings: the same programs.
  again = run_lib.setup(tiny_config(seed=2, log_every_steps=3, **{"data.num_test": 24}), devices=ONE_DEVICE)
  assert again.model is first.model and again.state.tx is first.state.tx and again.schedule is first.schedule
  assert run_lib.compile_train_step(again) is run_lib.compile_train_step(first)
  assert run_lib.compile_eval_step(again) is run_lib.compile_eval_step(first)
  assert run_lib.compile_eval_step(again, confusion=True) is not run_lib.compile_eval_step(again)
  assert run_lib.compile_train_step(again, 2) is not run_lib.compile_train_step(again)
  # Anything a program depends on: the model, the optimizer, the loss, the devices, the step count.
  for other in (run_lib.setup(tiny_config(**{"model.dropout": 0.1}), devices=ONE_DEVICE),
                run_lib.setup(tiny_config(**{"optim.lr": 5e-3}), devices=ONE_DEVICE),
                run_lib.setup(tiny_config(label_smoothing=0.1), devices=ONE_DEVICE),
                run_lib.setup(tiny_config(seed=1), devices=jax.devices()[:2]),
                run_lib.setup(tiny_config(total_steps=7), devices=ONE_DEVICE)):
    assert other.model is not first.model and other.state.tx is not first.state.tx
    assert run_lib.compile_train_step(other) is not run_lib.compile_train_step(first)


@pytest.mark.slow
def test_a_shared_step_trains_exactly_as_a_freshly_built_one():
  """Seed 3's run after seed 2's (sharing its programs) == seed 3's run in an empty cache, bit for bit."""
  shared_programs.clear()
  run_steps(tiny_config(seed=2), ONE_DEVICE, num_steps=1)
  size = shared_programs.size()
  shared_losses, shared_params = run_steps(tiny_config(seed=3), ONE_DEVICE, num_steps=2)
  assert shared_programs.size() == size   # nothing new was built
  shared_programs.clear()
  fresh_losses, fresh_params = run_steps(tiny_config(seed=3), ONE_DEVICE, num_steps=2)
  np.testing.assert_array_equal(shared_losses, fresh_losses)
  jax.tree.map(np.testing.assert_array_equal, shared_params, fresh_params)


def test_the_callers_config_edited_afterwards_changes_nothing_shared():
  shared_programs.clear()
  config = tiny_config()
  run = run_lib.setup(config, devices=ONE_DEVICE)
  config.model.dropout, config.augment.flip = 0.5, True
  assert run.family.model_cfg.dropout == 0.0 and not run.family.augment.flip
  assert run_lib.setup(config, devices=ONE_DEVICE).model is not run.model


def test_entries_are_bounded_least_recently_used_first(monkeypatch):
  shared_programs.clear()
  monkeypatch.setattr(shared_programs, "MAX_ENTRIES", 2)
  built = []
  get = lambda k: shared_programs.get(k, lambda: built.append(k) or k)
  get("a"), get("b"), get("a"), get("c")      # "b" is the least recently used when "c" comes
  assert shared_programs.size() == 2 and built == ["a", "b", "c"]
  get("a"), get("b")
  assert built == ["a", "b", "c", "b"]
  with pytest.raises(ZeroDivisionError):
    shared_programs.get("d", lambda: 1 / 0)
  assert "d" not in shared_programs._entries


def test_evaluating_after_training_in_the_same_process_builds_nothing_new(tmp_path):
  """train_and_evaluate then evaluate_checkpoint of its workdir: the evaluation step, model and optimizer
  are the training run's (one set-up entry, no new step or initialisation program), and the evaluation
  agrees with the training run's last one."""
  from apvit_jax.training import evaluate as eval_lib, loop
  shared_programs.clear()
  config = tiny_config(total_steps=4, eval_every_epochs=1)
  summary = loop.train_and_evaluate(config, tmp_path)
  built = dict(shared_programs._entries)
  result = eval_lib.evaluate_checkpoint(config, tmp_path, step=4)
  new = [key[0] for key in shared_programs._entries if key not in built]
  assert new == ["init shapes"], new   # the checkpoint's restore target: shapes only, traced not compiled
  assert result["accuracy"] == summary["final_accuracy"]
