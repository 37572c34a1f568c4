"""Train and eval steps, written once as per-device code. Collectives use the named axis "batch";
`parallel.py` runs them under jax.pmap or jit(shard_map) over a Mesh.

A batch is a dict with either "index" (int32 (b,), rows of the device-resident `data`) or "images"
(uint8 (b, H, W, C)) and "labels"; "position" (int32 (b,)) is each example's place in the global batch
and keys its augmentation; eval batches carry "mask" (bool (b,)) for padding.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from apvit_jax.data.augment import example_keys, preprocess

AXIS = "batch"


def fetch(data, batch):
  """(images uint8 (b, H, W, C), labels (b,)) from the device-resident dataset or the batch itself."""
  if "index" in batch:
    return data["images"][batch["index"]], data["labels"][batch["index"]]
  return batch["images"], batch["labels"]


def _apply(state, params, images, *, train, rngs=None):
  variables = {"params": params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
    if train:
      (logits, _), updates = state.apply_fn(variables, images, train=True, rngs=rngs,
                                            mutable=["batch_stats"])
      return logits, updates["batch_stats"]
  logits, _ = state.apply_fn(variables, images, train=train, rngs=rngs)
  return logits, state.batch_stats


def make_train_step(config, schedule):
  """-> train_step(state, data, batch, key) -> (state, metrics), per device."""

  def train_step(state, data, batch, key):
    images, labels = fetch(data, batch)
    step_key = jax.random.fold_in(key, state.step)
    x = preprocess(images, example_keys(jax.random.fold_in(step_key, 0), batch["position"]),
                   config.augment, train=True)
    # Dropout masks differ per device (and so with the device count); augmentation does not.
    dropout_key = jax.random.fold_in(jax.random.fold_in(step_key, 1), jax.lax.axis_index(AXIS))
    num_classes = config.num_classes

    def loss_fn(params):
      logits, batch_stats = _apply(state, params, x, train=True, rngs={"dropout": dropout_key})
      targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), config.label_smoothing)
      loss = optax.softmax_cross_entropy(logits, targets).mean()
      return loss, (logits, batch_stats)

    # Under shard_map, replicated (axis-invariant) parameters get an implicit psum in the backward pass
    # (the transpose of their broadcast to the varying data), which would turn the pmean below into an
    # N-fold sum. Marking them varying keeps per-device gradients, and one explicit reduction, in both modes.
    params = jax.lax.pcast(state.params, AXIS, to="varying")
    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grads = jax.lax.pmean(grads, AXIS)
    batch_stats = jax.lax.pmean(batch_stats, AXIS)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    grad_norm = optax.tree.norm(grads)  # the same on every device (after pmean)
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
        "grad_norm": grad_norm,
        "lr": schedule(state.step),
    }
    if config.get("skip_nonfinite_steps", False):
      # A non-finite loss or gradient leaves parameters and optimizer state as they were; the step (and
      # so the batch order) still advances.
      ok = jnp.isfinite(jax.lax.pmean(loss, AXIS)) & jnp.isfinite(grad_norm)
      kept = state.replace(step=state.step + 1)
      new_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, kept)
      metrics["skipped"] = 1.0 - ok.astype(jnp.float32)
    return new_state, jax.lax.pmean(metrics, AXIS)

  return train_step


def make_eval_step(config, confusion: bool = False):
  """-> eval_step(state, data, batch) -> sums {"loss", "correct", "count"} over the global batch, and
  with `confusion` a (classes, classes) count matrix, rows = true label, columns = prediction."""

  def eval_step(state, data, batch):
    images, labels = fetch(data, batch)
    x = preprocess(images, None, config.augment, train=False)
    logits, _ = _apply(state, state.params, x, train=False)
    mask = batch["mask"].astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    predictions = jnp.argmax(logits, -1)
    sums = {"loss": jnp.sum(loss * mask), "correct": jnp.sum((predictions == labels) * mask),
            "count": jnp.sum(mask)}
    if confusion:
      k = config.num_classes
      sums["confusion"] = jnp.einsum("bi,bj->ij", jax.nn.one_hot(labels, k) * mask[:, None],
                                     jax.nn.one_hot(predictions, k))
    return jax.lax.psum(sums, AXIS)

  return eval_step
