"""The training loop: epochs of steps, evaluation and a checkpoint at epoch ends, metrics, SIGTERM,
timing. Building the run is run.py, batches feed.py, evaluation evaluate.py.

The global batch at step s and every random number it uses depend only on (config.seed, s), so a
resumed run continues exactly as an uninterrupted one would.
"""
from __future__ import annotations

import json
import pathlib
import signal
import threading
import time

import jax
import numpy as np
import tqdm

from apvit_jax.training import checkpoint as ckpt_lib, compilation_cache
from apvit_jax.training import evaluate as eval_lib, feed, replicas, run as run_lib, step as step_lib
from apvit_jax.training.metrics import MetricWriter


class _Efficiency:
  """ms per training step between log points (after the first, which includes compilation) and the
  device's peak memory, for config.log_efficiency. Time spent outside training steps (evaluation,
  checkpoints) is excluded with `exclude`."""

  def __init__(self, step: int):
    self.step, self.time = step, None

  def exclude(self, seconds: float) -> None:
    if self.time is not None:
      self.time += seconds

  def measure(self, step: int, device) -> dict:
    now, out = time.time(), {}
    if self.time is not None and step > self.step:   # two log points in one call: the first has it
      out["step_ms"] = 1e3 * (now - self.time) / (step - self.step)
    self.step, self.time = step, now
    stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
      out["peak_memory_gib"] = stats["peak_bytes_in_use"] / 2 ** 30
    return out


class _Best:
  """The best test accuracy so far: of the replicas' mean (it ranks the checkpoints) and of each replica
  (selected on the test set per replica, as published best-epoch figures are). One seed: both the same."""

  def __init__(self, seeds):
    self.seeds = seeds
    self.mean, self.mean_step = -1.0, None
    self.each, self.each_step = [-1.0] * len(seeds), [None] * len(seeds)

  def update(self, step: int, record: dict) -> None:
    if replicas.mean_value(record, "accuracy") > self.mean:
      self.mean, self.mean_step = replicas.mean_value(record, "accuracy"), step
    for k, value in enumerate(replicas.seed_values(record, "accuracy", self.seeds)):
      if value > self.each[k]:
        self.each[k], self.each_step[k] = value, step

  def summary(self, last_eval: dict | None) -> dict:
    """best_accuracy, best_step, final_accuracy (one seed); with several their per-seed values, the
    mean and sd of the accuracies, and the best mean's accuracy and step (the best checkpoint)."""
    final = replicas.seed_values(last_eval, "accuracy", self.seeds) if last_eval else [None] * len(self.seeds)
    out = replicas.summarize({"best_accuracy": np.array(self.each), "best_step": np.array(self.each_step),
                              "final_accuracy": np.array(final)}, self.seeds)
    if len(self.seeds) > 1:
      out.update(best_mean_accuracy=self.mean, best_mean_step=self.mean_step)
    return out


