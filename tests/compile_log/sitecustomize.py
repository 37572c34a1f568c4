"""Where a test run's time goes: JAX's compilation events, one JSON line each, in every Python process.

Opt-in: with APVIT_TEST_COMPILE_LOG=DIR, tests/conftest.py installs this in the test processes and puts this
folder on PYTHONPATH, so that the processes the tests start (training, evaluation, benchmark commands)
import it as their `sitecustomize` and log too. Each line: the event (JAX's monitoring name: tracing,
lowering, XLA compilation, persistent-cache hits), seconds, the function's name, the test that ran it
(PYTEST_CURRENT_TEST, which started processes inherit) and the process. `python tests/compile_report.py
DIR` sums them. Every Python started with the log on imports jax at start-up, even one that does not use it
(pip in the packaging test): a diagnostic run, not a timing of the suite."""
import json
import os
import sys

EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
          "/jax/core/compile/backend_compile_duration", "/jax/compilation_cache/cache_hits")


def install(directory: str) -> None:
  """Registers JAX monitoring listeners that append this process's events to DIRECTORY/PID.jsonl."""
  import jax.monitoring   # noqa: PLC0415 (only where the log is wanted)
  path = os.path.join(directory, f"{os.getpid()}.jsonl")
  command = " ".join(sys.argv)[:200]

  def write(event, seconds, kwargs):
    if event in EVENTS:
      line = {"event": event.rsplit("/", 1)[-1], "s": seconds, "fun": str(kwargs.get("fun_name", "")),
              "test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0], "command": command}
      try:
        with open(path, "a") as f:
          f.write(json.dumps(line) + "\n")
      except OSError:   # a test that limits file sizes or fills a disk: that test's lines are lost
        pass

  jax.monitoring.register_event_duration_secs_listener(lambda event, seconds, **kw: write(event, seconds, kw))
  jax.monitoring.register_event_listener(lambda event, **kw: write(event, 0.0, kw))


if os.environ.get("APVIT_TEST_COMPILE_LOG") and __name__ == "sitecustomize":
  try:
    install(os.environ["APVIT_TEST_COMPILE_LOG"])
  except ImportError:   # a Python without jax (pip in a fresh venv): nothing to log
    pass
