"""The separable sampler (axis-aligned patches as two small matmuls) against the float64 NumPy loop of
PyTorch's affine_grid + grid_sample, and against the gather sampler (values and gradients)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import compiled
import numpy_sampler
from apvit_jax import sampler, separable_sampler
from apvit_jax.base_config import set_fields
from apvit_jax.models.adaptive import AdaptivePatching
from apvit_jax.patch_params import PatchTransform
from apvit_jax.training import run as run_lib
from test_training import tiny_config


def axis_aligned_theta(rng, b, n, max_scale, reach=1.6):
  """(B, N, 2, 3) maps with zero off-diagonals: scales of either sign up to max_scale, translations up to
  `reach` (beyond 1: patches partly or wholly outside the image)."""
  theta = np.zeros((b, n, 2, 3))
  theta[..., 0, 0], theta[..., 1, 1] = (rng.uniform(-max_scale, max_scale, (b, n)) for _ in range(2))
  theta[..., :, 2] = rng.uniform(-reach, reach, (b, n, 2))
  return theta


def windows(max_scale, patch, image_hw, align_corners):
  (ph, pw), (h, w) = patch, image_hw
  return (separable_sampler.footprint(max_scale, ph, h, align_corners),
          separable_sampler.footprint(max_scale, pw, w, align_corners))


CASES = [  # (batch, H, W, C, N, (P_h, P_w), max |scale|): small windows, a non-square patch, whole image
    (2, 12, 16, 3, 5, (4, 4), 0.4),
    (2, 11, 9, 2, 4, (3, 5), 0.7),
    (1, 8, 8, 1, 3, (4, 4), 1.5),
]


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_matches_numpy(case, padding_mode, align_corners):
  b, h, w, c, n, patch, max_scale = case
  rng = np.random.default_rng(hash((case, padding_mode, align_corners)) % 2 ** 32)
  images = rng.normal(size=(b, h, w, c))
  theta = axis_aligned_theta(rng, b, n, max_scale)
  expected = numpy_sampler.grid_sample(images, numpy_sampler.affine_grid(theta, *patch, align_corners),
                                       padding_mode, align_corners)
  with jax.enable_x64(True):
    got = separable_sampler.sample_patches_axis_aligned(
        jnp.asarray(images), jnp.asarray(theta), patch, windows(max_scale, patch, (h, w), align_corners),
        align_corners=align_corners, padding_mode=padding_mode)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12, atol=1e-12)


def test_footprint_is_the_patch_plus_its_neighbours_and_rounding():
  # A translation-only patch of P samples one pixel apart touches P + 1 pixels; one more absorbs float32
  # rounding of the step; never more than the padded image.
  assert separable_sampler.footprint(8 / 32, 8, 32) == 10
  assert separable_sampler.footprint(1.0, 4, 8) == 9    # samples 2 pixels apart: 7 + 2
  assert separable_sampler.footprint(1.5, 4, 8) == 10   # capped at the padded image
  assert separable_sampler.footprint(0.5, 1, 100) == 2
  assert PatchTransform("translate", 8, (32, 48)).sampling_window() == (10, 10)
  assert PatchTransform("scale", 8, (32, 32), max_scale=0.5).sampling_window() == (17, 17)
  with pytest.raises(ValueError, match="'scale_rotate' rotates or shears"):
    PatchTransform("scale_rotate", 8, (32, 32)).sampling_window()


def gradients(fn, images, theta, cotangent):
  out, vjp = jax.vjp(fn, images, theta)
  return out, *vjp(cotangent)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("padding_mode,align_corners", [("zeros", False), ("border", True), ("zeros", True)])
@pytest.mark.slow
def test_values_and_gradients_equal_the_gather_sampler(padding_mode, align_corners, dtype):
  """Random maps (in, across and outside the image) and the exact ViT tiles, whose samples fall on pixel
  centres (every right-hand weight exactly 0, yet its pixel enters the map gradient)."""
  rng = np.random.default_rng(7)
  b, h, w, n, p, max_scale = 3, 24, 20, 6, 4, 0.45
  images = jnp.asarray(rng.uniform(size=(b, h, w, 3)), dtype)
  random_maps = axis_aligned_theta(rng, b, n, max_scale)
  tiles = np.broadcast_to(np.asarray(sampler.regular_grid_theta((h, w), p)), (b, (h // p) * (w // p), 2, 3))
  for theta in (random_maps, tiles):
    theta = jnp.asarray(theta, jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=(b, theta.shape[1], p, p, 3)), dtype)
    gather = functools.partial(sampler.sample_patches, patch_size=p, padding_mode=padding_mode,
                               align_corners=align_corners)
    separable = functools.partial(separable_sampler.sample_patches_axis_aligned, patch_size=p,
                                  window=windows(max_scale, (p, p), (h, w), align_corners),
                                  padding_mode=padding_mode, align_corners=align_corners)
    want, want_images, want_theta = gradients(gather, images, theta, cotangent)
    got, got_images, got_theta = gradients(separable, images, theta, cotangent)
    assert got.dtype == got_images.dtype == dtype and got_theta.dtype == jnp.float32
    # float32: rounding of sums taken in another order. bf16: the same float32 blend, rounded once to
    # bf16 (8 bits: 2**-8 relative); gradients accumulate in float32 before that rounding.
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == jnp.float32 else dict(rtol=2 ** -7, atol=2 ** -7)
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), **tol)
    np.testing.assert_allclose(np.asarray(got_images, np.float32), np.asarray(want_images, np.float32), **tol)
    used = np.array([[1, 0, 1], [0, 1, 1]], bool)   # the off-diagonals are not read, so get no gradient
    np.testing.assert_allclose(np.asarray(got_theta)[..., used], np.asarray(want_theta)[..., used],
                               rtol=1e-4, atol=1e-4 * float(jnp.abs(want_theta).max()))
    np.testing.assert_array_equal(np.asarray(got_theta)[..., ~used], 0.0)


@pytest.mark.slow
def test_check_grads_float64():
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    images = jnp.asarray(rng.normal(size=(2, 10, 12, 2)))
    theta = jnp.asarray(axis_aligned_theta(rng, 2, 3, 0.5, reach=1.2))
    for padding_mode in ("zeros", "border"):
      f = lambda x, t, m=padding_mode: separable_sampler.sample_patches_axis_aligned(
          x, t, 3, (8, 9), padding_mode=m)
      check_grads(f, (images, theta), order=1, modes=["rev"], eps=1e-6, atol=1e-5, rtol=1e-5)


def test_bad_arguments_raise():
  images = jnp.ones((2, 8, 8, 1))
  with pytest.raises(ValueError, match=r"theta must be \(B, N, 2, 3\) with B=2"):
    separable_sampler.sample_patches_axis_aligned(images, jnp.zeros((3, 4, 2, 3)), 4, (6, 6))
  with pytest.raises(ValueError, match="padding_mode must be one of"):
    separable_sampler.sample_patches_axis_aligned(images, jnp.zeros((2, 4, 2, 3)), 4, (6, 6),
                                                  padding_mode="reflection")


@pytest.mark.parametrize("transform", ["translate", "scale", "aniso_scale"])
@pytest.mark.slow
def test_front_end_gives_the_same_tokens_and_gradients_with_either_sampler(transform):
  rng = np.random.default_rng(11)
  images = jnp.asarray(rng.normal(size=(2, 16, 16, 3)), jnp.float32)
  fronts = {name: AdaptivePatching(width=24, patch_size=4, transform=transform, stn="cnn", stn_hidden=4,
                                   bound="reflect", translate_range="full", patch_sampler=name)
            for name in ("gather", "separable")}
  variables = compiled.init(fronts["gather"])(jax.random.key(0), images, train=False)
  # Random raw offsets move every patch off the grid (translate_range="full": some overhang the image).
  bias = variables["params"]["patch_bias"]
  variables = {**variables, "params": {**variables["params"], "patch_bias": jnp.asarray(
      rng.normal(scale=0.8, size=bias.shape), jnp.float32)}}

  def loss(params, name):
    tokens, pos, _ = fronts[name].apply({**variables, "params": params}, images, train=False)
    return jnp.sum(tokens ** 2) + jnp.sum(pos * tokens)
  loss_and_grads = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  want_loss, want_grads = loss_and_grads(variables["params"], "gather")
  got_loss, got_grads = loss_and_grads(variables["params"], "separable")
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  # Each gradient entry of the localisation network sums thousands of float32 products of both signs, in
  # a different order on each path: its rounding error scales with the leaf's largest entries, not with the
  # entry itself (an entry that cancels to -5.4 among entries of 2,000 differed by 6.6e-4 on one CPU). So
  # the absolute tolerance is relative to each leaf's largest magnitude.
  jax.tree.map(lambda got, want: np.testing.assert_allclose(
      got, want, rtol=1e-4, atol=1e-5 * float(jnp.abs(want).max())), got_grads, want_grads)


def test_separable_sampler_with_a_rotating_transform_is_refused_before_compilation():
  config = set_fields(tiny_config(), {"model.front_end": "adaptive", "model.adaptive.transform": "scale_rotate",
                                      "model.adaptive.patch_sampler": "separable"})
  with pytest.raises(ValueError, match="patch_sampler='separable' cuts axis-aligned patches only"):
    run_lib.setup(config)
