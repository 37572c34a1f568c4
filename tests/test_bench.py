"""The benchmarks run end to end (on CPU, tiny): they report what they claim. No timing is asserted."""
import jax
import numpy as np

from apvit_jax import sampler
from bench import common, sampler_bench, step_bench


def test_step_benchmark_builds_the_trainers_step_and_counts_flops():
  row = step_bench.time_workload("std_vit_cifar10", batch_size=8, warmup=0, repeats=1,
                                 extra={"model.depth": 1, "model.dtype": "float32"})
  assert row["batch"] == 8 and row["image"] == "32x32x3"
  for key in ("compile_s", "step_ms", "batch_ms", "loop_step_ms", "images_per_s"):
    assert np.isfinite(row[key]) and row[key] > 0, key
  # One block of width 288 on 17 tokens: forward ≈ 2·params·tokens; a train step is ≈ 3 forwards.
  forward = 2 * row["params"] * 17 * 8
  assert 1.5 * forward < row["tflop_per_step"] * 1e12 < 6 * forward
  assert row["mfu"] is None or jax.devices()[0].platform != "cpu"   # no CPU peak: no MFU


def test_sampler_benchmark_maps_stay_near_the_grid():
  images, theta = sampler_bench._inputs(3, 32, 8)
  grid = np.asarray(sampler.regular_grid_theta((32, 32), 8))
  assert images.shape == (3, 32, 32, 3) and theta.shape == (3, 16, 2, 3)
  np.testing.assert_allclose(theta[..., 2], np.broadcast_to(grid[..., 2], (3, 16, 2)), atol=0.05)
  assert not np.allclose(theta[..., :2], grid[..., :2])


def test_table_and_peaks():
  assert common.device_peaks(jax.devices("cpu")[0]) == (None, None)
  out = common.table([{"a": "x", "b": 1234.5}, {"a": "y"}], [("a", "name", ""), ("b", "value", ",.1f")])
  assert out.splitlines() == ["| name | value |", "|---|---:|", "| x | 1,234.5 |", "| y | - |"]
