"""The training loop: config -> data, model, state -> steps, evaluation, checkpoints, metrics.

The global batch at step s and every random number it uses depend only on (config.seed, s), so a
resumed run continues exactly as an uninterrupted one would.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import pathlib
import signal
import threading
import time

import jax
import numpy as np
import tqdm

from apvit_jax.data import batches, sources
from apvit_jax.models import pretrained
from apvit_jax.models.registry import build_model, check_image_fits, compute_dtype
from apvit_jax.training import checkpoint as ckpt_lib
from apvit_jax.training import parallel, state as state_lib, step as step_lib
from apvit_jax.training.metrics import MetricWriter


@dataclasses.dataclass
class Run:
  """Everything a training or evaluation run is built from, validated before any compilation."""
  config: object
  dataset: sources.Dataset
  par: parallel.Parallel
  model: object
  schedule: object
  state: state_lib.TrainState  # host/default-device copy, not yet replicated
  steps_per_epoch: int
  total_steps: int
  per_device_batch: int


def setup(config, *, for_training: bool = True, devices=None) -> Run:
  parallel.maybe_initialize_distributed(config.get("distributed", "auto"))
  par = parallel.Parallel(config.parallel, devices)
  per_device = par.check_batch(config.batch_size)
  dataset = sources.load(config.data)
  tasks = select_tasks(config, dataset)
  check_image_fits(config.model, dataset.image_shape)
  if config.get("num_classes") and config.num_classes != dataset.num_classes:
    raise ValueError(f"config.num_classes={config.num_classes} but dataset {dataset.name!r} has "
                     f"{dataset.num_classes} classes")
  with config.unlocked():
    config.num_classes = dataset.num_classes
  steps_per_epoch = len(dataset.train) // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"batch_size={config.batch_size} is larger than the training set "
                     f"({len(dataset.train)} examples)")
  total_steps = config.get("total_steps") or int(config.num_epochs * steps_per_epoch)
  if for_training and total_steps <= 0:
    raise ValueError("nothing to train: set num_epochs or total_steps > 0")
  if config.get("init_from"):
    src = pathlib.Path(config.init_from).expanduser()
    if not (src.is_file() or (src / "checkpoints").is_dir()):
      raise FileNotFoundError(f"config.init_from={config.init_from!r}: neither a .npz file nor a workdir "
                              f"with checkpoints/")
  with config.unlocked():
    config.tasks = tasks
  model = build_model(config.model, dataset.num_classes, tasks)
  schedule = state_lib.learning_rate_schedule(config.optim, max(total_steps, 1), steps_per_epoch)
  tx = state_lib.make_optimizer(config.optim, schedule)
  state = state_lib.create_state(model, tx, jax.random.fold_in(jax.random.key(config.seed), 0),
                                 dataset.image_shape, init_inputs(config, dataset.image_shape))
  return Run(config, dataset, par, model, schedule, state, steps_per_epoch, total_steps, per_device)


def select_tasks(config, dataset) -> tuple:
  """The (name, num_classes, activation) tasks trained: all of the dataset's, or for IPS the subset
  named in model.ips.tasks. Only IPS has one head per task."""
  spec = dataset.task_spec
  wanted = [t.strip() for t in config.model.ips.tasks.split(",") if t.strip()] if config.model.name == "ips" else []
  unknown = [t for t in wanted if t not in spec]
  if unknown:
    raise ValueError(f"model.ips.tasks names {unknown}, which dataset {dataset.name!r} has no labels (and the "
                     f"model no heads) for; its tasks are {list(spec)}")
  if config.model.name != "ips" and len(spec) > 1:
    raise ValueError(f"dataset {dataset.name!r} has {len(spec)} tasks {list(spec)}; model.name="
                     f"{config.model.name!r} has one head: use model.name='ips'")
  return tuple((name, *spec[name]) for name in (wanted or spec))


def init_inputs(config, image_shape):
  """Dummy inputs for model.init: None (one image) for ViTs; IPS's (patches, positions) of one image."""
  if config.model.name != "ips":
    return None
  c = config.model.ips
  from apvit_jax.models import ips
  gh, gw = ips.patch_grid(image_shape[:2], c.patch_size, c.patch_stride)
  m = min(c.memory, gh * gw)
  return (np.zeros((1, m, c.patch_size, c.patch_size, image_shape[-1]), np.float32), np.zeros((1, m), np.int32))