class _StopOnSignal:
  """Records SIGTERM (sent by Cloud TPU preemption, schedulers, `kill`) so the loop can checkpoint
  before exiting; the previous handler comes back with `restore()`. Main thread only.

  With several hosts all of them must stop at the same step (a checkpoint is a collective save): there
  the decision is orbax's `reached_preemption`, JAX's preemption sync point across hosts, asked at every
  step number; with config.steps_per_call > 1 the run stops after the call that holds the agreed step
  (every host runs the same calls, so all stop at the same step).
  """

  def __init__(self, ckpt):
    self.requested = None
    self._previous = None
    self._ckpt = ckpt
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def check(self, step: int) -> bool:
    if jax.process_count() > 1 and self._ckpt.manager.reached_preemption(step):
      self.requested = "preemption"
    return self.requested is not None

  def _handle(self, signum, frame):
    del frame
    self.requested = signal.Signals(signum).name

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (resuming from the latest checkpoint in workdir), evaluating every epoch. -> summary."""
  workdir = pathlib.Path(workdir).expanduser().resolve()
  compilation_cache.use_workdir_cache(config.compilation_cache, workdir)
  run = run_lib.setup(config, resuming=ckpt_lib.has_checkpoints(workdir))
  is_main = jax.process_index() == 0
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
  ckpt = ckpt_lib.Checkpointer(workdir, async_save=config.checkpoint.async_save,
                              keep_latest=config.checkpoint.keep_latest)
  state = run_lib.start_state(run, ckpt)
  writer = MetricWriter(workdir)
  start_step = int(state.step)
  if start_step >= run.total_steps:
    ckpt.close()
    done = [r for r in writer.read() if r["split"] == "summary"]
    if is_main:
      print(f"nothing to do: {workdir} already holds a run finished at step {start_step} "
            f"(total_steps={run.total_steps}); raise num_epochs/total_steps to continue it")
    return done[-1] if done else {"final_step": start_step}
  if is_main:
    for line in run_lib.summary_lines(run, workdir, start_step):
      print(line, flush=True)
    with open(workdir / "runs.jsonl", "a") as f:  # append-only record of every start
      f.write(json.dumps({"time": time.time(), "start_step": start_step,
                          "config": json.loads(config.to_json_best_effort())}) + "\n")
  return _Training(run, ckpt, writer, state, start_step).run()


class _Training:
  """One call of train_and_evaluate from its start step: the state, the clocks and the best result."""

  def __init__(self, run, ckpt, writer, host_state, start_step: int):
    self.run_, self.ckpt, self.writer, self.config = run, ckpt, writer, run.config
    self.is_main = jax.process_index() == 0
    par = run.par
    self.state = par.replicate(host_state)
    self.step = start_step
    self.train_data = feed.device_data(par, run.dataset.train)
    self.test_data = feed.device_data(par, run.dataset.test)
    self.steps_per_call = self.config.steps_per_call
    self.train_step = run_lib.compile_train_step(run)   # compiled at its first call: steps_per_call > 1
    self.train_steps = run_lib.compile_train_step(run, self.steps_per_call)   # uses it for remainders only
    self.called = set()   # the step functions called so far (their first call compiles)
    self.eval_step = run_lib.compile_eval_step(run)
    self.train_key = run_lib.train_key(run)
    self.batches = feed.train_batches(run, start_step, run.total_steps, on_host=run.host_inputs is not None,
                                      steps_per_call=self.steps_per_call)
    self.best = _Best(run.seeds)
    for r in writer.read():
      if r["split"] == "test" and r["step"] <= start_step:
        self.best.update(r["step"], r)
    self.last_eval, self.train_time, self.train_images = None, 0.0, 0
    self.efficiency = _Efficiency(start_step)
    self.stop = _StopOnSignal(ckpt)
    self.bar = tqdm.tqdm(total=run.total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                         disable=not (self.is_main and self.config.progress_bar))

  def run(self) -> dict:
    t_start = time.time()
    try:
      while self.step < self.run_.total_steps:
        self._epoch()
        if self.stop.requested:
          break
        t_eval = time.time()
        self._evaluate_and_save()
        self.efficiency.exclude(time.time() - t_eval)
    finally:   # also when a step, an evaluation or a save raises
      self.bar.close()
      self.batches.close()
      self.stop.restore()
    if self.stop.requested:
      return self._interrupted()
    self.ckpt.wait()
    self.ckpt.close()
    return self._summary(time.time() - t_start)

  def _epoch(self) -> None:
    """Calls to the end of the current epoch (or total_steps), or until a stop is requested; each call runs
    the steps `feed.call_plan` gave it (config.steps_per_call of them where they fit, else one).
    Throughput counts the calls after the epoch's first and leaves out any call that compiles."""
    run, par = self.run_, self.run_.par
    epoch_end = feed.epoch_end(self.step, run.steps_per_epoch, run.total_steps)
    t0 = timed_from = None
    while self.step < epoch_end and not self.stop.check(self.step):
      steps, batch = self.batches.take(self.step)
      step_fn = self.train_steps if len(steps) > 1 else self.train_step
      if step_fn not in self.called and timed_from is not None:   # a remainder's first one-step call
        self._count_train_time(t0, timed_from)
        timed_from = None
      if run.host_inputs:
        host_state = par.first_copy(self.state.replace(opt_state=None))
        batch = par.shard(run.host_inputs(batch, host_state, step_lib.inputs_key(self.train_key, self.step)))
      self.state, metrics = step_fn(self.state, self.train_data, batch, self.train_key)
      self.called.add(step_fn)
      for s in steps[1:]:   # every step number is checked once (several hosts agree on a preemption step)
        self.stop.check(s)
      self.step += len(steps)
      self.bar.update(len(steps))
      if timed_from is None:  # the epoch's first call or one that compiled: not timed
        jax.block_until_ready(metrics)
        t0, timed_from = time.time(), self.step
      logged = [i for i, s in enumerate(steps) if (s + 1) % self.config.log_every_steps == 0 or s + 1 == epoch_end]
      if logged:
        host = run.par.metrics(metrics)
        for i in logged:   # a call of several steps returns each step's metrics, stacked
          self._log(host if len(steps) == 1 else {k: v[i] for k, v in host.items()}, step=steps[i] + 1)
    if timed_from is not None:
      self._count_train_time(t0, timed_from)

  def _count_train_time(self, t0: float, timed_from: int) -> None:
    """Adds the steps since `timed_from` (timed from t0) to the throughput's time and images."""
    jax.block_until_ready(self.state.step)
    if self.step > timed_from:
      self.train_time += time.time() - t0
      self.train_images += (self.step - timed_from) * self.config.batch_size * self.run_.num_replicas

  def _log(self, host_metrics: dict, step: int) -> None:
    """host_metrics: one step's metrics on the host (Parallel.metrics), logged as step `step`'s."""
    run = self.run_
    m = replicas.per_replica(host_metrics, run.num_replicas)
    bad = [(s, loss) for s, loss in zip(run.seeds, m["loss"]) if not np.isfinite(loss)]
    if bad and not self.config.skip_nonfinite_steps:
      self.stop.restore()
      self.ckpt.wait()
      where = "" if run.num_replicas == 1 else " in replica(s) " + ", ".join(
          f"seed {s} (index {run.seeds.index(s)})" for s, _ in bad)
      raise FloatingPointError(
          f"loss is {bad[0][1]} at step {step}{where} (checked every {self.config.log_every_steps} "
          f"steps); "
          f"the last good checkpoint, step {self.ckpt.latest_step()} in {self.ckpt.directory}, is kept. Lower "
          f"the learning rate, or set --config.skip_nonfinite_steps=True to skip such steps")
    m = replicas.summarize(m, run.seeds)
    m.update(_bad_examples(run.dataset.train))
    if self.config.log_efficiency:
      m.update(self.efficiency.measure(self.step, run.par.local_devices[0]))
    self.bar.set_postfix(loss=f"{replicas.mean_value(m, 'loss'):.3f}", refresh=False)
    self.writer.write(step, "train", m, echo=None if self.config.progress_bar else print)

  def _evaluate_and_save(self) -> None:
    """At an epoch end: evaluate (every eval_every_epochs, and at the last step) and save."""
    run = self.run_
    epoch = self.step / run.steps_per_epoch
    if not (self.step == run.total_steps or round(epoch) % self.config.eval_every_epochs == 0):
      return
    self.last_eval = eval_lib.evaluate(run, self.state, self.eval_step, self.test_data, run.dataset.test)
    self.writer.write(self.step, "test", {**self.last_eval, "epoch": round(epoch, 3),
                                          "images_per_sec": self._images_per_sec() or float("nan"),
                                          **_bad_examples(run.dataset.test)},
                      echo=self.bar.write if self.is_main else None)
    self.best.update(self.step, self.last_eval)
    self.ckpt.save(self.step, run.par.unreplicate(ckpt_lib.state_to_save(self.state)), self.last_eval)

  def _images_per_sec(self) -> float | None:
    return self.train_images / self.train_time if self.train_time else None

  def _interrupted(self) -> dict:
    """E.g. Cloud TPU preemption: save where we are; the same command resumes."""
    if self.ckpt.latest_step() != self.step:  # the step may have just been saved after its evaluation
      self.ckpt.save(self.step, self.run_.par.unreplicate(ckpt_lib.state_to_save(self.state)), None)
    self.ckpt.wait()
    self.ckpt.close()
    host = f" (process {jax.process_index()} of {jax.process_count()})" if jax.process_count() > 1 else ""
    print(f"{self.stop.requested} at step {self.step}{host}: checkpoint saved in {self.ckpt.directory}; run "
          f"the same command again to resume", flush=True)   # every host says where it stopped
    return {"final_step": self.step, "interrupted_by": self.stop.requested}

  def _summary(self, wall_seconds: float) -> dict:
    run = self.run_
    summary = {"final_step": self.step, **self.best.summary(self.last_eval), "wall_seconds": wall_seconds,
               "train_images_per_sec": self._images_per_sec(),
               **{f"{name}_bad_examples": n for name in ("train", "test")
                  for n in _bad_examples(getattr(run.dataset, name)).values()}}
    self.writer.write(self.step, "summary", summary, echo=None)
    if self.is_main:
      print(_final_line(summary, run.seeds), flush=True)
    return summary


