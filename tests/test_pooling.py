"""The dense max-pool (apvit_jax/models/pooling.py) against a float64 NumPy loop and flax's nn.max_pool:
values, and gradients that reach the first maximum of each window, ties included."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from apvit_jax.models.pooling import max_pool

RNG = np.random.default_rng()

# (batch, height, width, channels, window, stride, padding): the ResNet stem's 3x3/2 pad 1 on even and odd
# sizes, a block pool, a window wider than its stride without padding.
CASES = [(2, 13, 13, 3, 3, 2, 1), (3, 12, 9, 2, 3, 2, 1), (2, 8, 10, 4, 2, 2, 0), (1, 11, 7, 2, 3, 1, 0),
         (2, 9, 9, 1, 4, 3, 2)]


def numpy_max_pool(x, cotangent, window, stride, padding):
  """float64 loops: -> (pooled, gradient), the cotangent of each window added at its first maximum in
  row-major order (padding never wins)."""
  b, h, w, c = x.shape
  padded = np.full((b, h + 2 * padding, w + 2 * padding, c), -np.inf)
  padded[:, padding:padding + h, padding:padding + w] = x
  ho, wo = (padded.shape[1] - window) // stride + 1, (padded.shape[2] - window) // stride + 1
  out = np.zeros((b, ho, wo, c))
  grad = np.zeros_like(padded)
  for n in range(b):
    for k in range(c):
      for i in range(ho):
        for j in range(wo):
          patch = padded[n, i * stride:i * stride + window, j * stride:j * stride + window, k]
          r, s = np.unravel_index(np.argmax(patch), patch.shape)   # argmax: the first maximum
          out[n, i, j, k] = patch[r, s]
          grad[n, i * stride + r, j * stride + s, k] += cotangent[n, i, j, k]
  return out, grad[:, padding:padding + h, padding:padding + w]


def with_ties(shape):
  """Values on a coarse grid, a quarter of them zero as after a ReLU: many windows hold equal maxima."""
  return np.maximum(np.round(RNG.standard_normal(shape) * 2) / 2, 0.0).astype(np.float32)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[4]}x{c[4]}/{c[5]} pad {c[6]} on {c[1]}x{c[2]}" for c in CASES])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_values_and_gradients_match_numpy_and_flax(case, ties):
  b, h, w, c, window, stride, padding = case
  x = with_ties((b, h, w, c)) if ties else RNG.standard_normal((b, h, w, c)).astype(np.float32)
  pool = lambda x: max_pool(x, window, stride, padding)
  flax_pool = lambda x: nn.max_pool(x, (window, window), (stride, stride), ((padding, padding), (padding, padding)))
  out, vjp = jax.vjp(pool, jnp.asarray(x))
  cotangent = RNG.standard_normal(out.shape).astype(np.float32)
  want_out, want_grad = numpy_max_pool(x.astype(np.float64), cotangent.astype(np.float64), window, stride, padding)
  np.testing.assert_array_equal(out, want_out.astype(np.float32))   # a maximum is one of the inputs: exact
  np.testing.assert_array_equal(out, flax_pool(jnp.asarray(x)))
  # Overlapping windows add several cotangents at one pixel: float32 sums, in another order than NumPy's.
  np.testing.assert_allclose(vjp(jnp.asarray(cotangent))[0], want_grad, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(vjp(jnp.asarray(cotangent))[0], jax.vjp(flax_pool, jnp.asarray(x))[1](cotangent)[0],
                             rtol=1e-6, atol=1e-6)


def test_gradient_passes_numerical_checks_away_from_ties():
  """float64: values 0.1 apart, so steps of 1e-6 never change which input is a window's maximum."""
  with jax.enable_x64(True):
    x = jnp.asarray(RNG.permutation(2 * 9 * 9 * 2).reshape(2, 9, 9, 2) / 10)
    check_grads(lambda x: max_pool(x, 3, 2, 1), (x,), order=1, modes=("rev",), eps=1e-6, atol=1e-7, rtol=1e-7)


def test_jit_and_bfloat16():
  x = RNG.standard_normal((2, 14, 14, 3)).astype(np.float32)
  got = jax.jit(max_pool, static_argnums=(1, 2, 3))(jnp.asarray(x, jnp.bfloat16), 3, 2, 1)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_array_equal(got, nn.max_pool(jnp.asarray(x, jnp.bfloat16), (3, 3), (2, 2), ((1, 1), (1, 1))))


def test_a_window_larger_than_the_padded_input_is_refused():
  with pytest.raises(ValueError, match=r"a 5x5 window does not fit the \(3, 3\) input padded by 0"):
    max_pool(jnp.ones((1, 3, 3, 1)), 5, 1, 0)
