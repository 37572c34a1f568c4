"""Patch figures: corner geometry in pixel units, mosaics, and a PNG per image."""
import jax.numpy as jnp
import numpy as np

from apvit_jax import sampler, visualize
from apvit_jax.patch_params import PatchTransform


def test_patch_corners_of_the_regular_grid_are_the_tile_edges():
  corners = visualize.patch_corners(np.asarray(sampler.regular_grid_theta((24, 32), 8)), (24, 32))
  assert corners.shape == (12, 4, 2)
  # Tile (row 1, col 2): x from 16 - 0.5 to 24 - 0.5, y from 8 - 0.5 to 16 - 0.5 (pixel centres at integers).
  np.testing.assert_allclose(corners[1 * 4 + 2], [[15.5, 7.5], [23.5, 7.5], [23.5, 15.5], [15.5, 15.5]],
                             atol=1e-5)


def test_projective_corners_divide_by_the_third_row():
  h = np.array([[[0.5, 0.1, 0.2], [0.0, 0.4, -0.1], [0.2, -0.1, 1.0]]])
  got = visualize.patch_corners(h, (10, 20))
  x, y, w = h[0] @ np.array([1.0, 1.0, 1.0])  # the third corner, (1, 1)
  np.testing.assert_allclose(got[0, 2], [((x / w + 1) * 20 - 1) / 2, ((y / w + 1) * 10 - 1) / 2])


def test_mosaic_places_patches_row_major():
  patches = np.random.default_rng(0).uniform(size=(5, 3, 3, 1))
  m = visualize.mosaic(patches, gap=1)
  assert m.shape == (2 * 4 - 1, 3 * 4 - 1, 1)
  np.testing.assert_array_equal(m[4:7, 4:7], patches[4])
  np.testing.assert_array_equal(m[3], 1.0)


def test_patch_figure_writes_a_png(tmp_path):
  rng = np.random.default_rng(1)
  image = rng.uniform(size=(32, 32, 3)).astype(np.float32)
  pt = PatchTransform("scale_rotate", 8, (32, 32), max_scale=0.3)
  theta, _ = pt(jnp.asarray(rng.normal(size=(1, 16, 4)), jnp.float32))
  patches = sampler.sample_patches(jnp.asarray(image)[None], theta, 8)[0]
  path = visualize.patch_figure(image, np.asarray(theta[0]), np.asarray(patches),
                                np.asarray(sampler.regular_grid_theta((32, 32), 8)), tmp_path / "f.png", "t")
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