def _bad_examples(split) -> dict:
  """{"bad_examples": count} for a streamed split that skips unreadable examples (counted so far); {}
  otherwise (a split that does not skip stops at the first one)."""
  return {"bad_examples": split.bad_count} if getattr(split, "skip", False) else {}


def _final_line(summary: dict, seeds) -> str:
  """The FINAL line: best and final accuracy (mean ± sd over the replicas with several seeds)."""
  rate = summary["train_images_per_sec"] or 0
  if len(seeds) == 1:
    last = summary["final_accuracy"]
    return (f"FINAL best_accuracy={summary['best_accuracy']:.4f} (step {summary['best_step']}) "
            f"final_accuracy={last if last is not None else float('nan'):.4f} "
            f"wall={summary['wall_seconds']:.1f}s images/s={rate:.1f}")
  stat = lambda name: (f"{summary[name + '_mean']:.4f} ± {summary[name + '_sd']:.4f}"
                       if name + "_mean" in summary else "nan")
  return (f"FINAL over {len(seeds)} seeds ({seeds[0]}..{seeds[-1]}), mean ± sd: "
          f"best_accuracy={stat('best_accuracy')} final_accuracy={stat('final_accuracy')}; "
          f"best mean accuracy {summary['best_mean_accuracy']:.4f} "
          f"(step {summary['best_mean_step']}) wall={summary['wall_seconds']:.1f}s "
          f"images/s={rate:.1f} ({rate / len(seeds):.1f} per replica)")
