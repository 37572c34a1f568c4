"""Batched on-device augmentation. Random crop with zero padding, horizontal flip and rotation are
composed into one affine map per image and applied with a single bilinear `grid_sample`: one read of
each image. Without rotation or a resized crop, the map is a whole-pixel shift and a flip: that case
copies pixels (`padded_crop_and_flip`), bit-exact as torchvision's pad-then-crop, with the same draws as
the map. (Through the sampler its sample points lie exactly on pixels, where a compiler that rounds one
coordinate two ways reads a whole pixel off: jax 0.10's XLA did so in the compiled train step.)
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp

from apvit_jax import sampler
from apvit_jax.data import colour


def example_keys(key: jax.Array, positions: jax.Array) -> jax.Array:
  """One key per example from its position in the global batch: results do not depend on how the
  batch is split over devices or hosts."""
  return jax.vmap(lambda p: jax.random.fold_in(key, p))(positions)


def resized_crop_box(key: jax.Array, height: int, width: int, scale, ratio, attempts: int = 10):
  """torchvision RandomResizedCrop's box: area fraction ~ U(scale), log aspect ~ U(log ratio); the first
  of `attempts` draws that fits, else the whole image with the aspect clamped to `ratio` (centred).
  -> (crop height, crop width, top, left) in pixels, float32."""
  k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
  area = height * width * jax.random.uniform(k_area, (attempts,), minval=scale[0], maxval=scale[1])
  aspect = jnp.exp(jax.random.uniform(k_ratio, (attempts,), minval=jnp.log(ratio[0]),
                                      maxval=jnp.log(ratio[1])))
  cw = jnp.round(jnp.sqrt(area * aspect))
  ch = jnp.round(jnp.sqrt(area / aspect))
  fits = (cw > 0) & (cw <= width) & (ch > 0) & (ch <= height)
  first = jnp.argmax(fits)
  in_ratio = jnp.clip(width / height, ratio[0], ratio[1])
  fb_w = jnp.where(width / height > ratio[1], jnp.round(height * in_ratio), width)
  fb_h = jnp.where(width / height < ratio[0], jnp.round(width / in_ratio), height)
  ok = fits.any()
  cw, ch = jnp.where(ok, cw[first], fb_w), jnp.where(ok, ch[first], fb_h)
  top = jnp.where(ok, jnp.floor(jax.random.uniform(k_top) * (height - ch + 1)), jnp.round((height - ch) / 2))
  left = jnp.where(ok, jnp.floor(jax.random.uniform(k_left) * (width - cw + 1)), jnp.round((width - cw) / 2))
  return ch, cw, top, left


def _split(key: jax.Array):
  """-> (crop key, flip key, rotation key) of one example's augmentation."""
  return jax.random.split(key, 3)


def _crop_shift(k_crop: jax.Array, crop_padding: int) -> jax.Array:
  """-> int32 (2,): the padded crop's (x, y) shift in whole pixels, each in [-crop_padding, crop_padding]."""
  return jax.random.randint(k_crop, (2,), -crop_padding, crop_padding + 1)


def _flipped(k_flip: jax.Array, flip: bool) -> jax.Array:
  """-> bool (): whether this example is flipped left-right (never when flip is off)."""
  return jnp.asarray(flip) & jax.random.bernoulli(k_flip)


def random_affine(key: jax.Array, height: int, width: int, crop_padding: int, flip: bool,
                  rotate_degrees: float, crop_scale=(0.0, 0.0), crop_ratio=(3 / 4, 4 / 3)) -> jax.Array:
  """One augmentation map (2, 3) in normalised coordinates (output pixel -> input pixel): a random
  resized crop (when crop_scale[1] > 0) or a padded random crop, then flip and rotation."""
  k_crop, k_flip, k_rot = _split(key)
  if crop_scale[1] > 0:
    ch, cw, top, left = resized_crop_box(k_crop, height, width, crop_scale, crop_ratio)
    size = jnp.stack([cw / width, ch / height])
    t = jnp.stack([(2 * left + cw) / width - 1, (2 * top + ch) / height - 1])  # crop centre
  else:
    shift = _crop_shift(k_crop, crop_padding).astype(jnp.float32)
    size = jnp.ones((2,), jnp.float32)
    t = jnp.stack([2.0 * shift[0] / width, 2.0 * shift[1] / height])
  sign = jnp.where(_flipped(k_flip, flip), -1.0, 1.0)
  angle = jnp.deg2rad(jax.random.uniform(k_rot, (), minval=-rotate_degrees, maxval=rotate_degrees))
  c, s = jnp.cos(angle), jnp.sin(angle)
  # Rotation in pixel space written in normalised coordinates (they scale x and y by 2/W and 2/H).
  a = jnp.array([[c * sign, -s * height / width], [s * width / height * sign, c]]) * size[:, None]
  return jnp.concatenate([a, t[:, None]], axis=1)


