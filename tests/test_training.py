"""Training: pmap == shard_map == one device; SIGKILL + resume == uninterrupted; every config's smoke
variant runs; clear errors before compilation."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from apvit_jax.base_config import set_fields
from apvit_jax.data import batches, host_pipeline
from apvit_jax.training import checkpoint as ckpt_lib
from apvit_jax.training import evaluate as eval_lib, feed, loop, run as run_lib, state as state_lib
from bench import step_bench
from session_run import shared_folder
from subprocess_env import xla_flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.py"))


def load_config(name, arg="smoke"):
  return step_bench.load_config(name, arg)


# The tests' model: the quickstart smoke's ViT (mu/8) with one encoder block instead of four. What these
# tests compare (parallel modes, resumption, replicas, faults, errors) does not depend on the depth, and one
# block halves the compile time of a run's programs (9 s instead of 18 s for a tiny run on 2 cores).
# Every config's own smoke model is still trained (test_every_config_smoke), deep encoders in test_vit.py.
TINY_MODEL = {"model.depth": 1}


def config_flags(fields: dict) -> list[str]:
  """{"data.num_train": 32} -> ["--config.data.num_train=32"]: the same fields on a command line."""
  return [f"--config.{k}={v}" for k, v in fields.items()]


# The train step donates its state on GPU/TPU and not on a CPU (config.donate_state="auto"); the tests' runs
# donate, as on accelerators, so that a use of a donated buffer fails here too (the config smokes keep "auto").
DONATED = {"donate_state": "true"}
SMOKE_ARGS = ["--config=configs/quickstart.py:smoke", *config_flags({**TINY_MODEL, **DONATED})]
# What train_cmd's runs (resumed, killed, evaluated) change beyond SMOKE_ARGS.
RESUME_RUN = {"data.num_train": 32, "total_steps": 60}


def tiny_config(**overrides):
  """The quickstart smoke config with the tests' model (TINY_MODEL), 64 training and 40 test images."""
  c = set_fields(load_config("quickstart"), {**TINY_MODEL, **DONATED})
  c.data.num_train, c.data.num_test = 64, 40
  c.progress_bar = False
  c.checkpoint.async_save = False
  return set_fields(c, overrides)


def run_steps(config, devices, num_steps=2, initial=None):
  """num_steps train steps from the same initial state; -> (losses, host params). initial: a list that
  receives the (replicated) state the first step was given."""
  run = run_lib.setup(config, devices=devices)
  par = run.par
  state = par.replicate(run.state)
  if initial is not None:
    initial.append(state)
  data = feed.device_data(par, run.dataset.train)
  train_step = run_lib.compile_train_step(run)
  key = jax.random.fold_in(jax.random.key(config.seed), 1)
  losses = []
  for s in range(num_steps):
    idx = batches.train_indices(config.seed, s, len(run.dataset.train), config.batch_size)
    batch = par.shard(host_pipeline.host_batch(run.dataset.train, idx, np.arange(config.batch_size)))
    state, metrics = train_step(state, data, batch, key)
    losses.append(par.metrics(metrics)["loss"])
  return np.array(losses), par.unreplicate(state.params)


