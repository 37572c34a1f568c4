"""Shared test setup: 8 fake CPU devices unless the caller chose otherwise, and the shared data path."""
import atexit
import os
import pathlib
import shutil
import tempfile
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# Tests compile far more than they run (a few steps per program): XLA:CPU's backend optimisation level 0
# compiles ~1.5x faster (tests/test_adaptive.py, test_ips.py and test_vit.py: 216 s -> 140 s on 2 cores,
# the same results). It changes how fast the compiled code runs and, rarely, its rounding: it once hid a
# defect of the compiled step (tests/test_compiled_sampling.py checks that at the default level). The
# processes the tests start inherit it (tests/subprocess_env.py). APVIT_TEST_XLA_OPT=default tests at XLA's default level instead.
if (os.environ.get("APVIT_TEST_XLA_OPT") != "default"
    and "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]):
  os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One compilation cache for the session and the subprocesses it starts: the same small train steps are
# compiled by many tests (and by every restarted training subprocess).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="apvit_jax_test_cache_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
# What the cache keeps: the processes the tests start (training, evaluation and benchmark commands) keep
# every program: most run the same few small programs again (a restarted run; the fault tests' 24 starts of
# one command), and loading one is faster than compiling it even at level 0 (a smoke run 3.06 -> 2.70 s;
# tests/test_faults.py 98 and 93 -> 90 and 81 s of CPU). The test processes keep programs over 0.5 s
# (_TEST_PROCESS_MIN_COMPILE_S, set after jax's import below): their many eager primitives are rarely shared
# between the two workers, and reading those from the cache costs what compiling them does
# (docs/test_time.md). A value in the environment wins for both.
_MIN_COMPILE_S_CHOSEN = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" in os.environ
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
_TEST_PROCESS_MIN_COMPILE_S = 0.5

# APVIT_TEST_COMPILE_LOG=DIR: every process logs its JAX compilations to DIR (tests/compile_log/: the test
# processes here, the processes they start through PYTHONPATH); `python tests/compile_report.py DIR` sums them.
if os.environ.get("APVIT_TEST_COMPILE_LOG"):
  _COMPILE_LOG = pathlib.Path(__file__).resolve().parent / "compile_log"
  os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_COMPILE_LOG), os.environ.get("PYTHONPATH")]))
  pathlib.Path(os.environ["APVIT_TEST_COMPILE_LOG"]).mkdir(parents=True, exist_ok=True)
  import importlib.util  # noqa: E402
  import sys  # noqa: E402
  _site = sys.modules.get("sitecustomize")
  if getattr(_site, "__file__", None) != str(_COMPILE_LOG / "sitecustomize.py"):   # else installed at start-up
    _spec = importlib.util.spec_from_file_location("compile_log", _COMPILE_LOG / "sitecustomize.py")
    _compile_log = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_compile_log)
    _compile_log.install(os.environ["APVIT_TEST_COMPILE_LOG"])

_SESSION_START = time.time()

import jax  # noqa: E402
import pytest  # noqa: E402

# Comparisons against float64 references need true float32 matmuls; GPUs default to TF32 (~1e-3).
jax.config.update("jax_default_matmul_precision", "highest")
if not _MIN_COMPILE_S_CHOSEN:
  jax.config.update("jax_persistent_cache_min_compile_time_secs", _TEST_PROCESS_MIN_COMPILE_S)

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
  """Path to ../shared/data; skips the test where a fresh clone has none."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real data folder {SHARED_DATA} is absent (only developers and CI have it)")
  return SHARED_DATA


def pytest_sessionfinish(session):
  """Removes the empty temporary folders (tmp*tfds) tfds leaves behind: each builder of a dataset not
  prepared on disk (every test under tfds.testing.mock_data, and the processes such tests start) makes
  one to copy metadata from its GCS bucket into and returns without removing it
  (DatasetInfo.initialize_from_bucket), ~50 a run. Only empty ones made since this session started."""
  for folder in pathlib.Path(tempfile.gettempdir()).glob("tmp*tfds"):
    try:
      if folder.stat().st_mtime >= _SESSION_START:
        folder.rmdir()   # fails, and is kept, unless empty
    except OSError:
      pass
