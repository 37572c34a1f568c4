"""MoCo-v3 augmentation on device: colour operations against float64 NumPy (colorsys for hue), the
random resized crop box and its resampling, and the probabilities of jitter and grayscale."""
import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpy_sampler as ref
from apvit_jax.data import augment, colour

LUMA = np.array([0.299, 0.587, 0.114])


@pytest.fixture
def image():
  return np.random.default_rng().uniform(size=(5, 6, 3))


def check(got, want):
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=2e-6)


def test_brightness_contrast_saturation(image):
  x = jnp.asarray(image, jnp.float32)
  check(colour.adjust_brightness(x, 1.3), np.clip(image * 1.3, 0, 1))
  m = (image @ LUMA).mean()
  check(colour.adjust_contrast(x, 0.6), np.clip(0.6 * image + 0.4 * m, 0, 1))
  g = (image @ LUMA)[..., None]
  check(colour.adjust_saturation(x, 1.7), np.clip(1.7 * image - 0.7 * g, 0, 1))
  check(colour.grayscale(x), np.broadcast_to(g, image.shape))


@pytest.mark.parametrize("shift", [0.23, -0.4, 0.05])
def test_hue_matches_colorsys(image, shift):
  want = np.zeros_like(image)
  for idx in np.ndindex(*image.shape[:2]):
    h, s, v = colorsys.rgb_to_hsv(*image[idx])
    want[idx] = colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)
  check(colour.adjust_hue(jnp.asarray(image, jnp.float32), shift), want)
  check(colour.hsv_to_rgb(colour.rgb_to_hsv(jnp.asarray(image, jnp.float32))), image)


def test_jitter_and_grayscale_probabilities(image):
  x = jnp.asarray(image, jnp.float32)
  keys = jax.random.split(jax.random.key(0), 600)
  run = lambda strength, pj, pg: np.asarray(jax.vmap(lambda k: colour.random_colour(x, k, strength, pj, pg))(keys))
  np.testing.assert_array_equal(run((0.4, 0.4, 0.4, 0.1), 0.0, 0.0), np.broadcast_to(image.astype(np.float32),
                                                                                     (600, *image.shape)))
  changed = np.abs(run((0.4, 0.4, 0.4, 0.1), 0.8, 0.0) - image).max(axis=(1, 2, 3)) > 1e-4
  assert 0.74 < changed.mean() < 0.86  # binomial(600, 0.8): sd 0.016
  grey = run((0.0, 0.0, 0.0, 0.0), 0.0, 0.2)
  is_grey = np.abs(grey - grey[..., :1]).max(axis=(1, 2, 3)) < 1e-6
  assert 0.14 < is_grey.mean() < 0.26
  np.testing.assert_allclose(grey[is_grey][0], np.broadcast_to((image @ LUMA)[..., None], image.shape), atol=1e-6)


def test_resized_crop_boxes_follow_torchvision():
  keys = jax.random.split(jax.random.key(1), 2000)
  ch, cw, top, left = (np.asarray(a) for a in jax.vmap(
      lambda k: augment.resized_crop_box(k, 32, 40, (0.2, 1.0), (3 / 4, 4 / 3)))(keys))
  assert (top >= 0).all() and (left >= 0).all() and (top + ch <= 32).all() and (left + cw <= 40).all()
  area = ch * cw / (32 * 40)
  assert area.min() > 0.18 and area.max() <= 1.0 and area.std() > 0.15
  aspect = cw / ch
  assert aspect.min() > 0.68 and aspect.max() < 1.47  # 3/4 .. 4/3, widened by rounding to whole pixels
  assert len(np.unique(top)) > 10 and len(np.unique(left)) > 10


@pytest.mark.slow
def test_resized_crop_resamples_the_box():
  """Output pixel (i, j) reads the crop box at ((j + 0.5) cw / W - 0.5 + left, ...), edge-clamped."""
  rng = np.random.default_rng(2)
  images = rng.uniform(0, 255, (3, 16, 20, 3))
  keys = jax.random.split(jax.random.key(3), 3)
  got = augment.augment(jnp.asarray(images, jnp.uint8), keys, crop_scale=(0.2, 1.0))
  ch, cw, top, left = (np.asarray(a, np.float64) for a in jax.vmap(
      lambda k: augment.resized_crop_box(jax.random.split(k, 3)[0], 16, 20, (0.2, 1.0), (3 / 4, 4 / 3)))(keys))
  i, j = np.meshgrid(np.arange(16), np.arange(20), indexing="ij")
  y = top[:, None, None] + (i + 0.5) * ch[:, None, None] / 16 - 0.5
  x = left[:, None, None] + (j + 0.5) * cw[:, None, None] / 20 - 0.5
  grid = np.stack([(2 * x + 1) / 20 - 1, (2 * y + 1) / 16 - 1], -1)
  want = ref.grid_sample(np.asarray(images.astype(np.uint8), np.float64), grid, "border", False)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_pit_recipe_augmentation_compiles_and_stays_in_range():
  """The full MoCo-v3 pipeline of configs/pit_t_cifar100.py under jit on an RGB batch."""
  from configs import pit_t_cifar100
  aug = pit_t_cifar100.get_config().augment
  images = jnp.asarray(np.random.default_rng(4).integers(0, 256, (8, 32, 32, 3)), jnp.uint8)
  keys = augment.example_keys(jax.random.key(5), jnp.arange(8))
  out = jax.jit(lambda im, k: augment.augment(im, k, crop_scale=tuple(aug.crop_scale), flip=aug.flip,
                                              color_jitter=tuple(aug.color_jitter),
                                              color_jitter_prob=aug.color_jitter_prob,
                                              grayscale_prob=aug.grayscale_prob))(images, keys)
  out = np.asarray(out)
  assert out.shape == (8, 32, 32, 3) and np.isfinite(out).all()
  assert out.min() >= 0.0 and out.max() <= 255.0 + 1e-3
  assert not np.allclose(out, np.asarray(images, np.float32))
  normalised = augment.preprocess(images, keys, aug, train=True)
  assert normalised.dtype == jnp.float32 and np.isfinite(np.asarray(normalised)).all()
