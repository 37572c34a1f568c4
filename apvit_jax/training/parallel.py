"""Data parallelism over every device of every host, by jax.pmap or jax.jit(jax.shard_map).

Both run the same per-device function with collectives over the axis "batch"; parameters are
replicated and each device takes a contiguous slice of the global batch.
  pmap:      arrays carry a leading local-device axis: (n_local_devices, b, ...).
  shard_map: global arrays over a 1-D Mesh of all devices: (B, ...) sharded on axis 0.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from apvit_jax.errors import ConfigError
from apvit_jax.training.step import AXIS

MODES = ("pmap", "shard_map")


def maybe_initialize_distributed(enabled) -> None:
  """Multi-host start-up (TPU pods, multi-node GPU). `jax.distributed.initialize()` reads the cluster
  from the environment: Cloud TPU metadata, SLURM, or, for any other launcher,
  JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID.

  enabled (config.distributed): "true" always initialises, "false" never, "auto" when such an environment
  is detected (any case; booleans as well).
  """
  enabled = str(enabled).lower()
  if enabled == "true" or (enabled == "auto" and _multi_host_environment()):
    env = os.environ
    explicit = {}  # a plain launcher (no SLURM/TPU metadata): JAX_NUM_PROCESSES and JAX_PROCESS_ID
    for name, key in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
      if key in env:
        try:
          explicit[name] = int(env[key])
        except ValueError:
          raise ValueError(f"environment variable {key}={env[key]!r} is not an integer") from None
    jax.distributed.initialize(**explicit)


def _multi_host_environment() -> bool:
  env = os.environ
  if "JAX_COORDINATOR_ADDRESS" in env:
    return True
  if "," in env.get("TPU_WORKER_HOSTNAMES", ""):  # a TPU VM slice with more than one worker
    return True
  return int(env.get("SLURM_NTASKS", "1")) > 1


class Parallel:
  """Puts trees on devices in the layout of `mode` and compiles per-device steps for it."""

  def __init__(self, mode: str = "pmap", devices=None):
    """devices: all devices of all hosts by default; a subset for tests (single host only)."""
    if mode not in MODES:
      raise ValueError(f"unknown parallel mode {mode!r}; choose from {MODES}")
    self.mode = mode
    devices = list(devices or jax.devices())
    self.local_devices = [d for d in devices if d.process_index == jax.process_index()]
    self.num_devices = len(devices)
    self.num_local = len(self.local_devices)
    if mode == "pmap":
      self._sharded = NamedSharding(Mesh(np.array(self.local_devices), (AXIS,)), P(AXIS))
      self._pmap_devices = self.local_devices if devices != jax.devices() else None
    else:
      self.mesh = Mesh(np.array(devices), (AXIS,))
      self._replicated = NamedSharding(self.mesh, P())
      self._sharded = NamedSharding(self.mesh, P(AXIS))

  def check_batch(self, global_batch: int) -> int:
    """Per-device batch; raises if the global batch does not split evenly."""
    if global_batch % self.num_devices:
      raise ConfigError(f"global batch_size={global_batch} is not divisible by the device count "
                       f"({self.num_devices} devices on {jax.process_count()} host(s))")
    return global_batch // self.num_devices

  def replicate(self, tree):
    """Host (or single-device) tree -> one copy on every device."""
    if self.mode == "pmap":
      return jax.tree.map(lambda x: jax.device_put(
          np.broadcast_to(np.asarray(x), (self.num_local, *np.shape(x))), self._sharded), tree)
    return jax.tree.map(lambda x: _global_from_host(np.asarray(x), self._replicated), tree)

  def unreplicate(self, tree):
    """Replicated device tree -> host NumPy tree (one copy)."""
    def one_copy(x):
      if not isinstance(x, jax.Array):
        return np.asarray(x)
      local = np.asarray(x.addressable_data(0))
      return local[0] if self.mode == "pmap" else local
    return jax.tree.map(one_copy, tree)

  def first_copy(self, tree):
    """Replicated device tree -> the copy on this host's first device (no host transfer)."""
    return jax.tree.map(lambda x: x.addressable_data(0)[0] if self.mode == "pmap" else x.addressable_data(0),
                        tree)

  def shard(self, tree):
    """This host's slice of a global batch, leaves (local_B, ...) -> device layout."""
    if self.mode == "pmap":
      return jax.tree.map(lambda x: jax.device_put(
          x.reshape(self.num_local, -1, *x.shape[1:]), self._sharded), tree)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self._sharded, x), tree)

  def metrics(self, tree) -> dict:
    """Collective (already reduced) metrics -> Python floats."""
    tree = jax.device_get(tree)
    if self.mode == "pmap":
      tree = jax.tree.map(lambda x: x[0], tree)
    return {k: float(v) if np.ndim(v) == 0 else np.asarray(v) for k, v in tree.items()}

  def compile(self, fn, *, num_args: int, broadcast_last: bool = False, donate_first: bool = True):
    """fn(state, data, batch[, key]) per device -> the parallel version.

    Arguments: state and data replicated, batch sharded, key (if broadcast_last) the same everywhere.
    """
    donate = (0,) if donate_first else ()
    if self.mode == "pmap":
      in_axes = (0,) * (num_args - 1) + ((None,) if broadcast_last else (0,))
      return jax.pmap(fn, axis_name=AXIS, in_axes=in_axes, donate_argnums=donate,
                      devices=self._pmap_devices)
    specs = [P(), P(), P(AXIS)] + ([P()] if broadcast_last else [])
    return jax.jit(jax.shard_map(fn, mesh=self.mesh, in_specs=tuple(specs[:num_args]), out_specs=P()),
                   donate_argnums=donate)


def _global_from_host(x: np.ndarray, sharding):
  """Every host holds the same x; builds the replicated global array without cross-host transfers."""
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
