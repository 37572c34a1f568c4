"""TrainState and the optimizer (optax AdamW, linear warm-up then cosine decay) from the config."""
from __future__ import annotations

import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from apvit_jax.training import shared_programs


class TrainState(train_state.TrainState):
  """Flax TrainState plus BatchNorm statistics (an empty dict for models without BatchNorm)."""
  batch_stats: Any = flax.struct.field(default_factory=dict)

  def variables(self) -> dict:
    """{"params", and "batch_stats" where the model has BatchNorm}: what model.apply takes."""
    return {"params": self.params, **({"batch_stats": self.batch_stats} if self.batch_stats else {})}


SCHEDULES = ("cosine", "cosine_restarts")


def learning_rate_schedule(optim_cfg, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  """Linear warm-up from 0, then one cosine decay ("cosine") or cosine warm restarts ("cosine_restarts",
  SGDR: cycles of restart_epochs, each restart_mult times longer, counted from the end of warm-up)."""
  warmup = int(optim_cfg.warmup_epochs * steps_per_epoch)
  if warmup >= total_steps:
    raise ValueError(f"optim.warmup_epochs={optim_cfg.warmup_epochs} ({warmup} steps) must be shorter "
                     f"than the run ({total_steps} steps)")
  kind = optim_cfg.schedule
  lr, end = optim_cfg.lr, optim_cfg.end_lr_ratio
  if kind == "cosine":
    return optax.warmup_cosine_decay_schedule(init_value=0.0, peak_value=lr, warmup_steps=warmup,
                                              decay_steps=total_steps, end_value=lr * end)
  if kind != "cosine_restarts":
    raise ValueError(f"unknown optim.schedule={kind!r}; choose from {SCHEDULES}")
  cycle = optim_cfg.restart_epochs * steps_per_epoch
  if cycle < 1 or optim_cfg.restart_mult < 1:
    raise ValueError(f"optim.restart_epochs={optim_cfg.restart_epochs} must give >= 1 step and "
                     f"optim.restart_mult={optim_cfg.restart_mult} must be >= 1")
  schedules, boundaries, start = [], [], warmup
  if warmup:
    schedules.append(optax.linear_schedule(0.0, lr, warmup))
  while start < total_steps:
    length = max(int(round(cycle)), 1)
    if schedules:
      boundaries.append(start)
    schedules.append(optax.cosine_decay_schedule(lr, length, alpha=end))
    start += length
    cycle *= optim_cfg.restart_mult
  return optax.join_schedules(schedules, boundaries)


def decay_mask(params):
  """Weight decay on matrices and conv kernels only, not on biases, norms, tokens or embeddings."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x.ndim >= 2 and getattr(path[-1], "key", "") == "kernel", params)


OPTIMIZERS = ("adamw", "sgd")


def _base_optimizer(optim_cfg, schedule: optax.Schedule) -> optax.GradientTransformation:
  if optim_cfg.name == "adamw":
    return optax.adamw(schedule, b1=optim_cfg.b1, b2=optim_cfg.b2, weight_decay=optim_cfg.weight_decay,
                       mask=decay_mask)
  if optim_cfg.name == "sgd":
    return optax.chain(optax.add_decayed_weights(optim_cfg.weight_decay, mask=decay_mask),
                       optax.sgd(schedule, momentum=optim_cfg.b1 or None))
  raise ValueError(f"unknown optimizer optim.name={optim_cfg.name!r}; choose from {OPTIMIZERS}")


def localisation_labels(params):
  """"stn" for the adaptive front-end's localisation network and head, "rest" for everything else."""
  from apvit_jax.models.adaptive import LOCALISATION_PARAMS  # models import training-free modules only
  def label(path, _):
    keys = [getattr(k, "key", None) for k in path]
    return "stn" if len(keys) > 1 and keys[0] == "patch_embed" and keys[1] in LOCALISATION_PARAMS else "rest"
  return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(optim_cfg, schedule: optax.Schedule) -> optax.GradientTransformation:
  """AdamW (decoupled decay on kernels) or SGD with momentum b1 and the same decay, optional clipping
  (over all parameters); the localisation network's learning rate is scaled by optim.stn_lr_ratio."""
  tx = _base_optimizer(optim_cfg, schedule)
  ratio = optim_cfg.stn_lr_ratio
  if ratio != 1.0:
    stn_tx = _base_optimizer(optim_cfg, lambda step: schedule(step) * ratio)
    tx = optax.multi_transform({"stn": stn_tx, "rest": tx}, localisation_labels)
  if optim_cfg.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(optim_cfg.grad_clip), tx)
  return tx


