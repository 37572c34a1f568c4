"""Calling flax modules in tests without eager compilation.

Called eagerly, a model runs primitive by primitive and XLA compiles each primitive for each shape it
meets (its initialisers' random samplers too): ~150 s of the suite's compile time on 2 cores went to such
eager calls (measured 2026-12-06 with jax_log_compiles). One jitted call compiles one program instead,
and a test that overwrites every initial value needs only the shapes."""
import functools

import jax

STATIC_ARGS = ("train", "deterministic", "method", "mutable")


def apply(module):
  """-> jax.jit(module.apply) with the flags flax modules take as Python values (train, deterministic,
  method, mutable) static; call it as module.apply."""
  return jax.jit(module.apply, static_argnames=STATIC_ARGS)


def init(module):
  """-> jax.jit(module.init), the same flags static: one program for every initialiser (for tests that
  use the initial values)."""
  return jax.jit(module.init, static_argnames=STATIC_ARGS)


def param_shapes(module, *inputs, **kwargs):
  """-> the shapes and dtypes (jax.ShapeDtypeStruct) of module.init(key, *inputs, **kwargs)["params"],
  nothing computed: for tests that draw every value themselves."""
  return jax.eval_shape(functools.partial(module.init, **kwargs), jax.random.key(0), *inputs)["params"]
