"""Multi-process training: a real two-process run on localhost (jax.distributed over gloo, two fake CPU
devices per process, each process building only its own half of every global batch) logs the same losses
and ends with the same parameters as one process with four devices."""
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import chex
import pytest

from apvit_jax.base_config import set_fields
from apvit_jax.training import checkpoint as ckpt_lib
from apvit_jax.training import run as run_lib
from subprocess_env import xla_flags
from test_training import SMOKE_ARGS, TINY_MODEL, load_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 6
# SGD with momentum: the update is linear in the gradient, so a different summation order stays float32
# rounding. (Adam's normalised step turns the rounding noise of ~0 gradients, e.g. the attention key
# biases' exact zeros, into lr-sized moves: one entry in 16k differed by 2.6e-6 on jax 0.12.)
SGD = {"optim.name": "sgd", "optim.lr": 0.1, "optim.grad_clip": 0.0}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def command(workdir, mode, steps=STEPS, async_save=False):
  return [sys.executable, str(ROOT / "train.py"), *SMOKE_ARGS,
          f"--workdir={workdir}", f"--config.parallel={mode}", "--config.progress_bar=False",
          "--config.log_every_steps=1", f"--config.total_steps={steps}",
          f"--config.checkpoint.async_save={async_save}", *(f"--config.{k}={v}" for k, v in SGD.items())]


def two_processes(workdir, mode, **kwargs) -> list[subprocess.Popen]:
  """The same command started as process 0 and 1 of a jax.distributed run on localhost."""
  port = free_port()
  return [subprocess.Popen(command(workdir, mode, **kwargs), cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True,
                           env={**base_env(2), "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
                                "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i)})
          for i in range(2)]


def finish(procs, timeout=400) -> list[str]:
  """Waits for every process; -> their stdouts (each checked to have exited with 0)."""
  try:
    outs = [p.communicate(timeout=timeout) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return [out for out, _ in outs]


def base_env(devices: int) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROC",
                                                                 "JAX_PROCESS_ID"))}
  return {**env, "XLA_FLAGS": xla_flags(devices), "JAX_PLATFORMS": "cpu"}


def train_losses(workdir) -> dict:
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


def test_importing_the_entry_points_leaves_the_backend_uninitialised():
  """jax.distributed.initialize() must come before any backend use; a module-level jnp constant broke
  every multi-host start once. Checked in a fresh interpreter."""
  code = ("from jax._src import xla_bridge as xb\n"
          "import train, apvit_jax.training.loop, apvit_jax.visualize, apvit_jax.plot\n"
          "import configs.quickstart as q, configs.apvit_cifar10 as a, configs.pit_t_cifar100 as p\n"
          "q.get_config('smoke'); a.get_config('smoke'); p.get_config('smoke')\n"
          "assert not xb._backends, list(xb._backends)\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**base_env(2), "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
  """One reference process (4 devices) and two 2-process runs (pmap and shard_map), all at once."""
  ref_dir = tmp_path / "one_process"
  procs = {ref_dir: [subprocess.Popen(command(ref_dir, "shard_map"), cwd=ROOT, env=base_env(4),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]}
  for mode in ("pmap", "shard_map"):
    procs[tmp_path / mode] = two_processes(tmp_path / mode, mode)
  outs = {d: finish(ps) for d, ps in procs.items()}
  assert "devices: 4 (cpu, 1 host(s))" in outs[ref_dir][0] and "compilation cache" not in outs[ref_dir][0]
  expected = train_losses(ref_dir)
  assert sorted(expected) == list(range(1, STEPS + 1))
  target = ckpt_lib.restore_target(run_lib.setup(_config("shard_map"), for_training=False).state)
  reference = ckpt_lib.Checkpointer(ref_dir, read_only=True).restore(STEPS, target)
  for mode in ("pmap", "shard_map"):
    out0, out1 = outs[tmp_path / mode]
    assert "devices: 4 (cpu, 2 host(s))" in out0 and "compilation cache: off" in out0
    assert "FINAL" in out0 and "FINAL" not in out1  # process 0 alone reports
    got = train_losses(tmp_path / mode)
    assert sorted(got) == sorted(expected)
    for s in expected:
      assert abs(got[s] - expected[s]) <= 1e-5 * abs(expected[s]), (mode, s, got[s], expected[s])
    final = ckpt_lib.Checkpointer(tmp_path / mode, read_only=True).restore(STEPS, target)
    chex.assert_trees_all_close(final, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_one_host_preempted_both_stop_at_one_step_and_resume_exactly(tmp_path):
  """SIGTERM to process 1 only (the host that a TPU pod or a scheduler preempts): JAX's preemption sync
  point makes both processes stop at the same step with one complete checkpoint; the same command on both
  resumes from it and ends equal to an uninterrupted two-process run."""
  steps = 40
  # The uninterrupted run trains alongside (its own coordinator port): the test waits for it only at the end.
  reference = two_processes(tmp_path / "reference", "shard_map", steps=steps, async_save=True)
  try:
    work = tmp_path / "preempted"
    procs = two_processes(work, "shard_map", steps=steps, async_save=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (work / "metrics.jsonl").exists():   # training has started
      assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs]
      time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
    outs = finish(procs)
    stopped = [re.search(r"preemption at step (\d+) \(process (\d) of 2\)", out) for out in outs]
    assert all(stopped), outs
    step = int(stopped[0].group(1))
    assert int(stopped[1].group(1)) == step and 0 < step < steps, outs
    assert "FINAL" not in outs[0] + outs[1]
    assert ckpt_lib.finished_steps(work)[-1] == step and not [p for p in (work / "checkpoints").iterdir() if "tmp" in p.name]
    resumed = finish(two_processes(work, "shard_map", steps=steps, async_save=True))
    assert f"starting at step {step}" in resumed[0] and "FINAL" in resumed[0]   # process 0 reports
    finish(reference)
    assert train_losses(work) == train_losses(tmp_path / "reference")   # every step's loss, to the bit
    target = ckpt_lib.restore_target(run_lib.setup(_config("shard_map"), for_training=False).state)
    final = [ckpt_lib.Checkpointer(d, read_only=True).restore(steps, target) for d in (work, tmp_path / "reference")]
    chex.assert_trees_all_equal(*final)
  finally:
    for p in reference:   # a failure above leaves no process behind
      p.kill()


def _config(mode):
  """The config the commands above train (SMOKE_ARGS with SGD), in this process."""
  return set_fields(load_config("quickstart"), {**TINY_MODEL, **SGD, "parallel": mode, "total_steps": STEPS})
