"""Max-pooling whose gradient is dense: no select-and-scatter, no index arrays.

XLA (CPU and GPU alike) rewrites the gradient of a max-pool (`lax.reduce_window` max, flax `nn.max_pool`)
into a reduce-window over (value, index) pairs and a scatter, with int32 index arrays of the padded input's
size: for IPS's ResNet stem over 1,600 patches of 50² (25² x 64 maps) that is several 285 MiB buffers in the
train step. Used there and by the localisation networks' 2x2 pools. Here a k x k window with stride s is the
maximum of its k² strided slices, and the gradient goes back through the same slices: for each window offset
in row-major order, the outputs whose maximum sits there and was not already claimed by an earlier offset,
padded back into place (an interior pad, a dense copy). So the cotangent reaches the first maximum of each
window, as XLA's select-and-scatter sends it: values are flax's `nn.max_pool` (the same reduce-window) and
gradients equal flax's up to the order of additions where windows overlap (tests/test_pooling.py, ties
included).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _strided_windows(padded, window: int, stride: int, out_hw: tuple[int, int]):
  """(B, Hp, Wp, C) -> [((i, j), (B, Ho, Wo, C))]: the input under offset (i, j) of every window."""
  b, _, _, c = padded.shape
  ho, wo = out_hw
  return [((i, j), jax.lax.slice(padded, (0, i, j, 0), (b, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c),
                                 (1, stride, stride, 1)))
          for i in range(window) for j in range(window)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x, window: int, stride: int, padding: int = 0):
  """Max over window x window patches every `stride` pixels, the input padded by `padding` pixels that
  never win (-inf): x (B, H, W, C) float -> (B, (H + 2 padding - window) // stride + 1, ..., C), as
  `nn.max_pool(x, (window, window), (stride, stride), ((padding, padding), (padding, padding)))`. The
  forward is that same reduce-window (no padded copy: a selection pass that never differentiates pays
  nothing); only the gradient differs."""
  if min(x.shape[1:3]) + 2 * padding < window:
    raise ValueError(f"max_pool: a {window}x{window} window does not fit the {x.shape[1:3]} input padded by "
                     f"{padding}")
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1),
                               ((0, 0), (padding, padding), (padding, padding), (0, 0)))


def _forward(x, window, stride, padding):
  out = max_pool(x, window, stride, padding)
  return out, (x, out)


def _backward(window, stride, padding, residuals, cotangent):
  x, out = residuals
  padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), constant_values=-jnp.inf)
  out_hw = out.shape[1:3]
  claimed = jnp.zeros(out.shape, bool)
  grad = jnp.zeros(padded.shape, cotangent.dtype)
  zero = jnp.zeros((), cotangent.dtype)
  span = [stride * (n - 1) + 1 for n in out_hw]
  for (i, j), values in _strided_windows(padded, window, stride, out_hw):
    first = (values == out) & ~claimed
    claimed = claimed | first
    grad = grad + jax.lax.pad(jnp.where(first, cotangent, zero), zero,
                              ((0, 0, 0), (i, padded.shape[1] - i - span[0], stride - 1),
                               (j, padded.shape[2] - j - span[1], stride - 1), (0, 0, 0)))
  return (grad[:, padding:padded.shape[1] - padding, padding:padded.shape[2] - padding],)


max_pool.defvjp(_forward, _backward)
