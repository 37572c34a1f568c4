"""Building a run: config -> data, model family, model, optimizer and initial state, all validated
before any compilation; then where training starts (a checkpoint to resume, pretrained weights, or
the fresh state), and the compiled steps. The config is read, never written: what is derived from the
data (the class count, the tasks) travels on the Run."""
from __future__ import annotations

import copy
import dataclasses
import functools
import pathlib

import jax
import numpy as np

from apvit_jax.config_checks import ConfigError, check_config
from apvit_jax.data import augment, host_pipeline, sources
from apvit_jax.models.families.base import Family
from apvit_jax.models import pretrained, registry
from apvit_jax.training import checkpoint as ckpt_lib
from apvit_jax.training import compilation_cache, parallel, replicas, shared_programs, state as state_lib
from apvit_jax.training import step as step_lib


@dataclasses.dataclass
class Run:
  """Everything a training or evaluation run is built from."""
  config: object
  dataset: sources.Dataset
  par: parallel.Parallel
  family: Family
  tasks: tuple               # ((name, num_classes, "softmax" | "sigmoid"), ...)
  model: object
  schedule: object
  state: state_lib.TrainState  # host/default-device copy, not yet replicated; or its shapes (setup)
  steps_per_epoch: int
  total_steps: int
  per_device_batch: int
  seeds: tuple               # (config.seed,), or one per replica with config.num_seeds > 1
  program_key: tuple          # runs with equal keys share compiled steps (shared_programs.py)

  @property
  def num_replicas(self) -> int:
    return len(self.seeds)

  @functools.cached_property
  def host_inputs(self):
    """The family's host-side step on each batch (IPS lazy loading), built once per run; or None."""
    return self.family.host_inputs(self.model, self.par.local_devices[0])


def setup(config, *, for_training: bool = True, resuming: bool = False, devices=None) -> Run:
  """config -> Run. `resuming`: the workdir holds checkpoints, so config.init_from is not read. Run.state is
  the initial state, or only its shapes (state_lib.state_shapes) where a checkpoint will give the values:
  when resuming, and for evaluation (for_training=False)."""
  check_config(config)
  parallel.maybe_initialize_distributed(config.distributed)
  compilation_cache.off_for_multiprocess_cpu()
  par = parallel.Parallel(config.parallel, devices)
  per_device = par.check_batch(config.batch_size)
  dataset = sources.load(config.data)
  family = registry.family(config.model, config.augment)
  tasks = family.tasks(dataset.task_spec, dataset.name)
  seeds = replicas.seeds(config)
  try:   # the model's fields against each other and the data: a config error, not a program error
    family.check(dataset.image_shape)
    if len(seeds) > 1:
      family.check_replicas(len(seeds))
  except ValueError as e:
    raise ConfigError(str(e)) from e
  if config.num_classes and config.num_classes != dataset.num_classes:
    raise ConfigError(f"config.num_classes={config.num_classes} but dataset {dataset.name!r} has "
                     f"{dataset.num_classes} classes")
  steps_per_epoch = len(dataset.train) // config.batch_size
  if steps_per_epoch == 0:
    raise ConfigError(f"batch_size={config.batch_size} is larger than the training set "
                     f"({len(dataset.train)} examples)")
  total_steps = config.total_steps or int(config.num_epochs * steps_per_epoch)
  if for_training and total_steps <= 0:
    raise ConfigError("nothing to train: set num_epochs or total_steps > 0")
  if for_training and not resuming and config.init_from:
    check_init_from(config.init_from)
  # Equal runs of this process share the model, optimizer and so every program (shared_programs.py).
  program_key = (shared_programs.config_key(config), dataset.name, tuple(dataset.image_shape), tasks,
                 dataset.num_classes, steps_per_epoch, total_steps, par.mode, par.num_devices,
                 tuple(par.local_devices), jax.default_backend())   # the backend resolves "auto" fields
  family, model, schedule, tx = shared_programs.get(
      ("run", program_key), lambda: _build(config, dataset.num_classes, tasks, total_steps, steps_per_epoch))
  if config.steps_per_call > 1:
    check_steps_per_call(config.steps_per_call, steps_per_epoch,
                         family.host_inputs(model, par.local_devices[0]) is not None)
  # A checkpoint will provide the values: the state's shapes are enough (no initialisation program).
  initialise = state_lib.state_shapes if resuming or not for_training else state_lib.create_state
  state = _initial_state(initialise, model, tx, seeds, dataset, family)
  return Run(config, dataset, par, family, tasks, model, schedule, state, steps_per_epoch, total_steps,
             per_device, seeds, program_key)


def _build(config, num_classes: int, tasks, total_steps: int, steps_per_epoch: int):
  """-> (family, model, schedule, optimizer), from a copy of the config: shared objects must not change
  when the caller edits its config afterwards."""
  c = copy.deepcopy(config)
  family = registry.family(c.model, c.augment)
  schedule = state_lib.learning_rate_schedule(c.optim, max(total_steps, 1), steps_per_epoch)
  return family, family.build(num_classes, tasks), schedule, state_lib.make_optimizer(c.optim, schedule)


