"""TrainState and the optimizer (optax AdamW, linear warm-up then cosine decay) from the config."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
  """Flax TrainState plus BatchNorm statistics (an empty dict for models without BatchNorm)."""
  batch_stats: Any = flax.struct.field(default_factory=dict)


def learning_rate_schedule(optim_cfg, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  warmup = int(optim_cfg.warmup_epochs * steps_per_epoch)
  if warmup >= total_steps:
    raise ValueError(f"optim.warmup_epochs={optim_cfg.warmup_epochs} ({warmup} steps) must be shorter "
                     f"than the run ({total_steps} steps)")
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim_cfg.lr, warmup_steps=warmup, decay_steps=total_steps,
      end_value=optim_cfg.lr * optim_cfg.end_lr_ratio)


def decay_mask(params):
  """Weight decay on matrices and conv kernels only, not on biases, norms, tokens or embeddings."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x.ndim >= 2 and getattr(path[-1], "key", "") == "kernel", params)


OPTIMIZERS = ("adamw", "sgd")


def make_optimizer(optim_cfg, schedule: optax.Schedule) -> optax.GradientTransformation:
  """AdamW (decoupled decay on kernels) or SGD with momentum b1 and the same decay, optional clipping."""
  if optim_cfg.name == "adamw":
    tx = optax.adamw(schedule, b1=optim_cfg.b1, b2=optim_cfg.b2, weight_decay=optim_cfg.weight_decay,
                     mask=decay_mask)
  elif optim_cfg.name == "sgd":
    tx = optax.chain(optax.add_decayed_weights(optim_cfg.weight_decay, mask=decay_mask),
                     optax.sgd(schedule, momentum=optim_cfg.b1 or None))
  else:
    raise ValueError(f"unknown optimizer optim.name={optim_cfg.name!r}; choose from {OPTIMIZERS}")
  if optim_cfg.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(optim_cfg.grad_clip), tx)
  return tx


def create_state(model, tx, key: jax.Array, image_shape) -> TrainState:
  """Initialises parameters on the default device from a dummy batch of one image."""
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, *image_shape), jnp.float32), train=False))(key)
  return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                           batch_stats=variables.get("batch_stats", {}))


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
