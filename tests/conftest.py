"""Shared test setup: 8 fake CPU devices unless the caller chose otherwise, and the shared data path."""
import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

# Comparisons against float64 references need true float32 matmuls; GPUs default to TF32 (~1e-3).
jax.config.update("jax_default_matmul_precision", "highest")

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
  """Path to ../shared/data; skips the test where a fresh clone has none."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real data folder {SHARED_DATA} is absent (only developers and CI have it)")
  return SHARED_DATA
