"""XLA's persistent compilation cache in WORKDIR/compilation_cache (config.compilation_cache): a run resumed
after a preemption, an evaluation of the workdir and a rerun of the same command load the compiled train and
evaluation steps from there instead of compiling them again. JAX decides what to keep (programs that took at
least `jax_persistent_cache_min_compile_time_secs` to compile, 1 s by default) and keys each entry by the
program, the JAX/XLA versions, the XLA flags and the device kind."""
from __future__ import annotations

import pathlib

import jax

FOLDER = "compilation_cache"


def use_workdir_cache(enabled: bool, workdir) -> str | None:
  """Points JAX's persistent compilation cache at WORKDIR/compilation_cache before anything compiles.
  A cache already chosen wins: the environment's JAX_COMPILATION_CACHE_DIR (one cache shared by many
  workdirs), or the first run of this process (JAX reads the setting at a process's first compilation).
  A workdir where the folder cannot be made (read-only: evaluating another's run) gets no cache.
  -> the folder in use, or None."""
  chosen = _chosen()
  if chosen or not enabled:
    return chosen or None
  folder = pathlib.Path(workdir).expanduser().resolve() / FOLDER
  try:
    folder.mkdir(parents=True, exist_ok=True)
  except OSError:
    return None
  jax.config.update("jax_compilation_cache_dir", str(folder))
  return str(folder)


def _chosen() -> str | None:
  return jax.config.jax_compilation_cache_dir


def off_for_multiprocess_cpu() -> bool:
  """Turns JAX's persistent compilation cache off in a multi-process run on CPUs, before the run's first
  compilation; -> whether it did. On jax 0.12.1 such a run hangs in its first collective when its
  programs come from the cache (gloo; measured with a bare `shard_map` psum over 2 processes: the first
  run, which compiles, ends; the second, which loads, hangs; 0.12.0.1 loads and runs it). Multi-process
  CPU runs are for tests and small clusters, where compiling again costs seconds, so the cache stays off
  there on every version; single-process runs and GPUs/TPUs keep it. Call after
  jax.distributed.initialize."""
  if not multiprocess_cpu():
    return False
  jax.config.update("jax_enable_compilation_cache", False)
  return True


def multiprocess_cpu() -> bool:
  """A run of several processes on CPUs (where the persistent cache is off: off_for_multiprocess_cpu)."""
  return jax.process_count() > 1 and jax.default_backend() == "cpu"
