"""Sums the compilation log of a test run (APVIT_TEST_COMPILE_LOG=DIR, tests/compile_log/): where the
suite's time goes, by test file and by test.

    APVIT_TEST_COMPILE_LOG=/tmp/compile_log XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        python -m pytest -n 2
    python tests/compile_report.py /tmp/compile_log

Columns, in seconds: trace (Python tracing to a jaxpr), lower (jaxpr to StableHLO), compile (XLA,
programs the persistent cache did not have), eager (the part of compile spent on programs under 0.1 s:
mostly single primitives run eagerly), cached (programs loaded from the persistent cache, and how long that
took). Seconds are each event's wall time in its process: where a test runs several processes at once
on 2 cores (the distributed tests), their sum exceeds the core time they took."""
import collections
import json
import pathlib
import sys

EAGER_S = 0.1


def read(directory: pathlib.Path) -> list[list[dict]]:
  """-> one list of events per process, in the order it logged them."""
  processes = []
  for path in sorted(directory.glob("*.jsonl")):
    events = []
    for line in path.read_text().splitlines():
      try:
        events.append(json.loads(line))
      except json.JSONDecodeError:   # a process killed mid-line (the fault tests SIGKILL runs)
        pass
    processes.append(events)
  return processes


def totals(processes) -> dict[str, collections.Counter]:
  """-> {test id: Counter(trace, lower, compile, eager, compiles, cached, cached_s, processes)}."""
  by_test = collections.defaultdict(collections.Counter)
  for events in processes:
    hit, tests = False, set()
    for e in events:
      t = by_test[e["test"] or "(outside a test)"]
      tests.add(e["test"])
      if e["event"] == "cache_hits":
        hit = True
      elif e["event"] == "jaxpr_trace_duration":
        t["trace"] += e["s"]
      elif e["event"] == "jaxpr_to_mlir_module_duration":
        t["lower"] += e["s"]
      elif e["event"] == "backend_compile_duration":
        if hit:
          t["cached"] += 1
          t["cached_s"] += e["s"]
        else:
          t["compiles"] += 1
          t["compile"] += e["s"]
          t["eager"] += e["s"] if e["s"] < EAGER_S else 0.0
        hit = False
    for test in tests:
      by_test[test or "(outside a test)"]["processes"] += 1
  return by_test


def table(rows, title) -> str:
  keys = ("trace", "lower", "compile", "eager", "compiles", "cached", "cached_s", "processes")
  lines = [f"{title:70s}" + "".join(f"{k:>10s}" for k in keys)]
  for name, c in rows:
    lines.append(f"{name[:70]:70s}" + "".join(
        f"{c[k]:10d}" if k in ("compiles", "cached", "processes") else f"{c[k]:10.1f}" for k in keys))
  return "\n".join(lines)


def main(directory: str, top: int = 25) -> None:
  by_test = totals(read(pathlib.Path(directory)))
  by_file = collections.defaultdict(collections.Counter)
  for test, c in by_test.items():
    by_file[test.split("::")[0]].update(c)
  everything = sum(by_file.values(), collections.Counter())
  cost = lambda c: c["trace"] + c["lower"] + c["compile"] + c["cached_s"]
  print(table([("all", everything)], "whole run"))
  print()
  print(table(sorted(by_file.items(), key=lambda kv: -cost(kv[1])), "by test file"))
  print()
  print(table(sorted(by_test.items(), key=lambda kv: -cost(kv[1]))[:top], f"the {top} costliest tests"))


if __name__ == "__main__":
  main(*sys.argv[1:2])