def create_state(model, tx, key: jax.Array, image_shape, init_inputs=None) -> TrainState:
  """Initialises parameters on the default device from a dummy batch of one image (or `init_inputs`,
  a tuple of arrays for models that take other inputs, e.g. IPS's patches and positions).

  key: one key -> one state; or keys (K,) -> K replicas stacked on a leading axis of every array
  (parameters, optimizer state, batch statistics; training/replicas.py), replica k initialised exactly
  as one state from keys[k]. The step counter is a shared scalar either way."""
  options = init_compiler_options()
  compiled = shared_programs.get(
      ("init", _init_key(model, tx, key, image_shape, init_inputs), tuple(sorted(options.items()))),
      lambda: jax.jit(_init_function(model, tx, key, image_shape, init_inputs)).lower(key).compile(
          compiler_options=options))
  return _train_state(model, tx, *compiled(key))


def state_shapes(model, tx, key: jax.Array, image_shape, init_inputs=None) -> TrainState:
  """The TrainState that create_state returns with the same arguments, as jax.ShapeDtypeStruct leaves:
  traced, never compiled or run. What restoring a checkpoint needs (resuming, evaluating): the
  initialisation program is a large part of a run's start-up (init_compiler_options)."""
  shapes = shared_programs.get(("init shapes", _init_key(model, tx, key, image_shape, init_inputs)),
                               lambda: jax.eval_shape(_init_function(model, tx, key, image_shape, init_inputs), key))
  return _train_state(model, tx, *shapes)


def _init_key(model, tx, key, image_shape, init_inputs) -> tuple:
  """What the initialisation program depends on: the model and optimizer objects (shared by equal runs,
  training/shared_programs.py), the key's shape and kind, the dummy inputs' shapes and dtypes (zeros)."""
  inputs = tuple((np.shape(x), str(np.asarray(x).dtype)) for x in init_inputs or ())
  return model, tx, key.shape, str(key.dtype), tuple(image_shape), inputs


def is_shapes(state: TrainState) -> bool:
  """Whether `state` came from state_shapes (its arrays are shapes only)."""
  return any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(state.params))


def _init_function(model, tx, key, image_shape, init_inputs):
  """key (or keys (K,)) -> (variables, optimizer state): one program for both (no eager op per leaf)."""
  inputs = init_inputs or (jnp.zeros((1, *image_shape), jnp.float32),)

  def init(k):
    variables = model.init(k, *inputs, train=False)
    return variables, tx.init(variables["params"])
  return init if key.ndim == 0 else jax.vmap(init)


def _train_state(model, tx, variables, opt_state) -> TrainState:
  return TrainState(step=0, apply_fn=model.apply, params=variables["params"], tx=tx, opt_state=opt_state,
                    batch_stats=variables.get("batch_stats", {}))


def init_compiler_options() -> dict:
  """XLA options for the program that initialises the variables, which runs once: on a CPU, compiling it
  at XLA's default backend optimisation level (a random sampler per variable, all optimised by LLVM) is
  much of a run's start-up. Level 1 gives the same values bit for bit as the default, 3
  (tests/test_training.py; 2 agreed too when measured, level 0 differs by up to 4 ulp) and compiles
  faster. Compile + run on 2 cores, default -> level 1, s: quickstart 2.9 -> 2.0, IPS Megapixel MNIST
  5.3 -> 1.6, vit_cifar10 (21 M parameters) 7.0-8.2 -> 6.1-6.5, apvit_cifar10 11.4 -> 10.1, ViT-B/16 at
  224² 10.4-10.6 -> 8.8. Other backends, or an optimisation level set in XLA_FLAGS (the tests set 0), keep
  XLA's choice: {}."""
  if jax.default_backend() != "cpu" or "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
    return {}
  return {"xla_backend_optimization_level": 1}


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
