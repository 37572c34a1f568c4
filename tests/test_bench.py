"""The benchmarks run end to end (on CPU, tiny): they report what they claim. No timing is asserted."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from apvit_jax import sampler
from apvit_jax.training import shared_programs
from bench import common, host_bench, peers_suite, rerun_bench, sampler_bench, step_bench, torch_peers
from subprocess_env import xla_flags

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
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


@pytest.mark.slow
def test_rerun_benchmark_times_a_first_run_and_reruns_with_and_without_shared_programs():
  (row,) = rerun_bench.run(workloads=["std_vit_cifar10"], batch_size=8, repeats=1,
                           extra={"model.depth": 1, "model.dtype": "float32"})
  assert row["workload"] == "std_vit_cifar10" and row["repeats"] == 1
  for key in ("first_s", "rerun_shared_s", "rerun_cleared_s", "speedup"):
    assert np.isfinite(row[key]) and row[key] > 0, key
  assert shared_programs.size() == 0   # what it built is not left to the process's later runs


@pytest.mark.slow
def test_ips_step_flops_count_every_chunk_of_the_selection():
  """XLA's cost analysis counts the selection scan's body once; the benchmark adds its further
  iterations. The same 56 patches after the first M = 8 scored in 7 chunks of 8 or in one chunk of 56
  (no further iteration): the same FLOPs, but for the scores over 16 or 64 candidates (uncounted, the
  7-chunk step would lose 6 chunks' ResNet forward, about half of its FLOPs)."""
  tiny = {**peers_suite.TINY_IPS, "model.ips.memory": 8}
  rows = [step_bench.time_workload("ips_megapixel_mnist", batch_size=8, warmup=0, repeats=1,
                                   extra={**tiny, "model.ips.chunk": chunk}) for chunk in (8, 56)]
  assert [r["flops_note"] for r in rows] == ["XLA cost analysis"] * 2
  np.testing.assert_allclose(rows[0]["tflop_per_step"], rows[1]["tflop_per_step"], rtol=0.02)


@pytest.mark.slow
def test_host_benchmark_reads_the_same_batches_with_and_without_workers():
  """Both streamed workloads, in the training process and in 2 grain workers; the benchmark itself
  asserts that every row read the same batches (pixel checksums)."""
  rows = host_bench.run(workers=(0, 2), num_batches=3)
  assert [(r["workload"].split()[0], r["workers"]) for r in rows] == [
      ("Megapixel", 0), ("Megapixel", 2), ("tfds", 0), ("tfds", 2)]
  for r in rows:
    assert r["batches_per_s"] > 0 and r["main_cpu_ms_per_batch"] >= 0 and r["checksum"] > 0
  assert rows[0]["checksum"] == rows[1]["checksum"] and rows[2]["checksum"] == rows[3]["checksum"]


def test_sampler_benchmark_holds_each_size_to_a_copy_of_its_own_size(monkeypatch):
  """`--suite=sampler` at a tiny size: every pass gets a floor from a copy of an array the size of that
  size's images (a large copy runs out of a CPU's cache and would set the floor too high)."""
  copied = []
  measure = common.copy_bandwidth
  monkeypatch.setattr(common, "copy_bandwidth", lambda num_bytes, **kw: copied.append(num_bytes) or measure(
      num_bytes, repeats=1))
  rows = sampler_bench.run(warmup=0, repeats=1, sizes=(("B2 16² 4×8²", 2, 16, 8), ("B3 16² 4×8²", 3, 16, 8)))
  assert copied == [2 * 16 * 16 * 3 * 4, 3 * 16 * 16 * 3 * 4]
  assert [(r["size"], r["mode"]) for r in rows] == [(s, m) for s in ("B2 16² 4×8²", "B3 16² 4×8²")
                                                    for m in ("forward", "fwd+bwd")]
  for r in rows:
    assert r["floor_gb_s"] > 0 and r["ms"] > 0
    np.testing.assert_allclose(r["floor_ms"], r["bytes_mb"] * 1e6 / (r["floor_gb_s"] * 1e9) * 1e3, rtol=1e-9)
    np.testing.assert_allclose(r["x_floor"], r["ms"] / r["floor_ms"], rtol=1e-9)


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


def test_runtime_peak_is_reported_only_where_the_workload_set_it():
  """The allocator's peak covers the whole process: a workload that stays under an earlier one's peak
  gets None, not that earlier peak (the GPU suite's IPS rows follow ViT steps that use far more)."""
  class Device:
    def __init__(self, stats):
      self.stats = stats

    def memory_stats(self):
      return self.stats
  gpu = Device({"peak_bytes_in_use": 3 * 2 ** 30, "bytes_in_use": 2 ** 30})
  assert common.runtime_peak_gib(gpu) == 3.0
  assert common.runtime_peak_gib(gpu, since=2.0) == 3.0     # raised during the workload: its peak
  assert common.runtime_peak_gib(gpu, since=3.0) is None    # an earlier workload's peak
  assert common.runtime_peak_gib(Device(None)) is None and common.runtime_peak_gib(Device({}), since=1.0) is None
  assert common.runtime_peak_gib(jax.devices("cpu")[0]) is None


# The GPU suite's jobs in four commands (each 20-50 s on 2 cores with the other worker busy), together
# every job once: the sampler and the steps with a PyTorch peer; DPS-ViT's step, its separable variant
# and IPS; DPS-ViT's steps_per_call variant; APViT. (DPS-ViT's three steps in one command took up to 62 s,
# over the suite's 60 s a test, and so did the steps_per_call variant with APViT on an EPYC, 61 s.)
PEER_STEPS = ("vit_s16_224", "pit_t_32", "vit_t2_32", "std_vit_cifar10")
GPU_SUITE_PARTS = {"sampler and peer steps": ("sampler", *PEER_STEPS),
                   "dps_vit and ips steps": ("step dps_vit_cifar10", "patch_sampler=separable", "ips_megapixel_mnist"),
                   "dps_vit steps_per_call": ("steps_per_call=8",),
                   "apvit steps": ("apvit_cifar10",)}


def test_gpu_suite_parts_cover_every_job_once():
  names = [name for name, _ in peers_suite.jobs("gpu", tiny=True, warmup=0, repeats=1)]
  parts = [name for only in GPU_SUITE_PARTS.values()
           for name, _ in peers_suite.jobs("gpu", tiny=True, warmup=0, repeats=1, only=only)]
  assert sorted(parts) == sorted(names)   # every job, none twice
  with pytest.raises(ValueError, match="--only=vit_b16 matches no job of the gpu suite"):
    peers_suite.jobs("gpu", tiny=True, warmup=0, repeats=1, only=("sampler", "vit_b16"))
  pick = lambda *only: [name for name, _ in peers_suite.jobs("gpu", tiny=True, warmup=0, repeats=1, only=only)]
  assert pick("dps_vit_cifar10") == ["step dps_vit_cifar10", "step dps_vit_cifar10 patch_sampler=separable",
                                     "step dps_vit_cifar10 steps_per_call=8"]   # a word: every job named by it
  assert pick("step dps_vit_cifar10") == ["step dps_vit_cifar10"]   # a whole name: that job alone
  with pytest.raises(ValueError, match="--only=dps_vit_cifar10 steps matches no job"):   # neither
    pick("dps_vit_cifar10 steps")


@pytest.mark.slow
def test_only_is_refused_where_it_does_not_apply(tmp_path):
  for args, message in ((["--suite=steps", "--only=sampler"], "--only chooses jobs of the gpu and cpu suites"),
                        (["--suite=cpu", "--only=vit_b16", f"--out={tmp_path}"], "--only=vit_b16 matches no job")):
    proc = subprocess.run([sys.executable, "-m", "bench.run", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
  assert not any(tmp_path.iterdir())   # refused before any work: nothing written


@pytest.mark.slow
@pytest.mark.parametrize("part", GPU_SUITE_PARTS)
def test_gpu_suite_command_runs_end_to_end_on_cpu(tmp_path, part):
  """`python -m bench.run --suite=gpu --tiny --only=... --out=DIR` as a user types it: the rows of the
  GPU suite (sampler, peer steps, our adaptive and IPS steps) at tiny sizes, both result files written."""
  env = {**os.environ, "XLA_FLAGS": xla_flags(1), "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-m", "bench.run", "--suite=gpu", "--tiny", "--warmup=0", "--repeats=1",
                         f"--only={','.join(GPU_SUITE_PARTS[part])}", f"--out={tmp_path}"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((tmp_path / "results.json").read_text())
  names = [r["workload"] for r in result["rows"]]
  if part == "sampler and peer steps":
    assert names[:6] == ["sampler forward B2 16² 4×8²", "sampler fwd+bwd B2 16² 4×8²",
                         "sampler fwd+bwd to maps B2 16² 4×8²", "sampler separable forward B2 16² 4×8²",
                         "sampler separable fwd+bwd B2 16² 4×8²", "sampler separable fwd+bwd to maps B2 16² 4×8²"]
    assert all(("gather_ms" in r) == r["workload"].startswith("sampler separable") for r in result["rows"])
    assert all(r["floor_gb_s"] > 0 for r in result["rows"][:6])   # each pass's bandwidth floor, in GB/s
    assert [n.split()[1] for n in names[6:]] == list(PEER_STEPS)
  else:
    assert names == {"dps_vit and ips steps": ["step dps_vit_cifar10", "step dps_vit_cifar10 patch_sampler=separable",
                                               "step ips_megapixel_mnist memory=100 chunk=100"],
                     "dps_vit steps_per_call": ["step dps_vit_cifar10 steps_per_call=8"],
                     "apvit steps": ["step apvit_cifar10"]}[part]
  for row in result["rows"]:
    assert row["ours_ms"] > 0, row
    assert ("peer_ms" in row) == ("ours_vs_peer" in row)
    if "peer_ms" in row:
      np.testing.assert_allclose(row["ours_vs_peer"], row["peer_ms"] / row["ours_ms"])
    else:
      assert row["note"], row  # a missing peer is named, never silently absent
  assert "| workload |" in (tmp_path / "results.md").read_text()


def test_suite_keeps_what_it_measured_when_a_workload_fails_or_the_run_is_cut(tmp_path, monkeypatch):
  """The suite's files are rewritten after every job: a failing workload becomes a row with its error and
  the others still run; a run cut short (a device call's time limit) leaves its finished rows, marked
  incomplete; an existing result is never overwritten. Workloads are faked: this tests the bookkeeping."""
  steps = [name for name, *_ in peers_suite.PRESETS["gpu"]["steps"]]
  rows_on_disk = []
  def fake_time_workload(name, *, batch_size, warmup, repeats, extra):
    rows_on_disk.append(len(json.loads((out / "results.json").read_text())["rows"]))
    if name == "apvit_cifar10":
      raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")
    if name == cut_at:
      raise KeyboardInterrupt   # as a time limit's signal stops the process
    return {"step_ms": 2.0, "loop_step_ms": 3.0, "dtype": "float32", "mfu": None, "compile_s": 1.0,
            "xla_memory_gib": 0.1, "peak_gib": None, "flops_note": "XLA cost analysis"}
  monkeypatch.setattr(peers_suite, "sampler_rows",
                      lambda sizes, **_: [{"workload": f"sampler forward {sizes[0][0]}", "ours_ms": 1.0}])
  monkeypatch.setattr(step_bench, "time_workload", fake_time_workload)
  monkeypatch.setattr(torch_peers, "torch_or_reason", lambda: (None, "torch is not installed"))

  out, cut_at = tmp_path / "whole", None
  result = peers_suite.run("gpu", out, tiny=True, warmup=0, repeats=1)
  assert rows_on_disk == list(range(1, len(steps) + 1))   # the sampler row, then one more per step
  assert result["complete"] and json.loads((out / "results.json").read_text()) == result
  names = [r["workload"] for r in result["rows"]]
  assert names[0] == "sampler forward B2 16² 4×8²" and [n.split()[1] for n in names[1:]] == steps
  failed = [r for r in result["rows"] if "error" in r]
  assert [r["workload"] for r in failed] == ["step apvit_cifar10"]
  assert failed[0]["error"] == "RuntimeError: RESOURCE_EXHAUSTED: out of memory" and "ours_ms" not in failed[0]
  assert all(r["ours_ms"] == 2.0 for r in result["rows"][1:] if r not in failed)
  assert "step apvit_cifar10: FAILED RuntimeError" in (out / "results.md").read_text()
  before = (out / "results.json").read_bytes()
  with pytest.raises(FileExistsError, match="results.json exists"):
    peers_suite.run("gpu", out, tiny=True)
  assert (out / "results.json").read_bytes() == before

  out, cut_at, rows_on_disk[:] = tmp_path / "cut", steps[2], []
  with pytest.raises(KeyboardInterrupt):
    peers_suite.run("gpu", out, tiny=True, warmup=0, repeats=1)
  kept = json.loads((out / "results.json").read_text())
  assert not kept["complete"] and [r["workload"] for r in kept["rows"]] == names[:3]
  assert "incomplete" in (out / "results.md").read_text()


def test_peer_vit_has_our_shape():
  """The PyTorch peer of std_vit_cifar10 is built with the config's patch, width, depth and heads."""
  config = step_bench.workload_config("std_vit_cifar10", 8, 1, {})
  assert peers_suite.peer_shape(config) == dict(image=32, patch=8, width=288, depth=6, heads=4, classes=10,
                                                dropout=0.1)
  torch = pytest.importorskip("torch", reason="PyTorch not installed: the peer is built only where it is")
  model, _ = torch_peers.vit(torch, **peers_suite.peer_shape(config))
  ours = step_bench.run_lib.setup(config).state.params
  count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
  # Ours has one LayerNorm more per block (2·288·6 parameters) and per-patch nothing else: same size
  # within that difference.
  assert abs(count(ours) - sum(p.numel() for p in model.parameters())) <= 2 * 288 * 6
