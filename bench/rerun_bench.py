"""A second run in the same process (a sweep over seeds in a notebook, an evaluation after training): how
long a run takes from its config to its first finished train step and evaluation step, the first time,
again with the programs it shares with the first run (training/shared_programs.py), and again after
shared_programs.clear() (every program traced, lowered and loaded from the persistent compilation cache
again, as every run did before programs were shared). The reruns alternate, each with a new seed; the
medians are reported. As train.py does with a workdir (config.compilation_cache), the programs go to a
persistent compilation cache: the environment's JAX_COMPILATION_CACHE_DIR, else a temporary one, so a
rerun with nothing shared loads its programs rather than compiling them (programs that took at least
jax_persistent_cache_min_compile_time_secs, 1 s by default, to compile).
"""
from __future__ import annotations

import atexit
import shutil
import statistics
import tempfile
import time

import jax

from apvit_jax.training import compilation_cache, feed, run as run_lib, shared_programs
from apvit_jax.training.evaluate import evaluate
from bench import common, step_bench


def start_seconds(name: str, *, batch_size: int, seed: int, extra: dict) -> float:
  """Seconds from the config to the first train step's result and an evaluation of the test split (one
  batch: step_bench.workload_config makes the test split one global batch)."""
  config = step_bench.workload_config(name, batch_size, 4, {**extra, "seed": seed})
  t = time.perf_counter()
  run = run_lib.setup(config)
  state = run.par.replicate(run.state)
  data = feed.device_data(run.par, run.dataset.train)
  batch = feed.train_batch_maker(run)(0)
  state, metrics = run_lib.compile_train_step(run)(state, data, batch, run_lib.train_key(run))
  jax.block_until_ready(metrics)
  evaluate(run, state, run_lib.compile_eval_step(run), feed.device_data(run.par, run.dataset.test), run.dataset.test)
  return time.perf_counter() - t


def run(*, workloads, batch_size: int, repeats: int, extra: dict) -> list[dict]:
  cache = tempfile.mkdtemp(prefix="rerun_bench_")
  atexit.register(shutil.rmtree, cache, ignore_errors=True)
  print(f"persistent compilation cache: {compilation_cache.use_workdir_cache(True, cache)}")
  rows = []
  for name in workloads:
    print(f"... {name}", flush=True)
    first = start_seconds(name, batch_size=batch_size, seed=0, extra=extra)
    shared, cleared = [], []
    for i in range(repeats):
      shared.append(start_seconds(name, batch_size=batch_size, seed=2 * i + 1, extra=extra))
      shared_programs.clear()
      cleared.append(start_seconds(name, batch_size=batch_size, seed=2 * i + 2, extra=extra))
    row = {"workload": name, "first_s": first, "rerun_shared_s": statistics.median(shared),
           "rerun_cleared_s": statistics.median(cleared), "repeats": repeats}
    row["speedup"] = row["rerun_cleared_s"] / row["rerun_shared_s"]
    rows.append(row)
    shared_programs.clear()
  print(common.table(rows, [
      ("workload", "workload", ""), ("first_s", "first run s", ".2f"),
      ("rerun_cleared_s", "rerun, nothing shared s", ".2f"), ("rerun_shared_s", "rerun, programs shared s", ".2f"),
      ("speedup", "shared vs not", ".1f")]))
  return rows
