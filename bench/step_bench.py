"""Full training steps of the project's configs, built exactly as train.py builds them (run.setup and run.compile_train_step, the
same train step with on-device augmentation, the same batch path), on synthetic images of each
config's shape (throughput does not depend on pixel values; Megapixel MNIST draws its canvases from the
built-in digits, as it would from MNIST).

Per workload: compile time (lower + compile), the median step time with the batch already on device,
the host's time to make and ship a batch, the median step time as the trainer runs it (batch s+1 made in
a background thread while step s runs), images/s (per replica: with config.num_seeds = K a step trains
K replicas, see bench/seeds_bench.py), FLOPs per step from XLA's cost analysis (loop bodies the model
family names counted for every iteration: loop_counted_flops), and MFU where the device's peak is known,
and everywhere the achieved FLOP/s as a share of a measured large matmul in the workload's dtype (the
practical compute roof; the only one on CPU). Memory: what XLA's buffer
assignment needs for one step per device (arguments + outputs + temporaries - donated buffers), and on
GPU/TPU the allocator's peak where this workload raised the process's peak (none otherwise: run one
workload per process for its own peak).
"""
from __future__ import annotations

import importlib.util
import pathlib
import time
from typing import Any, NamedTuple

import jax

from apvit_jax.base_config import set_fields
from apvit_jax.models import registry
from apvit_jax.models.vit import attention_fallbacks
from apvit_jax.training import feed, replicas, run as run_lib
from bench import common

ROOT = pathlib.Path(__file__).resolve().parents[1]

# name -> (config file, overrides, the reference batch of the table)
WORKLOADS = {
    "std_vit_cifar10": ("std_vit_cifar10", {"data.name": "synthetic:32x32x3:10"}),
    "dps_vit_cifar10": ("dps_vit_cifar10", {"data.name": "synthetic:32x32x3:10"}),
    "apvit_cifar10": ("apvit_cifar10", {"data.name": "synthetic:32x32x3:10"}),
    "vit_s16_224": ("vit_cifar10", {"data.name": "synthetic:224x224x3:1000", "model.variant": "S/16",
                                    "batch_size": 256, "augment.crop_padding": 16}),
    "pit_t_32": ("pit_t_cifar100", {"data.name": "synthetic:32x32x3:100", "batch_size": 256}),
    "vit_t2_32": ("vit_t2_cifar100", {"data.name": "synthetic:32x32x3:100", "batch_size": 512}),
    "ips_megapixel_mnist": ("ips_megapixel_mnist", {"data.digits": "builtin", "batch_size": 16,
                                                    "model.ips.memory": 100}),   # the GPU issue's M = I = 100
    "ips_quickstart": ("ips_quickstart", {"data.digits": "builtin"}),   # the CPU-sized IPS, batch 16
}


def load_config(name: str, arg: str | None = None):
  """configs/<name>.py's get_config(arg) (arg: the part after ':' on the command line, e.g. "smoke")."""
  spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def workload_config(name: str, batch_size: int, steps: int, extra: dict):
  file, overrides = WORKLOADS[name]
  config = load_config(file)
  set_fields(config, {**overrides, **extra})
  if batch_size:
    config.batch_size = batch_size
  # Whole calls of config.steps_per_call steps fit every epoch: no one-step remainders are timed.
  config.data.num_train = config.batch_size * config.steps_per_call * max(4, min(steps, 16))
  config.data.num_test = config.batch_size
  config.progress_bar = False
  return config


class BuiltStep(NamedTuple):
  """A workload's train step as the trainer builds it, compiled, with what one call takes."""
  config: Any
  run: Any          # run_lib.Run
  state: Any        # replicated over the run's devices
  data: Any         # device-resident data (feed.device_data)
  make_batch: Any   # step -> the batch of that call
  batch: Any        # make_batch(0): the batch the step was compiled for
  key: Any
  compiled: Any     # (state, data, batch, key) -> (state, metrics)
  compile_s: float
  steps_per_call: int


def build_step(name: str, *, batch_size: int, steps: int, extra: dict) -> BuiltStep:
  """Sets up workload `name` (a config of WORKLOADS with `extra` overrides) and compiles its train step for
  `steps` timed calls; refuses host-side selection (IPS lazy loading), which is not one device program."""
  config = workload_config(name, batch_size, steps, extra)
  run = run_lib.setup(config)
  if run.host_inputs:
    raise ValueError(f"{name}: the benchmark times on-device selection; use model.ips.loading=eager")
  state = run.par.replicate(run.state)
  data = feed.device_data(run.par, run.dataset.train)
  k = config.steps_per_call   # > 1: a call runs k steps (a lax.scan); times are per step (call / k)
  step_fn = run_lib.compile_train_step(run, k)
  make_batch = feed.train_batch_maker(run, steps_per_call=k)
  key = run_lib.train_key(run)   # (K,) keys with config.num_seeds = K > 1
  batch = make_batch(0)
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, data, batch, key).compile()
  return BuiltStep(config, run, state, data, make_batch, batch, key, compiled, time.perf_counter() - t0, k)


