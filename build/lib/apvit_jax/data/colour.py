"""Colour augmentation on device with torchvision's semantics (ColorJitter in a random order per image,
then RandomGrayscale), for one RGB image (H, W, 3) in [0, 1]; vmap it over a batch."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # torchvision's rgb_to_grayscale weights


def grayscale(x: jax.Array) -> jax.Array:
  """(..., 3) -> (..., 3) with every channel the luma."""
  return jnp.broadcast_to((x @ _LUMA)[..., None], x.shape)


def adjust_brightness(x, factor):
  return jnp.clip(x * factor, 0.0, 1.0)


def adjust_contrast(x, factor):
  mean = jnp.mean(x @ _LUMA)
  return jnp.clip(factor * x + (1.0 - factor) * mean, 0.0, 1.0)


def adjust_saturation(x, factor):
  return jnp.clip(factor * x + (1.0 - factor) * grayscale(x), 0.0, 1.0)


def rgb_to_hsv(x):
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  v = jnp.max(x, -1)
  delta = v - jnp.min(x, -1)
  s = delta / jnp.where(v > 0, v, 1.0)
  d = jnp.where(delta > 0, delta, 1.0)
  h = jnp.where(v == r, (g - b) / d, jnp.where(v == g, 2.0 + (b - r) / d, 4.0 + (r - g) / d))
  h = jnp.where(delta > 0, jnp.mod(h / 6.0, 1.0), 0.0)
  return jnp.stack([h, s, v], -1)


def hsv_to_rgb(x):
  h, s, v = x[..., 0], x[..., 1], x[..., 2]
  i = jnp.floor(h * 6.0)
  f = h * 6.0 - i
  p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
  i = i.astype(jnp.int32) % 6
  pick = lambda *c: jnp.select([i == k for k in range(6)], list(c))
  return jnp.stack([pick(v, q, p, p, t, v), pick(t, v, v, q, p, p), pick(p, p, t, v, v, q)], -1)


def adjust_hue(x, shift):
  """Rotates the hue by `shift` turns (in [-0.5, 0.5])."""
  hsv = rgb_to_hsv(x)
  return hsv_to_rgb(hsv.at[..., 0].set(jnp.mod(hsv[..., 0] + shift, 1.0)))


def random_colour(x: jax.Array, key: jax.Array, strength=(0.4, 0.4, 0.4, 0.1), jitter_prob: float = 0.8,
                  grayscale_prob: float = 0.2) -> jax.Array:
  """ColorJitter(brightness, contrast, saturation, hue = strength) with probability jitter_prob, the four
  adjustments in a random order, then grayscale with probability grayscale_prob. x (H, W, 3) in [0, 1]."""
  b, c, s, h = strength
  k_apply, k_order, k_b, k_c, k_s, k_h, k_gray = jax.random.split(key, 7)
  factor = lambda k, m: jax.random.uniform(k, minval=max(0.0, 1.0 - m), maxval=1.0 + m)
  fb, fc, fs = factor(k_b, b), factor(k_c, c), factor(k_s, s)
  fh = jax.random.uniform(k_h, minval=-h, maxval=h)
  ops = [lambda im: adjust_brightness(im, fb), lambda im: adjust_contrast(im, fc),
         lambda im: adjust_saturation(im, fs),
         (lambda im: adjust_hue(im, fh)) if h > 0 else (lambda im: im)]
  order = jax.random.permutation(k_order, 4)
  jittered = jax.lax.fori_loop(0, 4, lambda i, im: jax.lax.switch(order[i], ops, im), x)
  x = jnp.where(jax.random.bernoulli(k_apply, jitter_prob), jittered, x)
  return jnp.where(jax.random.bernoulli(k_gray, grayscale_prob), grayscale(x), x)
