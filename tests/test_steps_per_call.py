"""Several train steps per compiled call (config.steps_per_call = k, a lax.scan): the calls cover every
step once without crossing an epoch's end, and a run with k > 1 computes what the one-step run computes
(metrics of every step, evaluations, final parameters) under pmap and shard_map, with replicas."""
import chex
import jax
import numpy as np
import pytest

from apvit_jax.training import feed, loop, run as run_lib, step as step_lib
from test_replicas import RECIPE, SEED, by_step, final_params
from test_training import load_config, logged_metrics, tiny_config


@pytest.mark.parametrize("steps_per_epoch", [4, 5])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("first,end", [(0, 12), (3, 12), (6, 11), (11, 12)])
def test_calls_cover_every_step_once_and_stop_at_epoch_ends(steps_per_epoch, k, first, end):
  calls = feed.call_plan(first, end, steps_per_epoch, k)
  assert [s for call in calls for s in call] == list(range(first, end))
  for call in calls:
    assert len(call) in (1, k)
    epoch_end = min((call[0] // steps_per_epoch + 1) * steps_per_epoch, end)
    assert call[-1] < epoch_end   # never crosses the evaluation at an epoch's end
    if len(call) == 1 and k > 1:  # a one-step call only where k steps do not fit before the epoch's end
      assert call[0] + k > epoch_end


def test_call_plan_by_hand():
  # 5 steps an epoch, 3 per call, resumed at step 1 and stopping at 12: the remainders run one by one.
  assert feed.call_plan(1, 12, 5, 3) == [(1, 2, 3), (4,), (5, 6, 7), (8,), (9,), (10,), (11,)]


def test_repeat_steps_equals_a_python_loop_of_steps():
  """repeat_steps on a toy step with a state, data, a key and per-step batches, against a plain loop."""
  def toy_step(state, data, batch, key):
    new = state * 0.9 + data["w"] @ batch["x"].sum(0) + jax.random.uniform(jax.random.fold_in(key, 1))
    return new, {"norm": jax.numpy.linalg.norm(new), "first": batch["x"][0, 0]}
  rng = np.random.default_rng(0)
  state, data = rng.normal(size=3).astype(np.float32), {"w": rng.normal(size=(3, 2)).astype(np.float32)}
  xs = rng.normal(size=(5, 4, 2)).astype(np.float32)   # 4 steps of a batch of 5
  key = jax.random.key(7)
  many_state, many = jax.jit(step_lib.repeat_steps(toy_step, 4))(state, data, {"x": xs}, key)
  for i in range(4):
    state, one = toy_step(state, data, {"x": xs[:, i]}, key)
    for name in one:
      np.testing.assert_allclose(many[name][i], one[name], rtol=1e-6)
  np.testing.assert_allclose(many_state, state, rtol=1e-6)
  with pytest.raises(ValueError, match=r"a call of 3 steps needs batch leaves \(b, 3, ...\); got axis 1 of size 4"):
    step_lib.repeat_steps(toy_step, 3)(state, data, {"x": xs}, key)


@pytest.mark.slow
def test_call_batches_stack_steps_outside_replicas():
  """The host batch of a call with two replicas: leaves (b, k, K, ...), step i's at [:, i] exactly the
  batch a one-step call gets, (b, K, ...), whose axis 1 replicas.replicated_train_step splits; and the stream
  of calls the loop takes (feed.train_batches)."""
  run = run_lib.setup(tiny_config(num_seeds=2, seed=SEED, **{"augment.flip": True}))
  one = feed.train_batch_maker(run, on_host=True)
  many = feed.train_batch_maker(run, on_host=True, steps_per_call=3)(5)
  for name, x in many.items():
    assert x.shape[:3] == (16, 3, 2) if name == "index" else x.shape[:2] == (16, 3), (name, x.shape)
    for i in range(3):
      np.testing.assert_array_equal(x[:, i], one(5 + i)[name])
  assert not np.array_equal(many["index"][:, 0, 0], many["index"][:, 0, 1])   # replicas draw their own
  # The stream the loop takes from: each call's steps (feed.call_plan) with that call's batch.
  stream = feed.train_batches(run, 3, 9, on_host=True, steps_per_call=3)
  try:
    with pytest.raises(RuntimeError, match="expected step 3, asked for 4"):
      stream.take(4)
    for want in feed.call_plan(3, 9, run.steps_per_epoch, 3):
      steps, batch = stream.take(want[0])
      assert steps == want
      expected = feed.train_batch_maker(run, on_host=True, steps_per_call=len(steps))(steps[0])
      for name in expected:
        np.testing.assert_array_equal(batch[name], expected[name])
    with pytest.raises(RuntimeError, match=r"none \(all taken\)"):
      stream.take(9)
  finally:
    stream.close()


@pytest.mark.slow
@pytest.mark.parametrize("k,mode", [(3, "pmap"), (4, "shard_map")])
def test_k_steps_per_call_train_as_one_step_calls(k, mode, tmp_path, capsys):
  """Dropout and augmentation on (RECIPE), 4 steps an epoch, every step logged: k = 3 (calls 0-2, 3, 4-6,
  7: full calls and one-step remainders) under pmap, k = 4 under shard_map, against the one-step run.
  Same arithmetic in a loop: float32 rounding only. (With replicas the layouts compose: see
  test_call_batches_stack_steps_outside_replicas.)"""
  assert jax.device_count() == 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
  recipe = {**RECIPE, "seed": SEED, "log_every_steps": 1}
  one_config = tiny_config(**recipe)
  loop.train_and_evaluate(one_config, tmp_path / "one")
  reference = logged_metrics(tmp_path / "one")
  config = tiny_config(**recipe, steps_per_call=k, parallel=mode)
  capsys.readouterr()
  summary = loop.train_and_evaluate(config, tmp_path / "k")
  assert summary["final_step"] == 8 and f"8 steps, starting at step 0, {k} steps per call" in capsys.readouterr().out
  records = logged_metrics(tmp_path / "k")
  for split, names in (("train", ("loss", "accuracy", "grad_norm", "lr")), ("test", ("loss", "accuracy"))):
    mine, theirs = by_step(records, split), by_step(reference, split)
    assert sorted(mine) == sorted(theirs) == (list(range(1, 9)) if split == "train" else [4, 8])
    for step in theirs:
      for name in names:
        np.testing.assert_allclose(mine[step][name], theirs[step][name], rtol=1e-5,
                                   err_msg=f"k={k} {mode} {split} step {step} {name}")
  chex.assert_trees_all_close(final_params(tmp_path / "k", config), final_params(tmp_path / "one", one_config),
                              rtol=1e-5, atol=1e-6)


def test_steps_per_call_errors_before_compilation(monkeypatch):
  def compiled(*args, **kwargs):
    raise AssertionError("reached compilation")
  monkeypatch.setattr(run_lib.state_lib, "create_state", compiled)
  with pytest.raises(ValueError, match=r"steps_per_call=5 is more than an epoch's 4 steps"):
    run_lib.setup(tiny_config(steps_per_call=5))
  lazy = load_config("ips_mnist_toy")
  lazy.model.ips.loading, lazy.steps_per_call = "lazy", 2
  with pytest.raises(ValueError, match=r"steps_per_call=2: this model prepares each step's batch on the host"):
    run_lib.setup(lazy)
  with pytest.raises(ValueError, match=r"config.steps_per_call=0: must be in \[1, 4096\]"):
    run_lib.setup(tiny_config(steps_per_call=0))
