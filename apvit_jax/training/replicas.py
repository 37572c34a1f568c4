"""Several seeds in one program (config.num_seeds = K > 1): K independent replicas of the parameters,
optimizer state and batch statistics, stacked on a leading axis and trained by one compiled step that
runs the per-replica step (training/step.py) over them inside pmap or shard_map: vmapped (every
operation K replicas wide) or unrolled (K copies of the step in the program), by config.replica_loop.

Replica k is the run with seed config.seed + k: its initialisation, data order, augmentation and dropout
come from that seed exactly as in a one-seed run, so replica k equals `--config.seed=SEED+k` (to float32
rounding of the batched arithmetic).

Layouts with K > 1:
  state:        every array (K, ...), except the step counter, a shared scalar;
  train batch:  every leaf (b, K, ...): the replica axis second, so the devices still split axis 0;
  eval batch:   shared by the replicas (no replica axis);
  train key:    (K,) keys;
  metrics:      (K, ...) per replica, written as NAME/seedS, NAME_mean and NAME_sd (sample sd, ddof=1).
K = 1 uses none of this: state, checkpoints and records are those of a one-seed run.
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from apvit_jax.errors import ConfigError

# Metrics that are the same for every replica: written once, under their own name.
SHARED = ("lr", "count", "epoch", "images_per_sec")


def seeds(config) -> tuple[int, ...]:
  """The replicas' seeds: config.seed, config.seed + 1, ..., config.seed + num_seeds - 1."""
  if config.seed + config.num_seeds - 1 > 2 ** 31 - 1:
    raise ConfigError(f"config.seed={config.seed} + config.num_seeds={config.num_seeds} - 1 must be < 2**31")
  return tuple(config.seed + k for k in range(config.num_seeds))


def state_axes(state):
  """vmap axes of a stacked TrainState: 0 for every array, None for the shared step counter."""
  return state.replace(step=None, params=0, opt_state=0, batch_stats=0)


LOOPS = ("vmap", "unroll")


def loop_kind(config) -> str:
  """config.replica_loop -> "vmap" or "unroll". "auto" unrolls on a CPU, where K unrolled replicas train at
  K separate runs' speed and vmapped ones at 0.5-1.0 of it (IPS's vmapped convolutions become grouped ones,
  slow on XLA:CPU; bench/RESULTS.md), and vmaps on GPU/TPU, where K small replicas in one wide kernel fill the device
  and compile once."""
  value = str(config.replica_loop).lower()
  if value == "auto":
    return "unroll" if jax.default_backend() == "cpu" else "vmap"
  if value not in LOOPS:
    raise ConfigError(f"config.replica_loop={config.replica_loop!r}: choose from {('auto',) + LOOPS}")
  return value