def _initial_state(initialise, model, tx, seeds, dataset, family) -> state_lib.TrainState:
  """initialise (state_lib.create_state, or state_shapes) for this model, optimizer and seeds."""
  return initialise(model, tx, _seed_keys(seeds, 0), dataset.image_shape, family.init_inputs(dataset.image_shape))


def check_steps_per_call(k: int, steps_per_epoch: int, host_inputs: bool) -> None:
  if host_inputs:
    raise ConfigError(f"steps_per_call={k}: this model prepares each step's batch on the host with the "
                      f"current parameters (IPS lazy loading), so it runs one step per call; use 1")
  if k > steps_per_epoch:
    raise ConfigError(f"steps_per_call={k} is more than an epoch's {steps_per_epoch} steps (a call never "
                      f"crosses an epoch's end, where the run evaluates); use at most {steps_per_epoch}")


def _seed_keys(seeds, purpose: int):
  """fold_in(key(seed), purpose): one key for one seed, (K,) keys for K replicas (the same keys)."""
  keys = [jax.random.fold_in(jax.random.key(s), purpose) for s in seeds]
  return keys[0] if len(keys) == 1 else jax.numpy.stack(keys)


def one_replica(run: Run, host_state, k: int):
  """(run, stacked host state) -> the one-seed run and state of replica k (eval.py --seed_index)."""
  replicas.check_index(k, run.num_replicas)
  if run.num_replicas == 1:
    return run, host_state
  select = lambda state: replicas.select_state(state, k)
  state = jax.eval_shape(select, run.state) if state_lib.is_shapes(run.state) else select(run.state)
  return dataclasses.replace(run, seeds=(run.seeds[k],), state=state), select(host_state)


def check_init_from(path) -> None:
  src = pathlib.Path(path).expanduser()
  if not (src.is_file() or (src / "checkpoints").is_dir()):
    raise FileNotFoundError(f"config.init_from={str(path)!r}: neither a .npz file nor a workdir with "
                            f"checkpoints/")


def train_key(run: Run):
  """The key every training step folds its step number into (training/step.py); (K,) keys, one per
  replica's seed, with config.num_seeds = K > 1."""
  return _seed_keys(run.seeds, 1)


def donates_state(config) -> bool:
  """config.donate_state -> whether the train step donates the state it is given (its buffers then hold
  the new state): "auto" donates on GPU/TPU, where device memory is what limits a run, and not on CPU,
  where XLA:CPU copies every donated parameter and optimizer moment at the start of the step (the
  in-place update of a moment is read by two fusions) and a step of std_vit_cifar10 or dps_vit_cifar10 is
  6-9 % faster without (bench/RESULTS.md)."""
  value = str(config.donate_state).lower()
  return value == "true" or (value == "auto" and jax.default_backend() != "cpu")


def compile_train_step(run: Run, steps: int = 1):
  """The compiled train step of this run: (state, data, batch, train_key) -> (state, metrics), as
  train.py, the benchmarks and the tests run it. steps > 1: that many steps per call (config.steps_per_call;
  batch leaves (b, steps, ...), metrics (steps, ...): step.repeat_steps)."""
  c = run.config

  def build():
    step = step_lib.make_train_step(run.family.model_inputs, run.tasks, run.schedule,
                                    label_smoothing=c.label_smoothing, skip_nonfinite=c.skip_nonfinite_steps)
    if run.num_replicas > 1:
      step = replicas.replicated_train_step(step, run.state, replicas.loop_kind(c))
    if steps > 1:
      step = step_lib.repeat_steps(step, steps)
    return run.par.compile(step, num_args=4, broadcast_last=True, donate_first=donates_state(c))
  return _shared_step(run, ("train", steps), build)


def compile_eval_step(run: Run, confusion: bool = False):
  """(state, data, batch) -> summed loss, correct and count (and the confusion matrix)."""
  def build():
    step = step_lib.make_eval_step(run.family.model_inputs, run.tasks, confusion)
    if run.num_replicas > 1:
      step = replicas.replicated_eval_step(step, run.state, replicas.loop_kind(run.config))
    return run.par.compile(step, num_args=3, donate_first=False)
  return _shared_step(run, ("eval", confusion), build)


def _shared_step(run: Run, what: tuple, build):
  """build(), or the step an equal run of this process built: same program key, replica count and state
  structure (a state's structure holds its apply_fn and optimizer)."""
  return shared_programs.get(("step", run.program_key, what, run.num_replicas, jax.tree.structure(run.state)),
                             build)


