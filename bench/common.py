"""Shared benchmark helpers: wall-clock medians, the machine's peak numbers, a measured copy bandwidth,
and the small table every suite prints."""
from __future__ import annotations

import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

# Dense bf16 tensor-core / MXU peak FLOP/s and HBM bandwidth (bytes/s) from the vendors' data sheets,
# by jax's device_kind prefix. MFU is reported only where the peak is known.
PEAKS = {
    "NVIDIA H100": (989.4e12, 3.35e12),   # SXM5 80 GB (HBM3)
    "NVIDIA H200": (989.4e12, 4.8e12),
    "NVIDIA A100": (312e12, 2.0e12),      # 80 GB SXM
    "TPU v4": (275e12, 1.2e12),
    "TPU v5 lite": (197e12, 0.82e12),     # v5e
    "TPU v5": (459e12, 2.76e12),          # v5p
    "TPU v6 lite": (918e12, 1.64e12),     # v6e (Trillium)
}


def device_peaks(device) -> tuple[float | None, float | None]:
  """(peak FLOP/s, peak bytes/s) of a device, or (None, None) when unknown (e.g. CPU)."""
  kind = getattr(device, "device_kind", "")
  for prefix in sorted(PEAKS, key=len, reverse=True):
    if kind.startswith(prefix):
      return PEAKS[prefix]
  return None, None


def machine() -> dict:
  d = jax.devices()[0]
  return {"device": getattr(d, "device_kind", d.platform), "platform": d.platform,
          "num_devices": jax.device_count(), "jax": jax.__version__, "host": platform.node(),
          "cpu": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M")}


def median_seconds(fn, *, warmup: int, repeats: int) -> float:
  """Median wall time of fn() (which must block until its device work is done)."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def copy_bandwidth(num_bytes: int, repeats: int = 10) -> float:
  """Measured bytes/s of an elementwise op reading and writing a num_bytes float32 array (2x bytes).

  Measure it at the size of the arrays a floor is for: on a CPU an array that stays in cache copies
  several times faster than one that does not (the 2-core Xeon VM, 2026-12-07: 26 GB/s at 19 MB, 8.5 GB/s
  at 64 and 256 MB), so a large copy's bandwidth puts a cache-sized workload's floor too high."""
  x = jnp.asarray(np.random.default_rng(0).standard_normal(num_bytes // 4, dtype=np.float32))
  f = jax.jit(lambda a: a * 1.0001)
  seconds = median_seconds(lambda: f(x).block_until_ready(), warmup=2, repeats=repeats)
  return 2 * num_bytes / seconds


def floor_bandwidth(num_bytes: int) -> tuple[float, str]:
  """(bytes/s, where it comes from) for a bandwidth floor of arrays of num_bytes: the device's data sheet
  ("spec"), else a copy of an array of that size ("measured copy"; copy_bandwidth: sized to the workload)."""
  _, spec_bw = device_peaks(jax.devices()[0])
  return (spec_bw, "spec") if spec_bw else (copy_bandwidth(num_bytes), "measured copy")


def matmul_rate(dtype: str, n: int = 4096, repeats: int = 5) -> float:
  """Measured FLOP/s of one n x n x n matmul in `dtype` (float32 accumulation): the practical compute
  roof of this device, used where no data-sheet peak is known (CPU)."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)).astype(dtype)
  f = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
  return 2 * n ** 3 / median_seconds(lambda: f(a).block_until_ready(), warmup=1, repeats=repeats)


def flops_of(compiled) -> float | None:
  """FLOPs per call of a compiled executable by XLA's cost analysis (per device; loop bodies are
  counted once, so scans are undercounted), or None where the backend gives none."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # some backends do not implement it
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  flops = (cost or {}).get("flops")
  return float(flops) if flops else None


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
  """columns: (key, header, format) -> a Markdown table; missing values print as '-'."""
  head = "| " + " | ".join(h for _, h, _ in columns) + " |"
  rule = "|" + "|".join("---:" if f else "---" for _, _, f in columns) + "|"
  fmt = lambda v, f: "-" if v is None else (format(v, f) if f else str(v))
  body = ["| " + " | ".join(fmt(r.get(k), f) for k, _, f in columns) + " |" for r in rows]
  return "\n".join([head, rule, *body])


def compiled_memory_gib(compiled) -> float | None:
  """Device memory one call of a compiled executable needs by XLA's buffer assignment (per device):
  arguments + outputs + temporaries - donated (aliased) buffers. None where the backend gives none."""
  try:
    m = compiled.memory_analysis()
  except Exception:
    return None
  if m is None:
    return None
  total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
  return total / 2 ** 30


def runtime_peak_gib(device, since: float | None = None) -> float | None:
  """The allocator's peak bytes in use since the process started (GPU/TPU), or None (CPU).

  since: this function's value when a workload started. The peak is then returned only if the workload
  raised it; otherwise None, because a peak an earlier workload of the process set says nothing about
  this one (JAX cannot reset it): time such a workload in a process of its own for its runtime peak."""
  stats = device.memory_stats() or {}
  if "peak_bytes_in_use" not in stats:
    return None
  peak = stats["peak_bytes_in_use"] / 2 ** 30
  return peak if since is None or peak > since else None