def _stack_traced(trees):
  """Equal-structured trees inside a traced step -> one tree whose leaves gain a leading replica axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _stacked(state, replicas):
  """One-seed states -> `state` holding them stacked (the step counter, shared, from the first)."""
  return state.replace(step=replicas[0].step, params=_stack_traced([r.params for r in replicas]),
                       opt_state=_stack_traced([r.opt_state for r in replicas]),
                       batch_stats=_stack_traced([r.batch_stats for r in replicas]))


def replicated_train_step(train_step, state, kind: str):
  """train_step(state, data, batch, key) per replica -> the same over K replicas (see the layouts): vmapped
  (kind "vmap": each operation K replicas wide, compiled once) or unrolled ("unroll": K copies of the step,
  one per replica, in one program; compilation grows with K). Both compute each replica's step exactly as
  a one-seed run does, to float32 rounding."""
  axes = state_axes(state)
  if kind == "vmap":
    return jax.vmap(train_step, in_axes=(axes, None, 1, 0), out_axes=(axes, 0))

  def unrolled(state, data, batch, keys):
    steps = [train_step(select_state(state, k), data, jax.tree.map(lambda x: x[:, k], batch), keys[k])
             for k in range(keys.shape[0])]
    return _stacked(state, [s for s, _ in steps]), _stack_traced([m for _, m in steps])
  return unrolled


def replicated_eval_step(eval_step, state, kind: str):
  """eval_step(state, data, batch) per replica -> sums with a leading K axis; the batch is shared."""
  if kind == "vmap":
    return jax.vmap(eval_step, in_axes=(state_axes(state), None, None), out_axes=0)

  def unrolled(state, data, batch):
    count = jax.tree.leaves(state.params)[0].shape[0]
    return _stack_traced([eval_step(select_state(state, k), data, batch) for k in range(count)])
  return unrolled


def stack(trees, axis: int = 0):
  """Equal-structured trees -> one tree whose leaves gain a replica axis at `axis`."""
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs], axis), *trees)


def select_state(state, k: int):
  """Replica k of a stacked TrainState: a one-seed state (the step counter is shared)."""
  pick = lambda tree: jax.tree.map(lambda x: x[k], tree)
  return state.replace(params=pick(state.params), opt_state=pick(state.opt_state),
                       batch_stats=pick(state.batch_stats))


def per_replica(metrics: dict, num: int) -> dict:
  """Device metrics -> NumPy arrays with a leading replica axis (added when num == 1); float64."""
  def one(v):
    v = np.asarray(v)
    v = v.astype(np.float64) if v.dtype.kind == "f" else v
    return v[None] if num == 1 else v
  return {name: one(v) for name, v in metrics.items()}


def _plain(x):
  x = np.asarray(x)
  return x.item() if x.ndim == 0 else x.tolist()


def summarize(values: dict, seed_list) -> dict:
  """{name: (K, ...) per replica} -> a record. One seed: {name: value}, exactly a one-seed run's record.
  Several: SHARED names once; for float scalars NAME_mean and NAME_sd over the replicas; and every value
  per replica as NAME/seedS."""
  if len(seed_list) == 1:
    return {name: _plain(np.asarray(v)[0]) for name, v in values.items()}
  out, each = {}, {}
  for name, v in values.items():
    v = np.asarray(v)
    if name in SHARED:
      out[name] = _plain(v[0])
      continue
    if v.ndim == 1 and v.dtype.kind == "f":
      out[f"{name}_mean"], out[f"{name}_sd"] = float(v.mean()), float(v.std(ddof=1))
    each.update({f"{name}/seed{s}": _plain(x) for s, x in zip(seed_list, v)})
  return {**out, **each}


def mean_value(record: dict, name: str):
  """A record's headline value of `name`: itself (one seed) or NAME_mean (several)."""
  return record[name] if name in record else record[f"{name}_mean"]


def logged_seeds(record: dict) -> list[int]:
  """The seeds whose values a multi-seed run's record holds (its NAME/seedS keys), in order; [] for a
  one-seed run's record."""
  return sorted({int(m.group(1)) for k in record if (m := re.search(r"/seed(\d+)$", k))})


def replica_records(records: list[dict]) -> dict:
  """A run's records per seed, {seed: records}: a multi-seed run's (NAME/seedS per replica) become one-seed
  records of each replica (NAME), the shared names (epoch, lr, ...) kept; a one-seed run's are {None:
  records} (its records do not name its seed)."""
  seeds = sorted({s for r in records for s in logged_seeds(r)})
  if not seeds:
    return {None: records}
  def view(r, s):
    own = {k[:-len(f"/seed{s}")]: v for k, v in r.items() if k.endswith(f"/seed{s}")}
    shared = {k: v for k, v in r.items() if not re.search(r"(/seed\d+|_mean|_sd)$", k)}
    return {**shared, **own}
  return {s: [view(r, s) for r in records] for s in seeds}


def seed_values(record: dict, name: str, seed_list) -> list:
  """A record's values of `name`, one per replica, in seed order."""
  if len(seed_list) == 1:
    return [record[name]]
  return [record[f"{name}/seed{s}"] for s in seed_list]


def check_index(k: int, count: int) -> None:
  """eval.py's --seed_index: a ValueError unless 0 <= k < count (the run's config.num_seeds)."""
  if not 0 <= k < count:
    raise ValueError(f"--seed_index={k}: the run has {count} replica(s) (config.num_seeds), indices "
                     f"0..{count - 1}")
