"""Sampler vs the float64 NumPy reference (and PyTorch where installed), gradients, ViT tiles."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from apvit_jax import sampler
import numpy_sampler as ref


def random_theta(rng, shape):
  """Random affine maps with rotation, anisotropic scale, shear and translations that leave the image."""
  angle = rng.uniform(-np.pi, np.pi, shape)
  sx, sy = rng.uniform(0.1, 1.2, shape), rng.uniform(0.1, 1.2, shape)
  shear = rng.uniform(-0.5, 0.5, shape)
  t = rng.uniform(-1.6, 1.6, shape + (2,))  # |t| > 1 puts patches partly or fully outside
  c, s = np.cos(angle), np.sin(angle)
  a = np.stack([np.stack([sx * c, -sy * s + shear], -1), np.stack([sx * s, sy * c], -1)], -2)
  return np.concatenate([a, t[..., None]], -1).astype(np.float32)


CASES = [  # (B, H, W, C, N, Ph, Pw)
    (2, 9, 13, 3, 4, 5, 5),
    (3, 16, 8, 1, 3, 4, 6),
    (1, 7, 7, 3, 6, 3, 3),
]


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
@pytest.mark.parametrize("case", CASES)
def test_sample_patches_matches_numpy(case, padding_mode, align_corners):
  rng = np.random.default_rng()
  b, h, w, c, n, ph, pw = case
  images = rng.normal(size=(b, h, w, c)).astype(np.float32)
  theta = random_theta(rng, (b, n))
  got = jax.jit(sampler.sample_patches, static_argnums=2,
                static_argnames=("align_corners", "padding_mode"))(
      images, theta, (ph, pw), align_corners=align_corners, padding_mode=padding_mode)
  grid = ref.affine_grid(theta, ph, pw, align_corners)
  want = ref.grid_sample(images, grid, padding_mode, align_corners)
  assert got.shape == (b, n, ph, pw, c)
  # float32 coordinates: an error of ~1e-7 in a coordinate of size ~10 moves a bilinear weight by ~1e-6.
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=2e-5)
  # Some samples must fall outside the image, or the padding branch went untested.
  assert (np.abs(grid) > 1).any()


@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_matches_numpy(align_corners):
  rng = np.random.default_rng()
  theta = random_theta(rng, (2, 3))
  got = sampler.affine_grid(jnp.asarray(theta), (4, 7), align_corners=align_corners)
  np.testing.assert_allclose(np.asarray(got), ref.affine_grid(theta, 4, 7, align_corners),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_matches_torch(padding_mode, align_corners):
  torch = pytest.importorskip("torch", reason="PyTorch not installed: NumPy reference covers semantics")
  rng = np.random.default_rng()
  images = rng.normal(size=(2, 11, 6, 3)).astype(np.float32)
  theta = random_theta(rng, (2,))
  tt = torch.from_numpy(theta)
  grid = torch.nn.functional.affine_grid(tt, (2, 3, 5, 4), align_corners=align_corners)
  want = torch.nn.functional.grid_sample(torch.from_numpy(images).permute(0, 3, 1, 2), grid,
                                         mode="bilinear", padding_mode=padding_mode,
                                         align_corners=align_corners).permute(0, 2, 3, 1).numpy()
  got = sampler.grid_sample(jnp.asarray(images),
                            sampler.affine_grid(jnp.asarray(theta), (5, 4), align_corners),
                            padding_mode=padding_mode, align_corners=align_corners)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_gradients(padding_mode, align_corners):
  rng = np.random.default_rng()
  with jax.enable_x64(True):
    images = jnp.asarray(rng.normal(size=(2, 6, 5, 2)))
    theta = jnp.asarray(random_theta(rng, (2, 3)).astype(np.float64))
    f = lambda im, th: sampler.sample_patches(im, th, 3, align_corners=align_corners,
                                              padding_mode=padding_mode)
    # Bilinear sampling is piecewise smooth; eps=1e-6 keeps finite differences off the pixel seams.
    check_grads(f, (images, theta), order=1, modes=["rev"], eps=1e-6, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hw,p", [((32, 32), 8), ((16, 64), 4), ((28, 28), 7), ((224, 224), 16)])
def test_regular_grid_reproduces_tiles(hw, p):
  rng = np.random.default_rng()
  h, w = hw
  images = rng.normal(size=(2, h, w, 3)).astype(np.float32)
  theta = jnp.broadcast_to(sampler.regular_grid_theta(hw, p), (2, (h // p) * (w // p), 2, 3))
  got = np.asarray(jax.jit(sampler.sample_patches, static_argnums=2)(images, theta, p))
  tiles = images.reshape(2, h // p, p, w // p, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, -1, p, p, 3)
  if (h & (h - 1)) == 0 and (w & (w - 1)) == 0:
    np.testing.assert_array_equal(got, tiles)  # power-of-two sizes: every coordinate is exact
  else:
    # P/W is inexact in float32: coordinates carry a few ulp of max(H, W) pixels, so the bilinear blend
    # leaks that fraction of the neighbour difference (bounded by the image's value range).
    tol = 8 * np.finfo(np.float32).eps * max(h, w) * (images.max() - images.min())
    np.testing.assert_allclose(got, tiles, rtol=0, atol=tol)


@pytest.mark.slow
def test_bfloat16():
  rng = np.random.default_rng()
  images = rng.normal(size=(2, 12, 10, 3)).astype(np.float32)
  theta = random_theta(rng, (2, 5))
  got = sampler.sample_patches(jnp.asarray(images, jnp.bfloat16), jnp.asarray(theta, jnp.bfloat16), 4)
  assert got.dtype == jnp.bfloat16
  want = ref.grid_sample(np.asarray(jnp.asarray(images, jnp.bfloat16), np.float64),
                         ref.affine_grid(np.asarray(jnp.asarray(theta, jnp.bfloat16), np.float64),
                                         4, 4, False), "zeros", False)
  # bf16 has an 8-bit mantissa: one rounding of the output, relative error <= 2^-8.
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-2, atol=1e-2)
  g = jax.grad(lambda im, th: sampler.sample_patches(im, th, 4).astype(jnp.float32).sum(), (0, 1))(
      jnp.asarray(images, jnp.bfloat16), jnp.asarray(theta, jnp.bfloat16))
  assert g[0].dtype == jnp.bfloat16 and np.isfinite(np.asarray(g[1], np.float32)).all()


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match="theta"):
    sampler.sample_patches(jnp.ones((2, 8, 8, 3)), jnp.ones((2, 4, 3, 4)), 4)
  with pytest.raises(ValueError, match="theta"):
    sampler.sample_patches(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 4, 2, 3)), 4)
  with pytest.raises(ValueError, match="padding_mode"):
    sampler.grid_sample(jnp.ones((1, 8, 8, 3)), jnp.ones((1, 2, 2)), padding_mode="reflect")
  with pytest.raises(ValueError, match="divisible"):
    sampler.regular_grid_theta((30, 32), 8)


def test_homography_grid_matches_numpy():
  rng = np.random.default_rng(11)
  h = np.concatenate([random_theta(rng, (2, 3)), np.zeros((2, 3, 1, 3))], axis=-2)
  h[..., 2, :2] = rng.uniform(-0.3, 0.3, (2, 3, 2))
  h[..., 2, 2] = rng.uniform(0.8, 1.2, (2, 3))
  got = sampler.homography_grid(jnp.asarray(h, jnp.float32), (4, 5))
  want = ref.homography_grid(h, 4, 5)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-6)
  images = rng.normal(size=(2, 9, 11, 3))
  got = sampler.sample_patches(jnp.asarray(images, jnp.float32), jnp.asarray(h, jnp.float32), (4, 5))
  np.testing.assert_allclose(np.asarray(got, np.float64),
                             ref.grid_sample(images, want, "zeros", False), rtol=1e-5, atol=1e-5)


def test_identity_homography_equals_affine():
  rng = np.random.default_rng(12)
  theta = random_theta(rng, (2, 6)).astype(np.float32)
  h = np.concatenate([theta, np.broadcast_to(np.array([0, 0, 1], np.float32), (2, 6, 1, 3))], -2)
  images = jnp.asarray(rng.normal(size=(2, 16, 16, 3)), jnp.float32)
  np.testing.assert_array_equal(np.asarray(sampler.sample_patches(images, jnp.asarray(h), 4)),
                                np.asarray(sampler.sample_patches(images, jnp.asarray(theta), 4)))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_fused_backward_equals_autodiff(padding_mode, align_corners, dtype):
  """grid_sample's custom_vjp (one scatter-add, analytic grid gradient) == JAX's autodiff of the masked
  gathers, for values and both gradients, on rotated, sheared and out-of-image patches."""
  rng = np.random.default_rng()
  b, h, w, c, n, p = 3, 23, 17, 3, 7, 5
  images = jnp.asarray(rng.normal(size=(b, h, w, c)), dtype)
  theta = jnp.asarray(random_theta(rng, (b, n)))
  cotangent = jnp.asarray(rng.normal(size=(b, n, p, p, c)), dtype)

  def vjp(sample, images, cotangent):
    f = lambda im, th: sample(im, sampler.affine_grid(th, (p, p), align_corners), padding_mode, align_corners)
    out, pullback = jax.vjp(jax.jit(f), images, theta)
    return (out, *pullback(cotangent))

  fused = vjp(sampler.grid_sample, images, cotangent)
  # The reference differentiates the same numbers, bf16 ones held exactly in float32.
  autodiff = vjp(sampler.grid_sample_autodiff, images.astype(jnp.float32), cotangent.astype(jnp.float32))
  grid = np.asarray(sampler.affine_grid(theta, (p, p), align_corners))
  assert (np.abs(grid) > 1).any() and (np.abs(grid) < 1).all(-1).any()  # both outside and inside samples
  for name, got, want in zip(("value", "image grad", "theta grad"), fused, autodiff):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.abs(want).max() > 0, name
    if dtype == "float32":
      # The two paths sum the same float32 terms in a different order, and compute the pixel coordinate
      # and its weights in differently fused (equally exact) arithmetic: a coordinate up to W = 23 px
      # carries float32 rounding of a few W * 2^-24 ~ 1e-6 px, which moves a value by that times the
      # difference of neighbouring pixels (up to ~2 max|image|), i.e. a few 1e-6 of the largest entry.
      # (atol 1e-6 of the largest entry failed about one run in ten on that, on random inputs.)
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), err_msg=name)
    else:
      # bf16 images and cotangents: the fused path computes in float32 and rounds its result to bf16 once
      # (relative 2^-9, one bf16 ulp is 2^-8); the image gradient is accumulated in float32 before that
      # rounding. The reference is autodiff of the same numbers in float32: autodiff in bf16 accumulates
      # the image gradient in bf16 and was off by up to 2 % where many border samples land on one pixel
      # (3 failures in 150 random draws; against the float32 reference the worst was 1.9e-3).
      np.testing.assert_allclose(got, want, rtol=2**-8, atol=2**-8 * np.abs(want).max(), err_msg=name)


def test_gradient_to_the_maps_alone_compiles_without_the_image_scatter():
  """A train step differentiates through the sampler to the maps only (the images are data). XLA then
  drops the custom_vjp's image gradient: no scatter is left in the compiled program (the image gradient
  is four scatter-adds, the slow part of the backward on CPU; bench/RESULTS.md). And the maps' gradient
  is the one computed together with the image gradient."""
  rng = np.random.default_rng()
  images = jnp.asarray(rng.normal(size=(2, 12, 12, 3)), jnp.float32)
  theta = jnp.asarray(random_theta(rng, (2, 5)))
  loss = lambda im, th: (sampler.sample_patches(im, th, 4) ** 2).sum()
  maps_only = jax.jit(jax.grad(lambda th: loss(images, th)))
  both = jax.jit(jax.grad(loss, argnums=(0, 1)))
  scatters = lambda f, *args: f.lower(*args).compile().as_text().count(" scatter(")
  assert scatters(both, images, theta) >= 1   # the count works: the image gradient is a scatter
  assert scatters(maps_only, theta) == 0
  np.testing.assert_allclose(maps_only(theta), both(images, theta)[1], rtol=1e-6, atol=1e-6)


def test_affine_grid_gradient_matches_numpy():
  """affine_grid's backward (one einsum with the base grid) vs the float64 sum over pixels."""
  rng = np.random.default_rng()
  theta = random_theta(rng, (2, 3))
  for align_corners in (False, True):
    cotangent = rng.normal(size=(2, 3, 4, 7, 2))
    _, pullback = jax.vjp(lambda t: sampler.affine_grid(t, (4, 7), align_corners), jnp.asarray(theta))
    got = np.asarray(pullback(jnp.asarray(cotangent, jnp.float32))[0], np.float64)
    base = ref.affine_grid(np.broadcast_to(np.eye(2, 3), (1, 2, 3)), 4, 7, align_corners)[0]  # (4, 7, 2)
    xy1 = np.concatenate([base, np.ones((4, 7, 1))], -1)
    want = np.einsum("bnhwk,hwj->bnkj", cotangent, xy1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_grid_sample_check_grads_float64():
  """The custom_vjp against finite differences, directly on a grid (not through affine_grid)."""
  rng = np.random.default_rng()
  with jax.enable_x64(True):
    images = jnp.asarray(rng.normal(size=(2, 7, 6, 2)))
    grid = jnp.asarray(rng.uniform(-1.3, 1.3, size=(2, 5, 4, 2)))
    for padding_mode in ("zeros", "border"):
      f = lambda im, g: sampler.grid_sample(im, g, padding_mode=padding_mode)
      check_grads(f, (images, grid), order=1, modes=["rev"], eps=1e-6, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shared_images", [False, True])
def test_vmapped_sampler_equals_one_call_per_replica(shared_images):
  """Under jax.vmap (num_seeds replicas) the sampler folds the vmapped axis into its batch axis: values and
  both gradients equal one call per replica, with the images batched or shared by the replicas."""
  rng = np.random.default_rng()
  k, b, h, w, c, n, p = 3, 2, 13, 11, 3, 4, 5
  images = jnp.asarray(rng.normal(size=(b, h, w, c) if shared_images else (k, b, h, w, c)), jnp.float32)
  theta = jnp.asarray(random_theta(rng, (k, b, n)))
  cotangent = jnp.asarray(rng.normal(size=(k, b, n, p, p, c)), jnp.float32)

  def value_and_grads(im, th, ct):
    f = lambda im, th: sampler.sample_patches(im, th, p)
    out, pullback = jax.vjp(f, im, th)
    return (out, *pullback(ct))

  batched = jax.jit(jax.vmap(value_and_grads, in_axes=(None if shared_images else 0, 0, 0)))(
      images, theta, cotangent)
  for r in range(k):
    one = jax.jit(value_and_grads)(images if shared_images else images[r], theta[r], cotangent[r])
    for name, got, want in zip(("value", "image grad", "theta grad"), batched, one):
      # Folding the replicas into the batch may reorder float32 sums: a theta-gradient entry sums P²·C = 75
      # products, so it may move by ~75·eps32 (9e-6) of their size; an absolute 1e-6 failed once on an EPYC
      # (2.0e-6 where the largest entry is 66). Over 300 draws the largest move was 3.5e-7 of the array's
      # largest entry; a wrong replica or fold moves entries by their own size.
      scale = np.abs(np.asarray(want)).max()
      np.testing.assert_allclose(np.asarray(got[r]), np.asarray(want), rtol=1e-6, atol=1e-5 * scale, err_msg=name)
  # Without gradients (evaluation: the masked-gather forward) as well.
  evaluate = lambda im, th: sampler.sample_patches(im, th, p)
  eval_batched = jax.jit(jax.vmap(evaluate, in_axes=(None if shared_images else 0, 0)))(images, theta)
  for r in range(k):
    one = jax.jit(evaluate)(images if shared_images else images[r], theta[r])
    np.testing.assert_allclose(np.asarray(eval_batched[r]), np.asarray(one), rtol=1e-6, atol=1e-6)
