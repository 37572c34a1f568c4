"""Batched on-device augmentation. Random crop with zero padding, horizontal flip and rotation are
composed into one affine map per image and applied with a single bilinear `grid_sample`: one read of
each image. Integer crop offsets without rotation land on pixel centres, so crop + flip alone copies
pixels as torchvision's pad-then-crop does: bit-exact for power-of-two sizes (the normalised offsets are
then exact in float32), otherwise within float32 rounding (~1e-5 of the pixel value).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from apvit_jax import sampler


def example_keys(key: jax.Array, positions: jax.Array) -> jax.Array:
  """One key per example from its position in the global batch: results do not depend on how the
  batch is split over devices or hosts."""
  return jax.vmap(lambda p: jax.random.fold_in(key, p))(positions)


def random_affine(key: jax.Array, height: int, width: int, crop_padding: int, flip: bool,
                  rotate_degrees: float) -> jax.Array:
  """One augmentation map (2, 3) in normalised coordinates (output pixel -> input pixel)."""
  k_crop, k_flip, k_rot = jax.random.split(key, 3)
  shift = jax.random.randint(k_crop, (2,), -crop_padding, crop_padding + 1).astype(jnp.float32)
  t = jnp.stack([2.0 * shift[0] / width, 2.0 * shift[1] / height])
  sign = jnp.where(flip & jax.random.bernoulli(k_flip), -1.0, 1.0)
  angle = jnp.deg2rad(jax.random.uniform(k_rot, (), minval=-rotate_degrees, maxval=rotate_degrees))
  c, s = jnp.cos(angle), jnp.sin(angle)
  # Rotation in pixel space written in normalised coordinates (they scale x and y by 2/W and 2/H).
  a = jnp.array([[c * sign, -s * height / width], [s * width / height * sign, c]])
  return jnp.concatenate([a, t[:, None]], axis=1)


def normalise(images: jax.Array, mean, std) -> jax.Array:
  """uint8-range (B, H, W, C) -> float32 ((x / 255) - mean) / std."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images.astype(jnp.float32) / 255.0 - mean) / std


def augment(images: jax.Array, keys: jax.Array, *, crop_padding: int = 0, flip: bool = False,
            rotate_degrees: float = 0.0) -> jax.Array:
  """images (B, H, W, C) uint8, keys (B,) -> (B, H, W, C) float32 in [0, 255]."""
  b, h, w, _ = images.shape
  x = images.astype(jnp.float32)
  if not (crop_padding or flip or rotate_degrees):
    return x
  theta = jax.vmap(lambda k: random_affine(k, h, w, crop_padding, flip, rotate_degrees))(keys)
  grid = sampler.affine_grid(theta, (h, w))
  return sampler.grid_sample(x, grid, padding_mode="zeros")


def preprocess(images: jax.Array, keys: jax.Array | None, aug_cfg, *, train: bool) -> jax.Array:
  """Augmentation (train only) then normalisation, as configured by config.augment."""
  if train:
    images = augment(images, keys, crop_padding=aug_cfg.crop_padding, flip=aug_cfg.flip,
                     rotate_degrees=aug_cfg.rotate_degrees)
  return normalise(images, aug_cfg.mean, aug_cfg.std)
