"""The suite's compilation log (tests/compile_log/) and its report (tests/compile_report.py)."""
import json
import os
import subprocess
import sys

import compile_report
from test_training import ROOT


def test_a_started_process_logs_its_compilations_under_the_test_that_started_it(tmp_path):
  env = {**os.environ, "APVIT_TEST_COMPILE_LOG": str(tmp_path), "PYTEST_CURRENT_TEST": "tests/x.py::y (call)",
         "PYTHONPATH": str(ROOT / "tests" / "compile_log"), "JAX_PLATFORMS": "cpu"}
  code = "import jax, jax.numpy as jnp; jax.jit(lambda x: jnp.sin(x) * 3)(jnp.ones(5)).block_until_ready()"
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  (log,) = tmp_path.glob("*.jsonl")
  events = [json.loads(line) for line in log.read_text().splitlines()]
  compiled = [e for e in events if e["event"] == "backend_compile_duration" and e["fun"] == "jit(<lambda>)"]
  assert len(compiled) == 1 and compiled[0]["s"] > 0 and compiled[0]["test"] == "tests/x.py::y"
  assert {e["event"] for e in events} >= {"jaxpr_trace_duration", "jaxpr_to_mlir_module_duration"}


def test_report_counts_cache_hits_apart_from_compilations(tmp_path):
  event = lambda name, s=0.0, test="tests/a.py::t": {"event": name, "s": s, "fun": "f", "test": test, "command": ""}
  lines = [event("jaxpr_trace_duration", 0.5), event("jaxpr_to_mlir_module_duration", 0.25),
           event("backend_compile_duration", 2.0), event("backend_compile_duration", 0.05),
           event("cache_hits"), event("backend_compile_duration", 0.3),
           event("backend_compile_duration", 1.0, test="tests/b.py::u")]
  (tmp_path / "1.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines) + '{"event": "backend_co')
  by_test = compile_report.totals(compile_report.read(tmp_path))
  a, b = by_test["tests/a.py::t"], by_test["tests/b.py::u"]
  assert (a["trace"], a["lower"], a["compile"], a["eager"], a["compiles"]) == (0.5, 0.25, 2.05, 0.05, 2)
  assert (a["cached"], a["cached_s"], a["processes"]) == (1, 0.3, 1)
  assert (b["compile"], b["compiles"], b["cached"]) == (1.0, 1, 0)