@pytest.mark.slow
def test_pmap_shard_map_and_one_device_agree():
  assert jax.device_count() == 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
  # Augmentation on (crop + flip + rotation): its keys come from global batch positions.
  # SGD: the update is lr * gradient, so a wrong gradient reduction (psum for pmean, a missing
  # collective) shows in the parameters; Adam's scale invariance or norm clipping would hide it.
  config = tiny_config(**{"augment.crop_padding": 2, "augment.flip": True, "augment.rotate_degrees": 10.0,
                          "optim.name": "sgd", "optim.lr": 0.1, "optim.grad_clip": 0.0})
  loss_p, params_p = run_steps(config, jax.devices())
  config.parallel = "shard_map"
  loss_s, params_s = run_steps(config, jax.devices())
  config.parallel = "pmap"
  loss_1, params_1 = run_steps(config, jax.devices()[:1])
  # Same arithmetic, different reduction order over 8 shards: float32 rounding only.
  np.testing.assert_allclose(loss_p, loss_1, rtol=1e-5)
  np.testing.assert_allclose(loss_s, loss_1, rtol=1e-5)
  assert loss_1[1] != loss_1[0]  # the second step saw updated parameters
  chex.assert_trees_all_close(params_p, params_1, rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(params_s, params_1, rtol=1e-4, atol=1e-6)


def train_cmd(workdir, *extra):
  """60 steps of 2 an epoch, evaluated and saved every 5 epochs (10 steps): evaluations and saves
  were 40 % of such a run's time when they came every epoch."""
  return [sys.executable, str(ROOT / "train.py"), *SMOKE_ARGS,
          f"--workdir={workdir}", "--config.progress_bar=False", *config_flags(RESUME_RUN),
          "--config.eval_every_epochs=5", *extra]


def kill_after_checkpoint(cmd, work, min_step: int, env, last_step: int) -> int:
  """Starts `cmd`, SIGKILLs it as soon as WORKDIR `work` holds a complete checkpoint at or past min_step;
  -> the latest complete step, checked to be before the run's last step."""
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 180
  while time.time() < deadline:
    if any(s >= min_step for s in ckpt_lib.finished_steps(work)):
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(ckpt_lib.finished_steps(work))
  assert killed_at < last_step, "the run finished before it could be killed; make it longer"
  return killed_at


RESUME_ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def resume_config():
  """The config train_cmd trains, in this process."""
  return tiny_config(**RESUME_RUN)


def run_uninterrupted(work):
  ref = subprocess.run(train_cmd(work), cwd=ROOT, env=RESUME_ENV, capture_output=True, text=True)
  assert ref.returncode == 0, ref.stderr[-2000:]


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
  """The 60-step run of train_cmd, uninterrupted, on 8 devices (once per session: session_run.py) ->
  (its final state restored, the target tree), for the SIGKILL and the SIGTERM tests."""
  ref_dir = shared_folder(tmp_path_factory, "resume_uninterrupted", run_uninterrupted)
  target = ckpt_lib.restore_target(run_lib.setup(resume_config(), for_training=False).state)
  return ckpt_lib.Checkpointer(ref_dir, read_only=True).restore(60, target), target


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, uninterrupted_run):
  """SIGKILLed as soon as a checkpoint past step 4 is complete, then re-run: the final parameters and
  optimizer state equal the uninterrupted run's; eval.py (its function and its command line) restores the
  best checkpoint and reproduces the logged accuracy."""
  final, target = uninterrupted_run
  work = tmp_path / "killed"
  kill_after_checkpoint(train_cmd(work), work, 6, RESUME_ENV, last_step=60)
  resumed = subprocess.run(train_cmd(work), cwd=ROOT, env=RESUME_ENV, capture_output=True, text=True)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  start = int(resumed.stdout.split("starting at step ")[1].split()[0])
  assert 6 <= start < 60
  chex.assert_trees_all_close(final, ckpt_lib.Checkpointer(work, read_only=True).restore(60, target),
                              rtol=1e-6, atol=1e-7)
  # eval.py's path restores the best checkpoint and reproduces the logged accuracy.
  result = eval_lib.evaluate_checkpoint(resume_config(), work)
  logged = [r for r in logged_metrics(work) if r["split"] == "test" and r["step"] == result["step"]]
  assert logged and abs(logged[-1]["accuracy"] - result["accuracy"]) < 1e-9
  # The eval.py command line gives the same and writes its JSON.
  cli = subprocess.run([sys.executable, str(ROOT / "eval.py"), *SMOKE_ARGS,
                        f"--workdir={work}", *config_flags(RESUME_RUN), "--visualize=2", "--confusion"], cwd=ROOT, env=RESUME_ENV, capture_output=True, text=True)
  assert cli.returncode == 0, cli.stderr[-2000:]
  written = json.loads((work / f"eval_{result['step']}_test.json").read_text())
  assert written["accuracy"] == result["accuracy"] and written["count"] == 40
  assert len(written["figures"]) == 2
  confusion = np.array(written["confusion"])
  assert confusion.shape == (10, 10) and confusion.sum() == 40
  assert confusion.trace() == round(written["accuracy"] * 40)
  assert "true\\pred" in cli.stdout
  assert all(pathlib.Path(f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in written["figures"])


@pytest.mark.slow
def test_a_run_resumed_after_a_kill_loads_its_programs_from_the_workdir_cache(tmp_path):
  """config.compilation_cache (on by default, the environment's JAX_COMPILATION_CACHE_DIR unset): a run
  keeps its compiled programs in WORKDIR/compilation_cache, and the same command resumed after a SIGKILL
  compiles nothing new until its next checkpoint (every program it needs is already there: no entry is
  added). Off, or with JAX_COMPILATION_CACHE_DIR set (as in the rest of this suite), the workdir holds no
  cache."""
  one_device = {**RESUME_ENV, "XLA_FLAGS": xla_flags(1)}
  env = {k: v for k, v in one_device.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"   # every program, however fast it compiles
  work = tmp_path / "killed"
  cache = work / "compilation_cache"
  kill_after_checkpoint(train_cmd(work), work, 6, env, last_step=60)
  before = sorted(p.name for p in cache.iterdir())
  assert before, "the killed run kept no compiled program"
  # Resumed until it has trained, evaluated and saved again (its every program compiled or loaded).
  assert kill_after_checkpoint(train_cmd(work), work, 20, env, last_step=60) >= 20
  assert sorted(p.name for p in cache.iterdir()) == before
  off = subprocess.run(train_cmd(tmp_path / "off", "--config.total_steps=2", "--config.compilation_cache=False"),
                       cwd=ROOT, env=env, capture_output=True, text=True)
  assert off.returncode == 0, off.stderr[-2000:]
  assert not (tmp_path / "off" / "compilation_cache").exists()
  shared = subprocess.run(train_cmd(tmp_path / "shared", "--config.total_steps=2"), cwd=ROOT, env=one_device,
                          capture_output=True, text=True)
  assert shared.returncode == 0, shared.stderr[-2000:]
  assert not (tmp_path / "shared" / "compilation_cache").exists()


@pytest.mark.slow
def test_sigterm_checkpoints_exits_cleanly_and_resumes_exactly(tmp_path, uninterrupted_run):
  """SIGTERM (preemption) once the first metrics are written: the run checkpoints the step it reached,
  exits with status 0, and the re-run resumes there and ends equal to the uninterrupted run."""
  final, target = uninterrupted_run
  termed = tmp_path / "sigterm"
  proc = subprocess.Popen(train_cmd(termed), cwd=ROOT, env=RESUME_ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
  deadline = time.time() + 120
  while time.time() < deadline and not (termed / "metrics.jsonl").exists():
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0 and "SIGTERM at step" in out, out[-2000:]
  term_step = int(out.split("SIGTERM at step ")[1].split(":")[0])
  assert 0 < term_step < 60 and (termed / "checkpoints" / str(term_step)).is_dir()
  resumed = subprocess.run(train_cmd(termed), cwd=ROOT, env=RESUME_ENV, capture_output=True, text=True)
  assert resumed.returncode == 0 and f"starting at step {term_step}" in resumed.stdout, resumed.stderr[-2000:]
  chex.assert_trees_all_close(final, ckpt_lib.Checkpointer(termed, read_only=True).restore(60, target),
                              rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_streaming_tfds_source_trains(tmp_path):
  """Host-fed batches (a tfds source read on demand, resized on the host) through the same step, made in
  the training process and in two grain worker processes: the same losses and accuracies, to the bit."""
  tfds = pytest.importorskip("tensorflow_datasets")
  records = {}
  for workers in (0, 2):
    config = tiny_config(**{"data.name": "tfds:imagenet2012", "data.in_memory": False, "data.workers": workers,
                            "data.image_size": 24, "total_steps": 4, "batch_size": 8, "log_every_steps": 1})
    with tfds.testing.mock_data(num_examples=24):
      summary = loop.train_and_evaluate(config, tmp_path / str(workers))
    assert summary["final_step"] == 4 and 0.0 <= summary["best_accuracy"] <= 1.0
    records[workers] = logged_metrics(tmp_path / str(workers))
    tests = [r for r in records[workers] if r["split"] == "test"]
    assert tests and all(r["count"] == 24 for r in tests)
  pick = lambda rs: [(r["split"], r["step"], r.get("loss"), r.get("accuracy")) for r in rs]
  assert pick(records[0]) == pick(records[2]) and len([r for r in records[0] if r["split"] == "train"]) == 4


def logged_metrics(workdir):
  from apvit_jax.training.metrics import MetricWriter
  return MetricWriter(workdir).read()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
@pytest.mark.slow
def test_every_config_smoke(path, tmp_path):
  doc = path.read_text()
  assert "python train.py --config=configs/" in doc, f"{path.name}: docstring must give the command"
  config = load_config(path.stem)
  config.progress_bar = False
  summary = loop.train_and_evaluate(config, tmp_path)
  assert summary["final_step"] == config.total_steps
  assert 0.0 <= summary["best_accuracy"] <= 1.0
  assert (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize("override,message", [
    ({"model.patch_size": 7}, "not divisible by patch size 7"),
    ({"model.patch_size": 64}, "patch size 64 is larger than the 40x40 image"),
    ({"model.front_end": "adaptive", "model.adaptive.num_patches": 1601}, "more patches than fit a 40x40"),
    ({"model.front_end": "adaptive", "model.adaptive.num_patches": -1}, "num_patches=-1"),
    ({"batch_size": 12}, "not divisible by the device count"),
    ({"data.name": "imagenet"}, "unknown dataset name 'imagenet'"),
    ({"model.name": "resnet"}, "unknown model.name='resnet'"),
    ({"model.variant": "Q/8"}, "unknown ViT variant 'Q/8'"),
    ({"parallel": "pjit"}, r"unknown parallel='pjit'; choose from \('pmap', 'shard_map'\)"),
    ({"data.name": "cifar10_raw", "data.data_dir": "/nonexistent"}, "missing data files"),
    ({"model.front_end": "adaptive", "model.adaptive.identity_init": True}, "needs bound='reflect'"),
    ({"model.front_end": "adaptive", "model.adaptive.transform": "scale_rotate",
      "model.adaptive.max_scale": 0.9}, "could leave the image; use max_scale <= 0.7071"),
    ({"model.front_end": "adaptive", "model.adaptive.posemb": "sincos"}, "model.adaptive.posemb='sincos'"),
    ({"model.front_end": "patches"}, "unknown model.front_end='patches'"),
    ({"optim.schedule": "step"}, "unknown optim.schedule='step'"),
    ({"model.dtype": "float16"}, "unknown model.dtype='float16'"),
    ({"model.front_end": "adaptive", "model.adaptive.translate_range": "half"},
     "unknown model.adaptive.translate_range='half'"),
])
def test_clear_errors(override, message):
  with pytest.raises(ValueError, match=message):
    run_lib.setup(tiny_config(**override))


def test_compute_dtype_auto_is_float32_on_cpu_and_printed():
  """model.dtype="auto" resolves by backend (bf16 on GPU/TPU, float32 here); explicit values stay."""
  from apvit_jax.models import registry
  assert registry.compute_dtype("auto") == ("bfloat16" if jax.default_backend() in ("gpu", "tpu") else "float32")
  assert registry.compute_dtype("bfloat16") == "bfloat16" and registry.compute_dtype("float32") == "float32"
  run = run_lib.setup(tiny_config(**{"model.dtype": "auto"}))
  line = [l for l in run_lib.summary_lines(run, "w", 0) if l.startswith("model:")][0]
  assert f"dtype {registry.compute_dtype('auto')} (model.dtype=auto)" in line
  assert jax.tree.leaves(run.state.params)[0].dtype == jnp.float32  # parameters stay float32


def test_state_donation_auto_is_off_on_cpu_on_elsewhere_and_printed(monkeypatch):
  """donate_state="auto": no donation on a CPU (XLA:CPU copies every donated leaf each step), donation on
  GPU/TPU; "true"/"false" are honoured anywhere; the summary says which."""
  assert not run_lib.donates_state(tiny_config(donate_state="auto"))
  assert run_lib.donates_state(tiny_config(donate_state="true"))
  assert not run_lib.donates_state(tiny_config(donate_state="false"))
  run = run_lib.setup(tiny_config(donate_state="auto"))
  assert "train state not donated (donate_state=auto)" in run_lib.summary_lines(run, "w", 0)[0]
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert run_lib.donates_state(tiny_config(donate_state="auto"))
  assert not run_lib.donates_state(tiny_config(donate_state="false"))


@pytest.mark.slow
def test_donated_and_undonated_steps_train_alike():
  """Donation only decides where the new state is written: three steps give the same losses and
  parameters bit for bit, and only a donated state's buffers are gone after the call."""
  devices, first = jax.devices()[:2], {"true": [], "false": []}
  donated = run_steps(tiny_config(donate_state="true"), devices, 3, initial=first["true"])
  kept = run_steps(tiny_config(donate_state="false"), devices, 3, initial=first["false"])
  np.testing.assert_array_equal(donated[0], kept[0])
  chex.assert_trees_all_equal(donated[1], kept[1])
  assert jax.tree.leaves(first["true"][0].params)[0].is_deleted()
  assert not any(x.is_deleted() for x in jax.tree.leaves(first["false"][0].params))


def test_initialisation_compiles_at_level_1_on_a_cpu_unless_the_flags_say_otherwise(monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  assert state_lib.init_compiler_options() == {"xla_backend_optimization_level": 1}
  monkeypatch.delenv("XLA_FLAGS")
  assert state_lib.init_compiler_options() == {"xla_backend_optimization_level": 1}
  monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=2")
  assert state_lib.init_compiler_options() == {}
  monkeypatch.delenv("XLA_FLAGS")
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert state_lib.init_compiler_options() == {}


@pytest.mark.slow
def test_initial_state_at_level_1_is_the_default_levels_bit_for_bit(monkeypatch):
  """The initial variables and optimizer state compiled at XLA level 1 (what a CPU run uses) equal those at
  level 3 (XLA's default, what every other program of a run is compiled at) bit for bit: an APViT
  (localisation network, patch and position embeddings, encoder, head) with two replicas (the vmapped
  initialisation). Level 2, which no run uses, is not compiled (it agreed too when measured, and took a
  third of this test's ~15 s)."""
  config = set_fields(load_config("apvit_quickstart"), {**TINY_MODEL, "num_seeds": 2})
  run = run_lib.setup(config, for_training=False)   # the model and optimizer; its state is shapes only
  keys = jax.random.split(jax.random.key(0))   # (2,): one per replica
  states = []
  for level in (1, 3):
    monkeypatch.setattr(state_lib, "init_compiler_options", lambda level=level: {
        "xla_backend_optimization_level": level})
    state = state_lib.create_state(run.model, run.state.tx, keys, run.dataset.image_shape)
    states.append((state.params, state.opt_state))
  assert jax.tree.leaves(states[0][0])[0].shape[0] == 2
  chex.assert_trees_all_equal(*states)


def test_summary_says_how_batches_are_fed():
  data_line = lambda run: [l for l in run_lib.summary_lines(run, "w", 0) if l.startswith("data:")][0]
  assert data_line(run_lib.setup(tiny_config())).endswith("on every device (batches carry indices)")
  streamed = {"data.name": "mnist_resized", "data.digits": "builtin", "data.image_size": 40}
  assert data_line(run_lib.setup(tiny_config(**streamed, **{"data.workers": 2}))).endswith(
      "streamed, made by 2 grain worker processes (data.workers=2)")
  assert data_line(run_lib.setup(tiny_config(**streamed, **{"data.workers": 0}))).endswith(
      "streamed, made in this process (data.workers=0)")


@pytest.mark.slow
def test_shard_map_run_resumes_under_pmap(tmp_path):
  """A checkpoint written under shard_map resumes under pmap and continues as one uninterrupted run."""
  loop.train_and_evaluate(tiny_config(total_steps=8, parallel="shard_map"), tmp_path / "ref")
  keep = {"checkpoint.keep_latest": 2}
  loop.train_and_evaluate(tiny_config(total_steps=8, parallel="shard_map", **keep), tmp_path / "mixed")
  # Move the final checkpoint aside, so the latest is the one at the end of epoch 1 (step 4).
  (tmp_path / "mixed" / "checkpoints" / "8").rename(tmp_path / "mixed" / "8.moved")
  summary = loop.train_and_evaluate(tiny_config(total_steps=8, parallel="pmap", **keep), tmp_path / "mixed")
  assert summary["final_step"] == 8
  starts = [json.loads(line)["start_step"] for line in (tmp_path / "mixed" / "runs.jsonl").open()]
  assert starts == [0, 4]
  config = tiny_config(total_steps=8)
  target = ckpt_lib.restore_target(run_lib.setup(config, for_training=False).state)
  a, b = (ckpt_lib.Checkpointer(tmp_path / d, read_only=True).restore(8, target) for d in ("ref", "mixed"))
  assert int(b["step"]) == 8
  chex.assert_trees_all_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_mismatched_checkpoint_is_refused_and_kept(tmp_path):
  loop.train_and_evaluate(tiny_config(total_steps=4), tmp_path)
  before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
  with pytest.raises(ckpt_lib.CheckpointMismatch, match="does not match"):
    loop.train_and_evaluate(tiny_config(total_steps=8, **{"model.variant": "Ti/8"}), tmp_path)
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before


@pytest.mark.slow
def test_rerunning_a_finished_run_changes_nothing(tmp_path):
  config = tiny_config(total_steps=4)
  loop.train_and_evaluate(config, tmp_path)
  before = {p: p.stat().st_mtime_ns for p in (tmp_path / "checkpoints").rglob("*")}
  summary = loop.train_and_evaluate(tiny_config(total_steps=4), tmp_path)
  assert summary["final_step"] == 4
  assert {p: p.stat().st_mtime_ns for p in (tmp_path / "checkpoints").rglob("*")} == before


@pytest.mark.parametrize("flag,message", [
    ("--config.modle.variant=S/8", "modle"),                       # unknown field
    ("--config.batch_size=many", "batch_size"),                    # wrong type
    ("--config.optim.lr=fast", "optim.lr"),
    ("--config=configs/quickstart.py:tiny", "unknown config arg 'tiny'"),
    ("--config.optim.lr=-1.0", "config error: config.optim.lr=-1.0: must be in (0.0, inf]"),   # a rule
    ("--config.model.patch_size=64", "config error: patch size 64 is larger than the 40x40 image"),  # vs data
])
def test_bad_command_line_fails_before_any_work(tmp_path, flag, message):
  """A clear message on stderr, nothing written; a config error (ours) also without a traceback (nothing is
  wrong with the program). The command-line parse errors are absl's and ml_collections' own."""
  args = train_cmd(tmp_path, flag)
  if flag.startswith("--config="):  # replaces the config file itself
    args.remove(SMOKE_ARGS[0])
  out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
  assert out.returncode != 0 and message in out.stderr, out.stderr[-2000:]
  if message.startswith("config error"):
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
  assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize("async_save", [False, True])
def test_retired_checkpoints_move_out_whole_then_go(tmp_path, async_save):
  """A step the retention policy retires is renamed into checkpoints/retired/ in one move (what a process
  killed then leaves is either a whole checkpoint or nothing under a step's name), and removed from there
  by the next save, by close, or by the next Checkpointer (a removal cut short)."""
  state = {"w": np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32), "step": np.int32(0)}
  ckpt = ckpt_lib.Checkpointer(tmp_path, async_save=async_save, keep_latest=1)
  retired = tmp_path / "checkpoints" / ckpt_lib.RETIRED
  for step, accuracy in ((2, 0.5), (4, 0.1), (6, 0.2)):
    ckpt.save(step, {**state, "step": np.int32(step)}, {"accuracy": accuracy})
  ckpt.wait()
  assert ckpt_lib.finished_steps(tmp_path) == [2, 6]   # the best and the latest
  assert sorted(p.name for p in retired.iterdir()) == ["4"]   # moved whole ...
  assert (retired / "4" / "state").is_dir()
  ckpt.close()
  assert list(retired.iterdir()) == []                        # ... then removed
  (retired / "8" / "state").mkdir(parents=True)               # a removal a killed process left
  ckpt_lib.Checkpointer(tmp_path, keep_latest=1).close()
  assert list(retired.iterdir()) == []
  for step in (2, 6):
    assert int(ckpt_lib.Checkpointer(tmp_path, read_only=True).restore_saved(step)["step"]) == step


@pytest.mark.slow
def test_corrupted_checkpoint_is_named_and_left_untouched(tmp_path):
  loop.train_and_evaluate(tiny_config(total_steps=4), tmp_path)
  step_dir = tmp_path / "checkpoints" / "4"
  data = max((f for f in step_dir.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
  data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])   # a half-copied file
  before = {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()}
  with pytest.raises(ckpt_lib.CheckpointCorrupt, match=f"checkpoint {step_dir} is corrupted or truncated"):
    loop.train_and_evaluate(tiny_config(total_steps=8), tmp_path)
  assert {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()} == before


@pytest.mark.slow
def test_nonfinite_loss_stops_with_the_step_or_is_skipped(tmp_path):
  """An absurd learning rate makes the loss NaN within a few steps: by default the run stops naming the
  step and the kept checkpoint; with skip_nonfinite_steps the bad steps change nothing and it finishes."""
  blowup = {"optim.lr": 1e12, "optim.warmup_epochs": 0.0, "total_steps": 8,
            "log_every_steps": 1}
  loop.train_and_evaluate(tiny_config(total_steps=4, log_every_steps=1), tmp_path / "run")
  with pytest.raises(FloatingPointError, match=r"at step [5-8] .* step 4 in .*checkpoints, is kept"):
    loop.train_and_evaluate(tiny_config(**blowup), tmp_path / "run")
  assert ckpt_lib.Checkpointer(tmp_path / "run", read_only=True).latest_step() == 4
  summary = loop.train_and_evaluate(tiny_config(skip_nonfinite_steps=True, **blowup), tmp_path / "run")
  assert summary["final_step"] == 8
  skipped = [r["skipped"] for r in logged_metrics(tmp_path / "run") if r["split"] == "train" and "skipped" in r]
  assert len(skipped) == 4 and max(skipped) == 1.0
  params = ckpt_lib.Checkpointer(tmp_path / "run", read_only=True).restore_saved(8)["params"]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


@pytest.mark.parametrize("script,flags", [("train.py", ["--config", "--workdir"]),
                                          ("eval.py", ["--config", "--workdir", "--step", "--split",
                                                       "--visualize", "--confusion", "--output", "--seed_index"])])
def test_help_explains_every_flag(script, flags):
  out = subprocess.run([sys.executable, str(ROOT / script), "--helpshort"], cwd=ROOT, capture_output=True,
                       text=True)
  text = out.stdout  # absl exits with status 1 after printing the help
  assert "python " + script in text, out.stderr[-1000:]  # the usage line from the module docstring
  for flag in flags:
    name = flag.removeprefix("--")
    head = f"  --{name}:" if f"  --{name}:" in text else f"  --[no]{name}:"
    entry = text.split(head)[1].split("\n  --")[0]
    assert len(entry.split()) >= 4, (flag, entry)  # a sentence, not a bare name


def test_set_fields_refuses_unknown_fields():
  """A typo in a benchmark's --set or a test's override is an error naming it, locked config or not."""
  from apvit_jax.base_config import base_config
  c = base_config()
  with pytest.raises(KeyError, match="'model.widht'"):
    set_fields(c, {"model.widht": 3})
  with pytest.raises(KeyError, match="'modle.width'"):
    set_fields(c, {"modle.width": 3})
  with pytest.raises(KeyError, match="'batch_size.x'"):
    set_fields(c, {"batch_size.x": 3})
  assert "widht" not in c.model and set_fields(c, {"model.width": 24}).model.width == 24


@pytest.mark.slow
def test_step_ms_excludes_evaluation_and_checkpoints(tmp_path, monkeypatch):
  """log_efficiency's step_ms after an evaluation measures training steps only."""
  real = eval_lib.evaluate

  def slow_evaluate(*args, **kwargs):
    time.sleep(1.5)
    return real(*args, **kwargs)
  monkeypatch.setattr(eval_lib, "evaluate", slow_evaluate)
  loop.train_and_evaluate(tiny_config(total_steps=8, log_every_steps=1, log_efficiency=True), tmp_path)
  step_ms = {r["step"]: r["step_ms"] for r in logged_metrics(tmp_path) if r["split"] == "train" and "step_ms" in r}
  assert 5 in step_ms and set(step_ms) >= {2, 3, 4, 5, 6, 7, 8}   # step 5: the first after an evaluation
  assert max(step_ms.values()) < 1000, step_ms


def test_resuming_and_evaluating_restore_into_shapes_without_initialising(tmp_path, monkeypatch):
  """A run set up to resume, or to evaluate, holds only the state's shapes: the initialisation program is
  neither compiled nor run (create_state raises here), and a checkpoint restores into those shapes what was
  saved, bit for bit. Set up to resume where no step restores, the run initialises as a fresh one does."""
  config = tiny_config(total_steps=4)
  fresh = run_lib.setup(config)
  rng = np.random.default_rng(0)
  perturb = lambda x: (x + rng.standard_normal(x.shape)).astype(x.dtype) if np.issubdtype(x.dtype, np.floating) else x
  saved = {**jax.tree.map(perturb, jax.device_get(ckpt_lib.state_to_save(fresh.state))), "step": np.int64(3)}
  ckpt = ckpt_lib.Checkpointer(tmp_path, async_save=False)
  ckpt.save(3, saved, {"accuracy": 0.5})
  ckpt.close()

  def initialised(*args, **kwargs):
    raise AssertionError("the initialisation program was built")
  with monkeypatch.context() as patch:
    patch.setattr(state_lib, "create_state", initialised)
    for run in (run_lib.setup(config, resuming=True), run_lib.setup(config, for_training=False)):
      assert state_lib.is_shapes(run.state)
      chex.assert_trees_all_equal_shapes_and_dtypes(ckpt_lib.state_to_save(run.state),
                                                   ckpt_lib.state_to_save(fresh.state))
      restored = run_lib.start_state(run, ckpt_lib.Checkpointer(tmp_path, read_only=True))
      assert int(restored.step) == 3
      chex.assert_trees_all_equal(ckpt_lib.state_to_save(restored), saved)
    assert eval_lib.evaluate_checkpoint(config, tmp_path)["step"] == 3
  empty = tmp_path / "empty"
  started = run_lib.start_state(run_lib.setup(config, resuming=True), ckpt_lib.Checkpointer(empty))
  assert not state_lib.is_shapes(started) and int(started.step) == 0
  chex.assert_trees_all_equal(jax.device_get(ckpt_lib.state_to_save(started)),
                              jax.device_get(ckpt_lib.state_to_save(fresh.state)))


@pytest.mark.slow
def test_evaluation_and_resume_do_not_need_a_moved_init_from(tmp_path):
  """config.init_from is read when a run starts; evaluating or resuming it later does not need it."""
  loop.train_and_evaluate(tiny_config(total_steps=2), tmp_path / "source")
  config = lambda steps: tiny_config(total_steps=steps, init_from=str(tmp_path / "source"))
  loop.train_and_evaluate(config(4), tmp_path / "run")
  (tmp_path / "source").rename(tmp_path / "moved")
  assert eval_lib.evaluate_checkpoint(config(4), tmp_path / "run")["step"] == 4
  assert loop.train_and_evaluate(config(8), tmp_path / "run")["final_step"] == 8
  with pytest.raises(FileNotFoundError, match="init_from"):   # a new run still needs it
    loop.train_and_evaluate(config(4), tmp_path / "new")


@pytest.mark.slow
def test_metrics_file_cut_mid_line_still_resumes_and_evaluates(tmp_path):
  """A kill during a metrics write leaves a partial last line: resuming sets it aside (kept in
  metrics.jsonl.partial) and goes on; every line of metrics.jsonl is a record again."""
  loop.train_and_evaluate(tiny_config(total_steps=4), tmp_path)
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 5, "split": "tra')
  assert logged_metrics(tmp_path)[-1]["split"] == "summary"   # readable as it is
  summary = loop.train_and_evaluate(tiny_config(total_steps=8), tmp_path)
  assert summary["final_step"] == 8
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert all(json.loads(line) for line in lines)
  assert (tmp_path / "metrics.jsonl.partial").read_text() == '{"step": 5, "split": "tra\n'
  assert eval_lib.evaluate_checkpoint(tiny_config(total_steps=8), tmp_path)["step"] == 8


@pytest.mark.slow
def test_disk_full_stops_clearly_and_keeps_earlier_checkpoints(tmp_path, monkeypatch):
  """A save the file system refuses (ENOSPC, injected where orbax's manager is called) stops the run with
  a message naming the directory; the earlier checkpoint stays restorable and the same command resumes."""
  import errno
  import re
  import orbax.checkpoint as ocp
  loop.train_and_evaluate(tiny_config(total_steps=4), tmp_path)
  real = ocp.CheckpointManager.save

  def full_disk(self, step, *args, **kwargs):
    if step == 8:
      raise OSError(errno.ENOSPC, "No space left on device")
    return real(self, step, *args, **kwargs)
  monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
  with pytest.raises(ckpt_lib.CheckpointWriteError, match=re.escape(f"step 8 in {tmp_path / 'checkpoints'} failed: "
                                                                    "No space left on device") + r".*steps \[4\]"):
    loop.train_and_evaluate(tiny_config(total_steps=8), tmp_path)
  monkeypatch.undo()
  ckpt = ckpt_lib.Checkpointer(tmp_path, read_only=True)
  assert ckpt.manager.all_steps() == [4] and int(ckpt.restore_saved(4)["step"]) == 4
  assert loop.train_and_evaluate(tiny_config(total_steps=8), tmp_path)["final_step"] == 8


@pytest.mark.slow
def test_asynchronous_save_failing_in_the_file_system_stops_clearly(tmp_path):
  """A real write failure inside orbax's background writer: the file size limit (RLIMIT_FSIZE, lowered for
  this process only) makes tensorstore's writes of step 6 fail with EFBIG, which it reports as a ValueError
  with an OS error code. The run stops at its next save naming step 6 and the directory; the checkpoints
  from before (step 4, and step 2 where it is the best so far) are kept (retention deleted nothing) and
  restorable, nothing half-written is listed, and the same command resumes."""
  import re
  import resource
  config = lambda steps: tiny_config(**{"data.num_train": 32, "total_steps": steps,
                                        "checkpoint.async_save": True})
  loop.train_and_evaluate(config(4), tmp_path)
  kept = ckpt_lib.finished_steps(tmp_path)
  assert kept[-1] == 4, kept
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  biggest = max(p.stat().st_size for p in (tmp_path / "checkpoints" / "4").rglob("*") if p.is_file())
  resource.setrlimit(resource.RLIMIT_FSIZE, (biggest // 4, hard))   # the metrics lines still fit
  # Nor would the session's compilation cache entries: no cache writes under the limit (a cut-off entry
  # is a warning here and a truncated file that the next process to read it warns about and recompiles).
  min_compile_time = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float("inf"))
  try:
    with pytest.raises(ckpt_lib.CheckpointWriteError,
                       match=re.escape(f"step 6 in {tmp_path / 'checkpoints'} failed: File too large") +
                       r".*" + re.escape(f"(steps {kept}) are kept")):
      loop.train_and_evaluate(config(8), tmp_path)
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time)
  assert ckpt_lib.finished_steps(tmp_path) == kept
  ckpt = ckpt_lib.Checkpointer(tmp_path, read_only=True)
  assert ckpt.manager.all_steps() == kept and all(int(ckpt.restore_saved(s)["step"]) == s for s in kept)
  ckpt.close()
  assert loop.train_and_evaluate(config(8), tmp_path)["final_step"] == 8
  assert ckpt_lib.Checkpointer(tmp_path, read_only=True).latest_step() == 8


def test_the_workdir_cache_is_chosen_only_where_no_other_is_and_the_folder_can_be_made(tmp_path, monkeypatch):
  """compilation_cache.use_workdir_cache's choices, with JAX's setting recorded instead of changed."""
  from apvit_jax.training import compilation_cache
  updates = []
  monkeypatch.setattr(jax.config, "update", lambda name, value: updates.append((name, value)))
  monkeypatch.setattr(compilation_cache, "_chosen", lambda: "/elsewhere")
  assert compilation_cache.use_workdir_cache(True, tmp_path / "a") == "/elsewhere" and not updates
  monkeypatch.setattr(compilation_cache, "_chosen", lambda: None)
  assert compilation_cache.use_workdir_cache(False, tmp_path / "a") is None and not updates
  assert not (tmp_path / "a").exists()
  (tmp_path / "file").write_text("not a folder")   # the folder cannot be made under it
  assert compilation_cache.use_workdir_cache(True, tmp_path / "file") is None and not updates
  folder = str(tmp_path / "a" / "compilation_cache")
  assert compilation_cache.use_workdir_cache(True, tmp_path / "a") == folder
  assert updates == [("jax_compilation_cache_dir", folder)] and (tmp_path / "a" / "compilation_cache").is_dir()


def test_the_persistent_cache_is_turned_off_in_multi_process_cpu_runs_only(monkeypatch):
  """jax 0.12.1 hangs running a multi-process CPU program loaded from the persistent cache (the two-process
  tests of test_distributed.py hang there without this), so such runs turn the cache off; a run of one
  process keeps it. JAX's setting recorded instead of changed."""
  from apvit_jax.training import compilation_cache
  updates = []
  monkeypatch.setattr(jax.config, "update", lambda name, value: updates.append((name, value)))
  assert not compilation_cache.off_for_multiprocess_cpu() and not updates   # this process: one
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  assert compilation_cache.off_for_multiprocess_cpu()
  assert updates == [("jax_enable_compilation_cache", False)]
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert not compilation_cache.off_for_multiprocess_cpu() and len(updates) == 1