def padded_crop_and_flip(images: jax.Array, keys: jax.Array, crop_padding: int, flip: bool) -> jax.Array:
  """The whole-pixel case of `random_affine` (no rotation, no resized crop) by copying pixels, with the
  same draws: images (B, H, W, C), keys (B,) -> (B, H, W, C), output (i, j) = input (i + s_y, f(j) + s_x)
  with f(j) = W - 1 - j where flipped, zeros outside the image."""
  _, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (crop_padding, crop_padding), (crop_padding, crop_padding), (0, 0)))

  def one(image, key):
    k_crop, k_flip, _ = _split(key)
    sx, sy = _crop_shift(k_crop, crop_padding) + crop_padding
    crop = jax.lax.dynamic_slice(image, (sy, sx, 0), (h, w, c))
    return jnp.where(_flipped(k_flip, flip), crop[:, ::-1], crop)
  return jax.vmap(one)(padded, keys)


# The first jax measured to compile the train step's sampler right on whole pixels (tests/test_compiled_sampling.py
# passed on 0.11.2, 0.12.0.1 and 0.12.1 and failed on 0.10.2; versions in between were not measured).
FIRST_RIGHT_JAX = (0, 11, 2)


def floor_stack_warning(aug_cfg, jax_version: str = jax.__version__) -> str | None:
  """A warning for config.augment where the installed jax is known (or not known not) to compile it wrong,
  else None. On jax 0.10.2 the train step's bilinear sampler reads whole pixels off where sample points
  land exactly on pixels: random resized crops near the full image (measured: max error 1.7 in normalised
  units; tests/test_compiled_sampling.py; the cause: that XLA:CPU drops `sampler.pixel_coordinates`'
  optimisation barrier before fusion). Rotated crops (10 degrees: right to 7e-6) and the pixel-copy crops
  and flips are right there. Warns below FIRST_RIGHT_JAX."""
  if version_tuple(jax_version) >= FIRST_RIGHT_JAX or not aug_cfg.crop_scale[1] > 0:
    return None
  right = ".".join(map(str, FIRST_RIGHT_JAX))
  return (f"warning: jax {jax_version} compiles random resized crops (augment.crop_scale) with reads a "
          f"whole pixel off where the box is the whole image; jax >= {right} (Python >= 3.12) is right")


def version_tuple(text: str) -> tuple[int, ...]:
  """"0.12.0.1" -> (0, 12, 0); "0.11.2" -> (0, 11, 2)."""
  return tuple(int(re.match(r"\d+", part).group()) for part in text.split(".")[:3])


def normalise(images: jax.Array, mean, std) -> jax.Array:
  """uint8-range (B, H, W, C) -> float32 ((x / 255) - mean) / std."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images.astype(jnp.float32) / 255.0 - mean) / std


def augment(images: jax.Array, keys: jax.Array, *, crop_padding: int = 0, flip: bool = False,
            rotate_degrees: float = 0.0, crop_scale=(0.0, 0.0), crop_ratio=(3 / 4, 4 / 3),
            color_jitter=(0.0, 0.0, 0.0, 0.0), color_jitter_prob: float = 0.0,
            grayscale_prob: float = 0.0) -> jax.Array:
  """images (B, H, W, C) uint8, keys (B,) -> (B, H, W, C) float32 in [0, 255]: one read of each image for
  all geometric changes (a pixel copy for whole-pixel crops and flips, else one bilinear resampling), then
  colour jitter and grayscale (RGB only)."""
  b, h, w, c = images.shape
  whole_pixels = not rotate_degrees and not crop_scale[1] > 0
  if whole_pixels and (crop_padding or flip):
    images = padded_crop_and_flip(images, keys, crop_padding, flip)   # copies pixels, before the cast
  x = images.astype(jnp.float32)
  if not whole_pixels:
    theta = jax.vmap(lambda k: random_affine(k, h, w, crop_padding, flip, rotate_degrees, crop_scale,
                                             crop_ratio))(keys)
    # A padded crop reads zeros outside the image; a resized crop clamps to the edge, as resizing does.
    padding = "border" if crop_scale[1] > 0 else "zeros"
    x = sampler.grid_sample(x, sampler.affine_grid(theta, (h, w)), padding_mode=padding)
  if (color_jitter_prob > 0 and any(color_jitter)) or grayscale_prob > 0:
    if c != 3:
      raise ValueError(f"colour jitter and grayscale need RGB images, got {c} channels")
    colour_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)  # independent of the geometry
    x = 255.0 * jax.vmap(lambda im, k: colour.random_colour(im, k, color_jitter, color_jitter_prob,
                                                            grayscale_prob))(x / 255.0, colour_keys)
  return x


def preprocess(images: jax.Array, keys: jax.Array | None, aug_cfg, *, train: bool) -> jax.Array:
  """Augmentation (train only) then normalisation, as configured by config.augment."""
  if train:
    images = augment(images, keys, crop_padding=aug_cfg.crop_padding, flip=aug_cfg.flip,
                     rotate_degrees=aug_cfg.rotate_degrees, crop_scale=tuple(aug_cfg.crop_scale),
                     crop_ratio=tuple(aug_cfg.crop_ratio), color_jitter=tuple(aug_cfg.color_jitter),
                     color_jitter_prob=aug_cfg.color_jitter_prob, grayscale_prob=aug_cfg.grayscale_prob)
  return normalise(images, aug_cfg.mean, aug_cfg.std)
