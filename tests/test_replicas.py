"""Several seeds in one program (config.num_seeds = K): replica k equals the one-seed run with seed s + k
(parameters, train and test metrics) under pmap and shard_map; a K=2 run killed with SIGKILL resumes
exactly; eval.py evaluates every replica or one; checkpoints written before num_seeds existed restore;
clear errors where replicas cannot apply."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import types

import chex
import jax
import numpy as np
import pytest

from apvit_jax.base_config import set_fields
from apvit_jax.config_checks import ConfigError
from apvit_jax.training import checkpoint as ckpt_lib
from apvit_jax.training import evaluate as eval_lib, loop, replicas, run as run_lib
from session_run import shared_folder
from test_training import (RESUME_RUN, ROOT, SMOKE_ARGS, config_flags, kill_after_checkpoint, load_config,
                           logged_metrics, tiny_config, train_cmd)

SEED = 3
# Dropout and every augmentation on, so each replica's dropout and augmentation keys are exercised.
# SGD with momentum: the update is linear in the gradient, so float32 rounding stays rounding. (AdamW's
# normalised step turns the rounding noise of ~0 gradients, e.g. the attention key biases' exact zeros,
# into lr-sized moves that differ with any change of summation order; the metrics agree either way.)
RECIPE = {"model.dropout": 0.1, "augment.crop_padding": 2, "augment.flip": True,
          "augment.rotate_degrees": 10.0, "total_steps": 8, "log_every_steps": 2,
          "optim.name": "sgd", "optim.lr": 0.1, "optim.grad_clip": 0.0}
OLD_RUN = ROOT / "tests" / "data" / "k1_run_48f8a0e"   # written before num_seeds existed (its README)


def test_summarize_matches_numpy():
  rng = np.random.default_rng(0)
  values = {"loss": rng.normal(size=3), "lr": np.full(3, 0.1), "best_step": np.array([4, 8, 4])}
  record = replicas.summarize(values, (5, 6, 7))
  np.testing.assert_allclose(record["loss_mean"], np.mean(values["loss"]), rtol=1e-12)
  np.testing.assert_allclose(record["loss_sd"], np.std(values["loss"], ddof=1), rtol=1e-12)
  assert [record[f"loss/seed{s}"] for s in (5, 6, 7)] == values["loss"].tolist()
  assert record["lr"] == 0.1 and "lr_mean" not in record            # shared by the replicas
  assert record["best_step/seed6"] == 8 and "best_step_mean" not in record   # per replica only
  assert replicas.seed_values(record, "loss", (5, 6, 7)) == values["loss"].tolist()
  assert replicas.mean_value(record, "loss") == record["loss_mean"]
  # One seed: exactly a one-seed record.
  one = replicas.summarize({"loss": np.array([2.5]), "count": np.array([40])}, (0,))
  assert one == {"loss": 2.5, "count": 40}


@pytest.mark.slow
def test_replica_state_is_the_one_seed_state():
  stacked = run_lib.setup(tiny_config(num_seeds=3, seed=SEED, **RECIPE))
  assert stacked.seeds == (SEED, SEED + 1, SEED + 2)
  for k in range(3):
    single = run_lib.setup(tiny_config(seed=SEED + k, **RECIPE))
    one = replicas.select_state(stacked.state, k)
    chex.assert_trees_all_equal(one.params, single.state.params)
    chex.assert_trees_all_equal(one.opt_state, single.state.opt_state)
    assert jax.random.key_data(run_lib.train_key(stacked))[k].tolist() == \
        jax.random.key_data(run_lib.train_key(single)).tolist()


def final_state(workdir, config, step):
  target = ckpt_lib.restore_target(run_lib.setup(config, for_training=False).state)
  return ckpt_lib.Checkpointer(workdir, read_only=True).restore(step, target)


def final_params(workdir, config, step=8):
  return final_state(workdir, config, step)["params"]


def by_step(records, split):
  return {r["step"]: r for r in records if r["split"] == split}


def train_one_seed_runs(root):
  for k in range(3):
    loop.train_and_evaluate(tiny_config(seed=SEED + k, **RECIPE), root / f"seed{SEED + k}")


@pytest.fixture(scope="module")
def one_seed_runs(tmp_path_factory):
  """The one-seed runs of seeds SEED, SEED+1, SEED+2 (trained once per session: session_run.py)
  -> [(config, summary, logged records, workdir)]."""
  root = shared_folder(tmp_path_factory, "replicas_one_seed_runs", train_one_seed_runs)
  runs = []
  for k in range(3):
    work = root / f"seed{SEED + k}"
    records = logged_metrics(work)
    summary = [r for r in records if r["split"] == "summary"][-1]
    runs.append((tiny_config(seed=SEED + k, **RECIPE), summary, records, work))
  return runs


@pytest.mark.slow
@pytest.mark.parametrize("mode, replica_loop", [("pmap", "vmap"), ("shard_map", "unroll")])
def test_k_replicas_equal_k_one_seed_runs(tmp_path, mode, replica_loop, one_seed_runs):
  """K=3 seeds in one program under `mode`, the replicas vmapped or unrolled: replica k's parameters, train
  and test metrics and summary equal the one-seed run's; under shard_map also eval.py's path, every
  replica and one alone."""
  assert jax.device_count() == 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
  config = tiny_config(num_seeds=3, seed=SEED, parallel=mode, replica_loop=replica_loop, **RECIPE)
  work = tmp_path / f"k3_{mode}"
  summary = loop.train_and_evaluate(config, work)
  records = logged_metrics(work)
  stacked = final_params(work, config)
  for k, (one_config, one_summary, one_records, one_work) in enumerate(one_seed_runs):
    s = SEED + k
    # Same arithmetic per replica, batched: float32 rounding only.
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[k], stacked),
                                final_params(one_work, one_config), rtol=1e-5, atol=1e-6)
    for split, names in (("train", ("loss", "accuracy", "grad_norm")), ("test", ("loss", "accuracy"))):
      mine, theirs = by_step(records, split), by_step(one_records, split)
      assert sorted(mine) == sorted(theirs) and len(mine) >= 2
      for step in theirs:
        for name in names:
          np.testing.assert_allclose(mine[step][f"{name}/seed{s}"], theirs[step][name], rtol=1e-5,
                                     err_msg=f"{mode} {split} step {step} {name} seed {s}")
    assert summary[f"best_accuracy/seed{s}"] == one_summary["best_accuracy"]
    assert summary[f"final_accuracy/seed{s}"] == one_summary["final_accuracy"]
  accs = [one_summary["best_accuracy"] for _, one_summary, _, _ in one_seed_runs]
  np.testing.assert_allclose(summary["best_accuracy_mean"], np.mean(accs), rtol=1e-12)
  np.testing.assert_allclose(summary["best_accuracy_sd"], np.std(accs, ddof=1), rtol=1e-12, atol=1e-15)
  if mode != "shard_map":
    return
  # eval.py's path: every replica, and one replica alone, as their one-seed runs evaluate.
  result = eval_lib.evaluate_checkpoint(config, work, step=8)
  chosen = eval_lib.evaluate_checkpoint(config, work, step=8, seed_index=1)
  for k, (one_config, _, _, one_work) in enumerate(one_seed_runs):
    one = eval_lib.evaluate_checkpoint(one_config, one_work, step=8)
    assert result[f"accuracy/seed{SEED + k}"] == one["accuracy"]
    np.testing.assert_allclose(result[f"loss/seed{SEED + k}"], one["loss"], rtol=1e-5)
    if k == 1:
      assert chosen["seed"] == SEED + 1 and chosen["accuracy"] == one["accuracy"]
      np.testing.assert_allclose(chosen["loss"], one["loss"], rtol=1e-5)


@pytest.mark.slow
def test_k2_run_killed_with_sigkill_resumes_exactly(tmp_path):
  env = {**os.environ, "PYTHONUNBUFFERED": "1"}
  # vmapped replicas: resuming does not depend on the loop (test_k_replicas_equal_k_one_seed_runs tests
  # both), and the unrolled step, a CPU's default, compiles twice as long in each of the four processes.
  cmd = lambda work: train_cmd(work, "--config.num_seeds=2", "--config.model.dropout=0.1",
                               "--config.replica_loop=vmap")
  ref = subprocess.run(cmd(tmp_path / "ref"), cwd=ROOT, env=env, capture_output=True, text=True)
  assert ref.returncode == 0, ref.stderr[-2000:]
  assert "FINAL over 2 seeds (0..1), mean ± sd: best_accuracy=" in ref.stdout
  work = tmp_path / "killed"
  kill_after_checkpoint(cmd(work), work, 6, env, last_step=60)
  resumed = subprocess.run(cmd(work), cwd=ROOT, env=env, capture_output=True, text=True)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert 6 <= int(resumed.stdout.split("starting at step ")[1].split()[0]) < 60
  config = tiny_config(**RESUME_RUN, **{"num_seeds": 2, "model.dropout": 0.1})
  target = ckpt_lib.restore_target(run_lib.setup(config, for_training=False).state)
  a, b = (ckpt_lib.Checkpointer(d, read_only=True).restore(60, target) for d in (tmp_path / "ref", work))
  assert jax.tree.leaves(a["params"])[0].shape[0] == 2   # the replica axis is in the checkpoint
  chex.assert_trees_all_close(a, b, rtol=1e-6, atol=1e-7)
  # The summaries agree per replica, and the command-line evaluation writes per-seed JSON.
  final = [[r for r in logged_metrics(d) if r["split"] == "summary"][-1] for d in (tmp_path / "ref", work)]
  assert final[0]["final_accuracy/seed1"] == final[1]["final_accuracy/seed1"]
  cli = subprocess.run([sys.executable, str(ROOT / "eval.py"), *SMOKE_ARGS,
                        f"--workdir={work}", *config_flags(RESUME_RUN), "--config.num_seeds=2", "--seed_index=1", "--visualize=1"],
                       cwd=ROOT, env=env, capture_output=True, text=True)
  assert cli.returncode == 0, cli.stderr[-2000:]
  out = pathlib.Path(cli.stdout.strip().splitlines()[-1].removeprefix("wrote "))
  written = json.loads(out.read_text())
  step = written["step"]   # the best checkpoint (best mean accuracy)
  assert out.name == f"eval_{step}_test_seed1.json"
  assert written["seed"] == 1 and written["count"] == 40 and "accuracy" in written
  assert pathlib.Path(written["figures"][0]).name.endswith(f"test_step{step}_seed1_0.png")


def test_replica_loop_auto_unrolls_on_a_cpu_only(monkeypatch):
  """replica_loop="auto": the replicas unrolled on a CPU (vmapped convolutions are slow grouped ones there),
  vmapped on GPU/TPU; the summary line says which."""
  assert replicas.loop_kind(tiny_config(replica_loop="auto")) == "unroll"
  assert replicas.loop_kind(tiny_config(replica_loop="vmap")) == "vmap"
  assert replicas.loop_kind(tiny_config(replica_loop="UNROLL")) == "unroll"
  run = run_lib.setup(tiny_config(num_seeds=2), for_training=False)
  assert "2 replicas (seeds 0..1) in one step, unrolled (replica_loop=auto)" in \
      run_lib.summary_lines(run, "w", 0)[1]
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert replicas.loop_kind(tiny_config(replica_loop="auto")) == "vmap"
  assert replicas.loop_kind(tiny_config(replica_loop="unroll")) == "unroll"
  with pytest.raises(ConfigError, match="replica_loop='scan'"):
    replicas.loop_kind(types.SimpleNamespace(replica_loop="scan"))   # config_checks refuses it earlier


@pytest.mark.slow
@pytest.mark.parametrize("replica_loop", ["unroll", "vmap"])
def test_ips_replicas_with_batch_statistics_equal_one_seed_runs(tmp_path, replica_loop):
  """IPS (eager selection inside the step, a ResNet trunk with BatchNorm): the selection scan and the batch
  statistics run per replica, vmapped or unrolled."""
  def config(**overrides):
    c = load_config("ips_megapixel_mnist")
    return set_fields(c, {"progress_bar": False, "checkpoint.async_save": False, "model.ips.loading": "eager",
                          "optim.name": "sgd", "optim.lr": 0.05, "optim.grad_clip": 0.0, **overrides})
  loop.train_and_evaluate(config(num_seeds=2, seed=1, replica_loop=replica_loop), tmp_path / "k2")
  loop.train_and_evaluate(config(seed=2), tmp_path / "seed2")
  mine, theirs = (by_step(logged_metrics(tmp_path / d), "train") for d in ("k2", "seed2"))
  assert sorted(mine) == sorted(theirs)
  for step in theirs:
    np.testing.assert_allclose(mine[step]["loss/seed2"], theirs[step]["loss"], rtol=1e-5)
  stacked = final_state(tmp_path / "k2", config(num_seeds=2, seed=1), 4)
  single = final_state(tmp_path / "seed2", config(seed=2), 4)
  assert jax.tree.leaves(stacked["batch_stats"]) and jax.tree.leaves(stacked["batch_stats"])[0].shape[0] == 2
  for part in ("params", "batch_stats"):
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[1], stacked[part]), single[part], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_init_from_gives_every_replica_the_pretrained_weights(tmp_path):
  loop.train_and_evaluate(tiny_config(total_steps=4), tmp_path / "source")
  run = run_lib.setup(tiny_config(num_seeds=2, init_from=str(tmp_path / "source")))
  state = run_lib.pretrained_state(run, run.config.init_from)
  source = ckpt_lib.Checkpointer(tmp_path / "source", read_only=True)
  saved = source.restore_saved(source.best_step() or source.latest_step())["params"]
  for k in range(2):
    chex.assert_trees_all_equal(replicas.select_state(state, k).params, saved)
  assert all(x.shape[0] == 2 for x in jax.tree.leaves(state.opt_state) if np.ndim(x))


def copy_old_run(tmp_path):
  if not OLD_RUN.is_dir():
    pytest.fail(f"{OLD_RUN} is missing from the repository")
  work = tmp_path / "old"
  shutil.copytree(OLD_RUN, work)
  return work


def old_run_config(**overrides):
  return tiny_config(**{"data.num_train": 32, "total_steps": 8, "model.width": 16, "model.depth": 1,
                        "model.num_heads": 2, "model.dropout": 0.1, **overrides})


@pytest.mark.slow
def test_checkpoints_from_before_num_seeds_restore_and_evaluate(tmp_path):
  work = copy_old_run(tmp_path)
  logged = by_step(logged_metrics(work), "test")
  for step in (2, 8):
    result = eval_lib.evaluate_checkpoint(old_run_config(), work, step=step)
    assert result["accuracy"] == logged[step]["accuracy"] and result["count"] == 40
    np.testing.assert_allclose(result["loss"], logged[step]["loss"], rtol=1e-6)
  summary = loop.train_and_evaluate(old_run_config(total_steps=10), work)   # and training continues
  assert summary["final_step"] == 10
  with pytest.raises(ckpt_lib.CheckpointMismatch, match="config.num_seeds=2"):
    eval_lib.evaluate_checkpoint(old_run_config(num_seeds=2), work, step=2)   # 8 retired by retention


@pytest.mark.parametrize("override,message", [
    ({"num_seeds": 0}, r"config.num_seeds=0: must be"),
    ({"num_seeds": 2, "seed": 2 ** 31 - 1}, "must be < 2\\*\\*31"),
])
def test_clear_errors_before_compilation(override, message):
  with pytest.raises(ValueError, match=message):
    run_lib.setup(tiny_config(**override))


def test_lazy_ips_refuses_replicas():
  config = load_config("ips_megapixel_mnist")
  config.num_seeds, config.model.ips.loading = 2, "lazy"
  with pytest.raises(ValueError, match="model.ips.loading='lazy' selects each replica's patches on the host"):
    run_lib.setup(config)


def test_seed_index_out_of_range_is_refused(tmp_path):
  work = copy_old_run(tmp_path)
  with pytest.raises(ValueError, match=r"--seed_index=2: the run has 2 replica\(s\) \(config.num_seeds\), indices 0..1"):
    eval_lib.evaluate_checkpoint(old_run_config(num_seeds=2), work, seed_index=2)


@pytest.mark.slow
def test_nonfinite_loss_names_the_replicas(tmp_path):
  blowup = {"optim.lr": 1e12, "optim.warmup_epochs": 0.0, "total_steps": 8, "log_every_steps": 1,
            "num_seeds": 2}
  with pytest.raises(FloatingPointError, match=r"at step \d+ in replica\(s\) seed 0 \(index 0\)"):
    loop.train_and_evaluate(tiny_config(**blowup), tmp_path)