def pretrained_state(run: Run, path) -> state_lib.TrainState:
  """run.state with pretrained weights and a fresh optimizer state for them. `path`: a
  vision_transformer-style .npz, or a workdir of ours (its best checkpoint, else its latest). Position
  embeddings are resized to this run's grid; a head for another class count stays fresh."""
  h, w = run.dataset.image_shape[:2]
  p = run.model.patch_size
  n = run.state.params["patch_embed"].get("posemb", {}).get("pos_embedding", np.zeros((1, 1))).shape[1]
  grid = pretrained.grid_shape(n, like=(h // p, w // p))
  src = pathlib.Path(path).expanduser()
  if src.is_dir():
    ckpt = ckpt_lib.Checkpointer(src, read_only=True)
    step = ckpt.best_step() or ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(f"config.init_from={str(path)!r}: no checkpoints in {ckpt.directory}")
    saved = ckpt.restore_saved(step)["params"]
    ckpt.close()
    params = pretrained.params_from_checkpoint(saved, run.state.params, grid)
  else:
    params = pretrained.vit_params_from_npz(pretrained.load_npz(src), run.state.params, grid)
  return run.state.replace(params=params, opt_state=run.state.tx.init(params))


def restore(run: Run, ckpt: ckpt_lib.Checkpointer, step: int) -> state_lib.TrainState:
  target = jax.device_get(ckpt_lib.state_to_save(run.state))
  restored = ckpt.restore(step, target)
  return run.state.replace(step=int(restored["step"]), params=restored["params"],
                           opt_state=restored["opt_state"], batch_stats=restored["batch_stats"])


def device_data(run: Run, split):
  """In-memory splits live on every device; on-demand splits return {} (batches carry images)."""
  if not isinstance(split, sources.Split):
    return {}
  return run.par.replicate({"images": split.images, "labels": split.labels})


def host_batch(split, indices: np.ndarray, positions: np.ndarray, extra: dict | None = None) -> dict:
  batch = {"position": positions.astype(np.int32), **(extra or {})}
  if not isinstance(split, sources.Split):
    batch["images"], batch["labels"] = split.get(indices)
  else:
    batch["index"] = indices.astype(np.int32)
  return batch


def train_batch_maker(run: Run, select=None):
  """-> make_batch(step): this host's slice of the step's global training batch, put on the devices
  (left on the host when `select`, lazy IPS, must first pick patches with the current parameters)."""
  n_train, gb, seed = len(run.dataset.train), run.config.batch_size, run.config.seed
  pi, pc = jax.process_index(), jax.process_count()
  positions = batches.host_slice(np.arange(gb), pi, pc)

  def make_batch(step: int) -> dict:
    idx = batches.host_slice(batches.train_indices(seed, step, n_train, gb), pi, pc)
    batch = host_batch(run.dataset.train, idx, positions)
    return batch if select else run.par.shard(batch)
  return make_batch


def host_selection(run: Run):
  """IPS with lazy loading: the host-side selection applied to each batch before sharding; else None."""
  if run.config.model.name != "ips" or run.config.model.ips.loading != "lazy":
    return None
  from apvit_jax.training.ips_inputs import HostSelection
  return HostSelection(run.config, run.model, run.par.local_devices[0])


def evaluate(run: Run, state, eval_step, data, split) -> dict:
  """Accuracy and mean loss over a whole split (padding masked out)."""
  totals = None
  pi, pc = jax.process_index(), jax.process_count()
  select = host_selection(run)
  for idx, mask in batches.eval_batches(len(split), run.config.batch_size):
    local = batches.host_slice(idx, pi, pc)
    batch = host_batch(split, local, batches.host_slice(np.arange(len(idx)), pi, pc),
                       {"mask": batches.host_slice(mask, pi, pc)})
    if select:  # the eval step's key is key(0), as here
      batch = select(batch, run.par.first_copy(state), jax.random.key(0))
    sums = run.par.metrics(eval_step(state, data, run.par.shard(batch)))
    totals = sums if totals is None else {k: totals[k] + sums[k] for k in totals}
  n = totals["count"]
  result = {"accuracy": totals["correct"] / n, "loss": totals["loss"] / n, "count": int(n),
            **{"accuracy/" + k.split("/", 1)[1]: totals[k] / n for k in totals if k.startswith("correct/")}}
  if "confusion" in totals:
    result["confusion"] = np.rint(totals["confusion"]).astype(int).tolist()
  return result


def model_description(m) -> str:
  if m.name == "ips":
    i = m.ips
    return (f"ips {i.encoder}x{i.num_stages} D={i.dim}, M={i.memory} I={i.chunk} of {i.patch_size}px patches, "
            f"{i.loading} loading")
  return f"{m.name} {m.variant}"


def summary_lines(run: Run, workdir, start_step: int) -> list[str]:
  ds, par = run.dataset, run.par
  return [
      f"devices: {par.num_devices} ({jax.devices()[0].platform}, {jax.process_count()} host(s)), "
      f"parallel={par.mode}",
      f"batch: global {run.config.batch_size}, per device {run.per_device_batch}",
      f"model: {model_description(run.config.model)}, "
      f"{state_lib.count_params(run.state.params):,} parameters, "
      f"dtype {compute_dtype(run.config.model.dtype)} (model.dtype={run.config.model.dtype})",
      f"data: {ds.name}, train {len(ds.train):,}, test {len(ds.test):,}, image {ds.image_shape}, "
      f"{ds.num_classes} classes",
      f"schedule: {run.steps_per_epoch} steps/epoch, {run.total_steps} steps, starting at step {start_step}",
      f"workdir: {workdir}",
  ]


class _Efficiency:
  """ms per training step between log points (after the first, which includes compilation) and the
  device's peak memory, for config.log_efficiency."""

  def __init__(self, step: int):
    self.step, self.time = step, None

  def measure(self, step: int, device) -> dict:
    now, out = time.time(), {}
    if self.time is not None:
      out["step_ms"] = 1e3 * (now - self.time) / (step - self.step)
    self.step, self.time = step, now
    stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
      out["peak_memory_gib"] = stats["peak_bytes_in_use"] / 2 ** 30
    return out


class _StopOnSignal:
  """Records SIGTERM (sent by Cloud TPU preemption, schedulers, `kill`) so the loop can checkpoint
  before exiting; the previous handler comes back with `restore()`. Main thread only.

  With several hosts all of them must stop at the same step (a checkpoint is a collective save): there
  the decision is orbax's `reached_preemption`, JAX's preemption sync point across hosts.
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
  run = setup(config)
  is_main = jax.process_index() == 0
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
  ckpt = ckpt_lib.Checkpointer(workdir, async_save=config.checkpoint.async_save,
                              keep_latest=config.checkpoint.keep_latest)
  state = run.state
  latest = ckpt.latest_step()
  if latest is not None:
    state = restore(run, ckpt, latest)  # raises before anything in workdir is written
  elif config.get("init_from"):
    state = pretrained_state(run, config.init_from)
  start_step = int(state.step)
  writer = MetricWriter(workdir)
  if start_step >= run.total_steps:
    ckpt.close()
    done = [r for r in writer.read() if r["split"] == "summary"]
    if is_main:
      print(f"nothing to do: {workdir} already holds a run finished at step {start_step} "
            f"(total_steps={run.total_steps}); raise num_epochs/total_steps to continue it")
    return done[-1] if done else {"final_step": start_step}
  if is_main:
    for line in summary_lines(run, workdir, start_step):
      print(line, flush=True)
    with open(workdir / "runs.jsonl", "a") as f:  # append-only record of every start
      f.write(json.dumps({"time": time.time(), "start_step": start_step,
                          "config": json.loads(config.to_json_best_effort())}) + "\n")

  par = run.par
  state = par.replicate(state)
  train_data = device_data(run, run.dataset.train)
  test_data = device_data(run, run.dataset.test)
  train_step = par.compile(step_lib.make_train_step(config, run.schedule), num_args=4, broadcast_last=True)
  eval_step = par.compile(step_lib.make_eval_step(config), num_args=3, donate_first=False)
  train_key = jax.random.fold_in(jax.random.key(config.seed), 1)

  select = host_selection(run)
  make_batch = train_batch_maker(run, select)

  # Host work for step s+1 overlaps device work for step s (matters for streaming sources).
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
  best = {"accuracy": -1.0, "step": None}
  for r in writer.read():
    if r["split"] == "test" and r["step"] <= start_step and r["accuracy"] > best["accuracy"]:
      best = {"accuracy": r["accuracy"], "step": r["step"]}
  last_eval, train_time, train_images = None, 0.0, 0
  step = start_step
  next_batch = pool.submit(make_batch, step) if step < run.total_steps else None
  bar = tqdm.tqdm(total=run.total_steps, initial=start_step, disable=not (is_main and config.progress_bar),
                  dynamic_ncols=True, unit="step")
  t_start = time.time()
  efficiency = _Efficiency(start_step)
  stop = _StopOnSignal(ckpt)
  while step < run.total_steps:
    epoch_end = min((step // run.steps_per_epoch + 1) * run.steps_per_epoch, run.total_steps)
    t0, first = None, step
    while step < epoch_end and not stop.check(step):
      batch = next_batch.result()
      next_batch = pool.submit(make_batch, step + 1) if step + 1 < run.total_steps else None
      if select:  # the key train_step derives for this step's inputs
        step_inputs_key = jax.random.fold_in(jax.random.fold_in(train_key, step), 0)
        batch = par.shard(select(batch, par.first_copy(state.replace(opt_state=None)), step_inputs_key))
      state, metrics = train_step(state, train_data, batch, train_key)
      step += 1
      bar.update(1)
      if step == first + 1:  # exclude compilation and the first dispatch from the throughput
        jax.block_until_ready(metrics)
        t0 = time.time()
      if step % config.log_every_steps == 0 or step == epoch_end:
        m = par.metrics(metrics)
        if config.get("log_efficiency", False):
          m.update(efficiency.measure(step, par.local_devices[0]))
        if not np.isfinite(m["loss"]) and not config.get("skip_nonfinite_steps", False):
          stop.restore()
          ckpt.wait()
          raise FloatingPointError(
              f"loss is {m['loss']} at step {step} (checked every {config.log_every_steps} steps); the last "
              f"good checkpoint, step {ckpt.latest_step()} in {ckpt.directory}, is kept. Lower the learning "
              f"rate, or set --config.skip_nonfinite_steps=True to skip such steps")
        bar.set_postfix(loss=f"{m['loss']:.3f}", refresh=False)
        writer.write(step, "train", m, echo=None if config.progress_bar else print)
    jax.block_until_ready(state.step)
    if step - first > 1:
      train_time += time.time() - t0
      train_images += (step - first - 1) * config.batch_size
    if stop.requested:
      break
    epoch = step / run.steps_per_epoch
    is_last = step == run.total_steps
    if is_last or round(epoch) % config.eval_every_epochs == 0:
      last_eval = evaluate(run, state, eval_step, test_data, run.dataset.test)
      ips = train_images / train_time if train_time else float("nan")
      writer.write(step, "test", {**last_eval, "epoch": round(epoch, 3), "images_per_sec": ips},
                   echo=bar.write if is_main else None)
      if last_eval["accuracy"] > best["accuracy"]:
        best = {"accuracy": last_eval["accuracy"], "step": step}
      ckpt.save(step, par.unreplicate(ckpt_lib.state_to_save(state)), last_eval)
  bar.close()
  pool.shutdown()
  stop.restore()
  if stop.requested:  # e.g. Cloud TPU preemption: save where we are, resume later with the same command
    if ckpt.latest_step() != step:  # the step may have just been saved after its evaluation
      ckpt.save(step, par.unreplicate(ckpt_lib.state_to_save(state)), None)
    ckpt.wait()
    ckpt.close()
    if is_main:
      print(f"{stop.requested} at step {step}: checkpoint saved in {ckpt.directory}; run the same "
            f"command again to resume", flush=True)
    return {"final_step": step, "interrupted_by": stop.requested}
  ckpt.wait()
  ckpt.close()
  summary = {"final_step": step, "best_accuracy": best["accuracy"], "best_step": best["step"],
             "final_accuracy": last_eval["accuracy"] if last_eval else None,
             "wall_seconds": time.time() - t_start,
             "train_images_per_sec": train_images / train_time if train_time else None}
  writer.write(step, "summary", summary, echo=None)
  if is_main:
    print(f"FINAL best_accuracy={summary['best_accuracy']:.4f} (step {summary['best_step']}) "
          f"final_accuracy={summary['final_accuracy'] if last_eval else float('nan'):.4f} "
          f"wall={summary['wall_seconds']:.1f}s images/s={summary['train_images_per_sec'] or 0:.1f}",
          flush=True)
  return summary


def evaluate_checkpoint(config, workdir: str, step: int | None = None, split: str = "test",
                        figures: int = 0, confusion: bool = False) -> dict:
  """Restores the best checkpoint (or `step`) and evaluates `split` ("test" or "train"). With figures=K,
  also draws the patches of the split's first K images to WORKDIR/figures/ (see apvit_jax/visualize.py);
  with confusion, adds the confusion matrix (rows: true class, columns: predicted)."""
  workdir = pathlib.Path(workdir).expanduser().resolve()
  if not (workdir / "checkpoints").is_dir():
    raise FileNotFoundError(f"no checkpoints in {workdir}: train first with the same --config")
  run = setup(config, for_training=False)
  ckpt = ckpt_lib.Checkpointer(workdir, read_only=True)
  step = step if step is not None else (ckpt.best_step() or ckpt.latest_step())
  if step is None:
    raise FileNotFoundError(f"no checkpoints in {ckpt.directory}")
  if split not in ("test", "train"):
    raise ValueError(f"unknown split {split!r}; choose 'test' or 'train'")
  host_state = restore(run, ckpt, step)
  state = run.par.replicate(host_state)
  data_split = getattr(run.dataset, split)
  eval_step = run.par.compile(step_lib.make_eval_step(config, confusion), num_args=3, donate_first=False)
  result = {"step": step, "split": split, **evaluate(run, state, eval_step, device_data(run, data_split),
                                                     data_split)}
  ckpt.close()
  if figures > 0 and jax.process_index() == 0:
    result["figures"] = [str(p) for p in draw_figures(run, host_state, data_split, figures,
                                                      workdir / "figures", f"{split}_step{step}")]
  return result


def draw_figures(run, host_state, data_split, count: int, out_dir, suffix: str) -> list:
  """Figures of where the model looks for the split's first `count` images: adaptive patches
  (apvit_jax/visualize.py, patches_SUFFIX_I.png) or IPS selections (visualize_ips.py, ips_SUFFIX_I.png).
  matplotlib is imported only here."""
  idx = np.arange(min(count, len(data_split)))
  images, labels = (data_split.get(idx) if not isinstance(data_split, sources.Split)
                    else (data_split.images[idx], data_split.labels[idx]))
  variables = {"params": host_state.params, **({"batch_stats": host_state.batch_stats}
                                               if host_state.batch_stats else {})}
  if run.config.model.name == "ips":
    from apvit_jax import visualize_ips
    return visualize_ips.render_ips_figures(run.model, variables, np.asarray(images),
                                            step_lib.as_task_dict(labels, run.config.tasks), run.config,
                                            out_dir, f"ips_{suffix}")
  from apvit_jax import visualize
  return visualize.render_patch_figures(run.model, variables, np.asarray(images), np.asarray(labels),
                                        run.config.augment, out_dir, f"patches_{suffix}")
