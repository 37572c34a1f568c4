"""XLA flags for the processes the tests start: this session's flags (conftest.py: the compile-time
optimisation level) with the number of fake CPU devices a test asks for."""
import os

DEVICE_COUNT = "--xla_force_host_platform_device_count"
OPT_LEVEL = "--xla_backend_optimization_level"


def xla_flags(devices: int, *, default_level: bool = False) -> str:
  """-> XLA_FLAGS for a child process: `devices` fake CPU devices, the session's other flags, without its
  optimisation level where default_level (a test of what users' compiled programs do)."""
  keep = [f for f in os.environ.get("XLA_FLAGS", "").split()
          if not f.startswith(DEVICE_COUNT) and not (default_level and f.startswith(OPT_LEVEL))]
  return " ".join([f"{DEVICE_COUNT}={devices}", *keep])
