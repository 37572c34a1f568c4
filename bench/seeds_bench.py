"""Several seeds in one program (config.num_seeds = K): the train step of one workload for K = 1, 2, 4,
8 replicas, built as train.py builds it (bench/step_bench.py times each). A replica trains a full batch,
so images/s per replica at K seeds against images/s at one seed says what a seed costs when it shares
the step: 1.0 would mean K seeds for the price of one, 1/K the price of K separate runs.
"""
from __future__ import annotations

from bench import common, step_bench


def run(*, workload: str, num_seeds, batch_size: int, warmup: int, repeats: int, extra: dict) -> list[dict]:
  rows = []
  for k in num_seeds:
    print(f"... {workload} num_seeds={k}", flush=True)
    row = step_bench.time_workload(workload, batch_size=batch_size, warmup=warmup, repeats=repeats,
                                   extra={**extra, "num_seeds": k})
    rows.append(row)
  one = next((r for r in rows if r["replicas"] == 1), None)
  for row in rows:
    if one:
      # K separate one-seed runs take K x one step; the shared step takes step_ms.
      row["vs_separate_runs"] = row["replicas"] * one["step_ms"] / row["step_ms"]
  print(common.table(rows, [
      ("workload", "workload", ""), ("replicas", "seeds K", "d"), ("batch", "batch per replica", "d"),
      ("dtype", "dtype", ""), ("compile_s", "compile s", ".1f"), ("step_ms", "step ms", ".1f"),
      ("images_per_s", "img/s per replica", ",.1f"), ("all_replicas_images_per_s", "img/s all replicas", ",.1f"),
      ("vs_separate_runs", "speed vs K separate runs", ".2f"), ("xla_memory_gib", "XLA memory GiB", ".2f"),
      ("peak_gib", "runtime peak GiB", ".2f")]))
  return rows
