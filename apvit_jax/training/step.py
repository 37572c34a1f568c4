"""Train and eval steps, written once as per-device code for any model family (the family's
`model_inputs` turns a batch into model inputs). Collectives use the named axis "batch";
`parallel.py` runs them under jax.pmap or jit(shard_map) over a Mesh.

A batch is a dict with either "index" (int32 (b,), rows of the device-resident `data`) or "images"
(uint8 (b, H, W, C)) and "labels"; "position" (int32 (b,)) is each example's place in the global batch
and keys its augmentation; eval batches carry "mask" (bool (b,)) for padding.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

AXIS = "batch"


def inputs_key(train_key, step):
  """The key of a training step's inputs (augmentation, IPS's patch order): the same on every device
  and on the host (lazy IPS selection), so the step and the host agree."""
  return jax.random.fold_in(jax.random.fold_in(train_key, step), 0)


def eval_inputs_key():
  """The inputs key of every evaluation step (and of figures): fixed, so evaluations are comparable."""
  return jax.random.key(0)


def as_task_dict(x, tasks) -> dict:
  return x if isinstance(x, dict) else {tasks[0][0]: x}


def task_losses(logits: dict, labels: dict, tasks, smoothing: float = 0.0) -> jax.Array:
  """Per-example loss (b,), the mean over tasks: softmax cross-entropy (label-smoothed) or, for
  sigmoid tasks, binary cross-entropy averaged over classes."""
  losses = []
  for name, classes, act in tasks:
    z, y = logits[name].astype(jnp.float32), labels[name]
    if act == "sigmoid":
      losses.append(optax.sigmoid_binary_cross_entropy(z, y.astype(jnp.float32)).mean(-1))
    else:
      losses.append(optax.softmax_cross_entropy(z, optax.smooth_labels(jax.nn.one_hot(y, classes), smoothing)))
  return sum(losses) / len(losses)


def task_correct(logits: dict, labels: dict, tasks) -> dict:
  """Per-example correctness (b,) per task: argmax == label, or for sigmoid tasks the fraction of the
  classes whose thresholded prediction (logit > 0) matches the multi-hot label."""
  out = {}
  for name, _, act in tasks:
    z, y = logits[name], labels[name]
    out[name] = (((z > 0) == (y > 0.5)).mean(-1) if act == "sigmoid" else (jnp.argmax(z, -1) == y)
                 ).astype(jnp.float32)
  return out


def _apply(state, params, inputs, *, train, rngs=None):
  variables = {"params": params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
    if train:
      (logits, _), updates = state.apply_fn(variables, *inputs, train=True, rngs=rngs,
                                            mutable=["batch_stats"])
      return logits, updates["batch_stats"]
  logits, _ = state.apply_fn(variables, *inputs, train=train, rngs=rngs)
  return logits, state.batch_stats


def make_train_step(model_inputs, tasks, schedule, *, label_smoothing: float = 0.0,
                    skip_nonfinite: bool = False):
  """-> train_step(state, data, batch, key) -> (state, metrics), per device.

  model_inputs(state, data, batch, inputs_key, *, train) -> (inputs, labels): the family's (models/families/);
  tasks: ((name, num_classes, "softmax" | "sigmoid"), ...); schedule: step -> learning rate (logged);
  skip_nonfinite: a step with a non-finite loss or gradient leaves parameters and optimizer state as they
  were (the step, and so the batch order, still advances)."""

  def train_step(state, data, batch, key):
    # Augmentation keys and IPS's patch order are the same on every device; dropout masks differ per
    # device (and so with the device count).
    inputs, labels = model_inputs(state, data, batch, inputs_key(key, state.step), train=True)
    dropout_key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, state.step), 1),
                                     jax.lax.axis_index(AXIS))
    labels = as_task_dict(labels, tasks)

    def loss_fn(params):
      logits, batch_stats = _apply(state, params, inputs, train=True, rngs={"dropout": dropout_key})
      logits = as_task_dict(logits, tasks)
      loss = task_losses(logits, labels, tasks, label_smoothing).mean()
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
        **accuracy_metrics(task_correct(logits, labels, tasks), jnp.mean),
        "grad_norm": grad_norm,
        "lr": schedule(state.step),
    }
    if skip_nonfinite:
      ok = jnp.isfinite(jax.lax.pmean(loss, AXIS)) & jnp.isfinite(grad_norm)
      # The step counter advances either way (it is shared by the replicas of a multi-seed run).
      keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
      new_state = new_state.replace(params=keep(new_state.params, state.params),
                                    opt_state=keep(new_state.opt_state, state.opt_state),
                                    batch_stats=keep(new_state.batch_stats, state.batch_stats))
      metrics["skipped"] = 1.0 - ok.astype(jnp.float32)
    return new_state, jax.lax.pmean(metrics, AXIS)

  return train_step


def repeat_steps(train_step, steps: int):
  """train_step(state, data, batch, key) -> the same for `steps` consecutive steps in one call (a
  lax.scan): fewer dispatches where a step is short (small models on accelerators). The batch's leaves
  carry the steps on axis 1, (b, steps, ...), step i's batch at [:, i] (axis 1 keeps axis 0 the one that
  is sharded over devices); the metrics come back stacked, (steps, ...). Each step computes exactly what
  a call of train_step computes (its step number, keys and learning rate come from state.step)."""
  def many(state, data, batch, key):
    per_step = jax.tree.map(lambda x: jnp.moveaxis(x, 1, 0), batch)
    for x in jax.tree.leaves(per_step):
      if x.shape[0] != steps:
        raise ValueError(f"a call of {steps} steps needs batch leaves (b, {steps}, ...); got axis 1 of "
                         f"size {x.shape[0]}")
    return jax.lax.scan(lambda s, b: train_step(s, data, b, key), state, per_step)
  return many


def make_eval_step(model_inputs, tasks, confusion: bool = False):
  """-> eval_step(state, data, batch) -> sums {"loss", "correct", "count"} over the global batch, and
  with `confusion` a (classes, classes) count matrix, rows = true label, columns = prediction."""
  if confusion and (len(tasks) > 1 or tasks[0][2] != "softmax"):
    raise ValueError("--confusion needs a single softmax task")

  def eval_step(state, data, batch):
    inputs, labels = model_inputs(state, data, batch, eval_inputs_key(), train=False)
    logits, _ = _apply(state, state.params, inputs, train=False)
    logits, labels = as_task_dict(logits, tasks), as_task_dict(labels, tasks)
    mask = batch["mask"].astype(jnp.float32)
    loss = task_losses(logits, labels, tasks)
    sums = {"loss": jnp.sum(loss * mask), "count": jnp.sum(mask),
            **accuracy_metrics(task_correct(logits, labels, tasks), lambda c: jnp.sum(c * mask), "correct")}
    if confusion:
      (name, k, _), = tasks
      predictions = jnp.argmax(logits[name], -1)
      sums["confusion"] = jnp.einsum("bi,bj->ij", jax.nn.one_hot(labels[name], k) * mask[:, None],
                                     jax.nn.one_hot(predictions, k))
    return jax.lax.psum(sums, AXIS)

  return eval_step


def accuracy_metrics(correct: dict, reduce, name: str = "accuracy") -> dict:
  """{name: mean over tasks}, plus {name/task: ...} per task when there are several."""
  out = {name: sum(reduce(c) for c in correct.values()) / len(correct)}
  if len(correct) > 1:
    out.update({f"{name}/{task}": reduce(c) for task, c in correct.items()})
  return out