def pretrained_state(run: Run, path) -> state_lib.TrainState:
  """run.state with pretrained weights and a fresh optimizer state for them. `path`: a
  vision_transformer-style .npz, or a workdir of ours (its best checkpoint, else its latest). Position
  embeddings are resized to this run's grid; a head for another class count stays fresh (each replica's
  own fresh head, with config.num_seeds > 1: every replica starts from the same pretrained weights)."""
  check_init_from(path)
  src = pathlib.Path(path).expanduser()
  if src.is_dir():
    ckpt = ckpt_lib.Checkpointer(src, read_only=True)
    step = ckpt.best_step() or ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(f"config.init_from={str(path)!r}: no checkpoints in {ckpt.directory}")
    saved = ckpt.restore_saved(step)["params"]
    ckpt.close()
    convert = lambda target, grid: pretrained.params_from_checkpoint(saved, target, grid)
  else:
    weights = pretrained.load_npz(src)
    convert = lambda target, grid: pretrained.vit_params_from_npz(weights, target, grid)
  if run.num_replicas == 1:
    params = convert(run.state.params, _pretrained_grid(run, run.state.params))
    return run.state.replace(params=params, opt_state=run.state.tx.init(params))
  targets = [replicas.select_state(run.state, k).params for k in range(run.num_replicas)]
  params = replicas.stack([convert(t, _pretrained_grid(run, t)) for t in targets])
  return run.state.replace(params=params, opt_state=jax.jit(jax.vmap(run.state.tx.init))(params))


def _pretrained_grid(run: Run, params) -> tuple[int, int]:
  """The position-embedding grid of this run's model (one replica's params)."""
  h, w = run.dataset.image_shape[:2]
  p = run.model.patch_size
  n = params["patch_embed"].get("posemb", {}).get("pos_embedding", np.zeros((1, 1))).shape[1]
  return pretrained.grid_shape(n, like=(h // p, w // p))


def restore(run: Run, ckpt: ckpt_lib.Checkpointer, step: int) -> state_lib.TrainState:
  """Checkpoint `step` as this run's state (NumPy arrays); run.state may be shapes only."""
  target = ckpt_lib.restore_target(run.state)
  try:
    restored = ckpt.restore(step, target)
  except ckpt_lib.CheckpointMismatch as e:
    raise ckpt_lib.CheckpointMismatch(
        f"{e}. (This config trains {run.num_replicas} replica(s), config.num_seeds={run.num_replicas}: a "
        f"workdir must be resumed and evaluated with the num_seeds it was trained with.)") from e
  return run.state.replace(step=int(restored["step"]), params=restored["params"],
                           opt_state=restored["opt_state"], batch_stats=restored["batch_stats"])


def start_state(run: Run, ckpt: ckpt_lib.Checkpointer) -> state_lib.TrainState:
  """Where training starts: the latest checkpoint, else config.init_from's weights, else run.state."""
  latest = ckpt.latest_step()
  if latest is not None:
    return restore(run, ckpt, latest)  # raises before anything in the workdir is written
  if state_lib.is_shapes(run.state):   # set up to resume, but no step restores: initialise after all
    run = dataclasses.replace(run, state=_initial_state(state_lib.create_state, run.model, run.state.tx, run.seeds,
                                                        run.dataset, run.family))
  if run.config.init_from:
    return pretrained_state(run, run.config.init_from)
  return run.state


def _feeding(run: Run) -> str:
  """How the training batches are made: resident on the devices, or streamed by how many grain workers."""
  split = run.dataset.train
  if split.resident:
    return "on every device (batches carry indices)"
  workers = host_pipeline.resolve_workers(run.config.data.workers, split)
  return (f"streamed, made by {workers} grain worker processes" if workers else
          "streamed, made in this process") + f" (data.workers={run.config.data.workers})"


def summary_lines(run: Run, workdir, start_step: int) -> list[str]:
  ds, par, m, k = run.dataset, run.par, run.config.model, run.num_replicas
  params = state_lib.count_params(run.state.params) // k
  warning = augment.floor_stack_warning(run.config.augment)
  return [
      f"devices: {par.num_devices} ({jax.devices()[0].platform}, {jax.process_count()} host(s)), "
      f"parallel={par.mode}, train state {'donated' if donates_state(run.config) else 'not donated'} "
      f"(donate_state={run.config.donate_state})",
      f"batch: global {run.config.batch_size}, per device {run.per_device_batch}" + (
          f", per replica: {k} replicas (seeds {run.seeds[0]}..{run.seeds[-1]}) in one step, "
          f"{'vmapped' if replicas.loop_kind(run.config) == 'vmap' else 'unrolled'} "
          f"(replica_loop={run.config.replica_loop})" if k > 1 else ""),
      f"model: {run.family.description()}, {params:,} parameters" + (" per replica" if k > 1 else "") +
      f", dtype {registry.compute_dtype(m.dtype)} (model.dtype={m.dtype})",
      f"data: {ds.name}, train {len(ds.train):,}, test {len(ds.test):,}, image {ds.image_shape}, "
      f"{ds.num_classes} classes, {_feeding(run)}",
      f"schedule: {run.steps_per_epoch} steps/epoch, {run.total_steps} steps, starting at step {start_step}" + (
          f", {run.config.steps_per_call} steps per call" if run.config.steps_per_call > 1 else ""),
      f"workdir: {workdir}",
  ] + ([warning] if warning else []) + (
      ["compilation cache: off (a multi-process CPU run: jax 0.12.1 hangs running programs loaded from it)"]
      if compilation_cache.multiprocess_cpu() else [])