def time_workload(name: str, *, batch_size: int, warmup: int, repeats: int, extra: dict) -> dict:
  device = jax.devices()[0]
  peak_before = common.runtime_peak_gib(device)
  built = build_step(name, batch_size=batch_size, steps=warmup + repeats, extra=extra)
  config, run, compiled, k = built.config, built.run, built.compiled, built.steps_per_call
  data, key, make_batch, par = built.data, built.key, built.make_batch, built.run.par
  state, batch = built.state, built.batch

  def step(batch):
    nonlocal state
    state, metrics = compiled(state, data, batch, key)
    return metrics

  step_s = common.median_seconds(lambda: jax.block_until_ready(step(batch)), warmup=warmup, repeats=repeats) / k
  batch_s = common.median_seconds(lambda: jax.block_until_ready(make_batch(k)), warmup=1,
                                  repeats=max(3, repeats // 2)) / k
  # As the trainer runs (feed.train_batches): streamed batches made by grain workers (data.workers), the
  # next batch shipped to the devices in a thread while this step runs.
  batches = feed.train_batches(run, 0, (warmup + repeats) * k, steps_per_call=k)
  times = []
  for i in range(warmup + repeats):
    t = time.perf_counter()
    _, b = batches.take(i * k)
    jax.block_until_ready(step(b))
    times.append((time.perf_counter() - t) / k)
  batches.close()
  loop_s = sorted(times[warmup:])[len(times[warmup:]) // 2]

  peak, _ = common.device_peaks(device)
  b = config.batch_size   # per replica; a step trains num_replicas of them
  flops, counted = loop_counted_flops(run, compiled, b // par.num_local)
  flops = flops * par.num_local if flops and par.mode == "pmap" else flops  # pmap: per device
  params = sum(x.size for x in jax.tree.leaves(run.state.params))
  return {"workload": name, "config": WORKLOADS[name][0], "batch": b, "image": "x".join(map(str, run.dataset.image_shape)),
          "dtype": registry.compute_dtype(config.model.dtype), "params": params, "compile_s": built.compile_s,
          "steps_per_call": k, "xla_memory_gib": common.compiled_memory_gib(compiled),
          "peak_gib": common.runtime_peak_gib(device, since=peak_before),   # None: an earlier workload's
          "step_ms": step_s * 1e3, "batch_ms": batch_s * 1e3, "loop_step_ms": loop_s * 1e3,
          "replicas": run.num_replicas, "images_per_s": b / step_s, "loop_images_per_s": b / loop_s,
          "all_replicas_images_per_s": b * run.num_replicas / step_s,
          "tflop_per_step": flops / 1e12 if flops else None,
          "mfu": flops / step_s / (peak * jax.device_count()) if flops and peak and counted else None,
          "flops_note": "XLA cost analysis" if counted else "lower bound: a loop body is counted once",
          "attention": "; ".join(attention_fallbacks()) or "as configured"}


def loop_counted_flops(run, compiled, program_batch: int) -> tuple[float | None, bool]:
  """-> (FLOPs of one call of `compiled`, the run's train step, whether every loop in it is counted).
  XLA's cost analysis counts a loop body once; the family names its loops (IPS: the selection scan over
  chunks), whose bodies are compiled alone for `program_batch` images of one replica and counted again
  for each further iteration. Where it cannot name them (scanned ViT blocks), the count is a lower bound."""
  flops = common.flops_of(compiled)
  one = replicas.select_state(run.state, 0) if run.num_replicas > 1 else run.state
  loops = run.family.uncounted_loops(one.apply_fn, one.variables(), program_batch, run.dataset.image_shape)
  body_flops = [common.flops_of(body) for _, body in loops or []]
  if flops is None or loops is None or None in body_flops:
    return flops, False
  return flops + run.num_replicas * sum(n * f for (n, _), f in zip(loops, body_flops)), True


def run(*, workloads, batch_size: int, warmup: int, repeats: int, extra: dict) -> list[dict]:
  rows, roofs = [], {}
  for name in workloads:
    print(f"... {name}", flush=True)
    row = time_workload(name, batch_size=batch_size, warmup=warmup, repeats=repeats, extra=extra)
    if row["tflop_per_step"] and row["flops_note"] == "XLA cost analysis":
      if row["dtype"] not in roofs:
        roofs[row["dtype"]] = common.matmul_rate(row["dtype"]) * jax.device_count()
      achieved = row["tflop_per_step"] * 1e12 / (row["step_ms"] / 1e3)
      row.update(achieved_tflop_s=achieved / 1e12, matmul_tflop_s=roofs[row["dtype"]] / 1e12,
                 of_matmul=achieved / roofs[row["dtype"]])
    rows.append(row)
  print(common.table(rows, [
      ("workload", "workload", ""), ("batch", "batch", "d"), ("dtype", "dtype", ""), ("compile_s", "compile s", ".1f"),
      ("step_ms", "step ms", ".1f"), ("batch_ms", "host batch ms", ".1f"), ("loop_step_ms", "step+data ms", ".1f"),
      ("images_per_s", "img/s", ",.1f"), ("loop_images_per_s", "img/s with data", ",.1f"),
      ("tflop_per_step", "TFLOP/step (XLA)", ".3f"), ("of_matmul", "of measured matmul", ".0%"),
      ("mfu", "MFU", ".1%"), ("xla_memory_gib", "XLA memory GiB", ".2f"),
      ("peak_gib", "runtime peak GiB", ".2f")]))
  return rows
