"""Adaptive patching: patch transforms and position lookups against float64 NumPy, bounds, identity-grid
start == ViT, batch independence, gradients, the published DPS-ViT / standard ViT shapes, optimizer."""
import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import numpy_patch_params as ref
import numpy_sampler as ref_sampler
from apvit_jax import patch_params, sampler
from apvit_jax.base_config import base_config
from apvit_jax.models import adaptive, posembed, registry
from apvit_jax.training import state as state_lib
from configs import dps_vit_cifar10, std_vit_cifar10

KINDS = sorted(patch_params.KINDS)


def model_config(front_end="grid", **fields):
  c = base_config().model
  c.variant, c.front_end = "mu/8", front_end
  a = c.adaptive
  a.stn_hidden, a.stn_attn_width, a.head_hidden, a.pos_dim = 8, 16, 0, 16
  for k, v in fields.items():
    a[k] = v
  return c


def perturbed(params, seed, scale=0.05):
  """Fresh random values on every leaf (the zero-initialised head would make every logit 0). Drawn
  with NumPy: jax.random would compile a sampler for every leaf shape (~20 s per model on CPU)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: x + jnp.asarray(scale * rng.standard_normal(x.shape), x.dtype), params)


def init_params(model, x, seed):
  return model.init(jax.random.key(seed), x, train=False)["params"]  # eager: jit would compile the RNGs


def as_homography(theta):
  theta = np.asarray(theta, np.float64)
  if theta.shape[-2] == 3:
    return theta
  bottom = np.broadcast_to(np.array([0.0, 0.0, 1.0]), theta.shape[:-2] + (1, 3))
  return np.concatenate([theta, bottom], axis=-2)


def tiles(images, p):
  b, h, w, c = images.shape
  t = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return t.reshape(b, (h // p) * (w // p), p, p, c)


# --- patch transforms -------------------------------------------------------------------------------

@pytest.mark.parametrize("translate_range", patch_params.TRANSLATE_RANGES)
@pytest.mark.parametrize("bound", patch_params.BOUNDS)
@pytest.mark.parametrize("kind", KINDS)
def test_patch_maps_match_numpy(kind, bound, translate_range):
  rng = np.random.default_rng()
  raw = rng.normal(0.0, 2.0, (3, 5, patch_params.KINDS[kind]))
  pt = patch_params.PatchTransform(kind, 8, (32, 48), max_scale=0.3, max_perspective=0.25, bound=bound,
                                   translate_range=translate_range)
  theta, centres = pt(jnp.asarray(raw, jnp.float32))
  want_h, want_t = ref.patch_maps(raw, kind, 8, (32, 48), 0.3, 0.25, bound, translate_range)
  np.testing.assert_allclose(as_homography(theta), want_h, rtol=1e-5, atol=2e-6)
  np.testing.assert_allclose(np.asarray(centres, np.float64), want_t, rtol=1e-5, atol=2e-6)


def test_published_semantics_of_translation_and_scale_rotation():
  """DESIGN.md: t = tanh(raw)(1 - extent), extent = clamp(s|cos| + s|sin|, <= 1); s = sigmoid * max;
  angle = tanh * pi; A = [[s cos, -s sin, t_x], [s sin, s cos, t_y]]; DPS: extent = P/W."""
  rng = np.random.default_rng(1)
  raw = rng.normal(0.0, 2.0, (4, 6, 4))
  theta, _ = patch_params.PatchTransform("scale_rotate", 4, (32, 32), max_scale=0.6)(
      jnp.asarray(raw, jnp.float32))
  s = 0.6 / (1 + np.exp(-raw[..., 2]))
  ang = np.tanh(raw[..., 3]) * np.pi
  c, sn = np.cos(ang), np.sin(ang)
  extent = np.minimum(s * np.abs(c) + s * np.abs(sn), 1.0)
  t = np.tanh(raw[..., :2]) * (1 - extent)[..., None]
  want = np.stack([np.stack([s * c, -s * sn, t[..., 0]], -1), np.stack([s * sn, s * c, t[..., 1]], -1)], -2)
  np.testing.assert_allclose(np.asarray(theta, np.float64), want, rtol=1e-5, atol=2e-6)
  theta, _ = patch_params.PatchTransform("translate", 8, (32, 32))(jnp.asarray(raw[..., :2], jnp.float32))
  np.testing.assert_allclose(np.asarray(theta[..., 2], np.float64), np.tanh(raw[..., :2]) * (1 - 8 / 32),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bound", patch_params.BOUNDS)
@pytest.mark.parametrize("kind", KINDS)
def test_patches_stay_inside_for_extreme_raw_outputs(kind, bound):
  rng = np.random.default_rng(7)
  k = patch_params.KINDS[kind]
  raw = np.concatenate([rng.choice([-1.0, 1.0], (64, k)) * rng.uniform(5.0, 1e4, (64, k)),
                        rng.normal(0.0, 30.0, (64, k))])[None]
  pt = patch_params.PatchTransform(kind, 8, (32, 40), max_scale=0.35 if kind != "projective" else 0.3,
                                   max_perspective=0.3, bound=bound)
  theta, centres = pt(jnp.asarray(raw, jnp.float32))
  grid = np.asarray(sampler.homography_grid(jnp.asarray(as_homography(theta), jnp.float32), (9, 9),
                                            align_corners=True))  # includes the patch's corners
  assert np.isfinite(grid).all() and np.isfinite(np.asarray(centres)).all()
  assert np.abs(grid).max() <= 1.0 + 1e-5, f"{kind}: a patch leaves the image ({np.abs(grid).max()})"


def test_bounds_that_cannot_hold_are_refused():
  with pytest.raises(ValueError, match="could leave the image; use max_scale <= 0.7071"):
    patch_params.PatchTransform("scale_rotate", 8, (32, 32), max_scale=0.8)
  with pytest.raises(ValueError, match="use max_scale <= 0.375"):
    patch_params.PatchTransform("projective", 8, (32, 32), max_scale=0.4, max_perspective=0.25)
  with pytest.raises(ValueError, match="unknown patch transform 'shear'"):
    patch_params.PatchTransform("shear", 8, (32, 32))
  with pytest.raises(ValueError, match="does not fit"):
    patch_params.PatchTransform("translate", 40, (32, 32))
  with pytest.raises(ValueError, match="bound='reflect'"):
    patch_params.PatchTransform("translate", 8, (32, 32), bound="tanh").identity_raw()
  with pytest.raises(ValueError, match="max_scale > P/W"):
    patch_params.PatchTransform("scale", 8, (32, 32), max_scale=0.2, bound="reflect").identity_raw()


@pytest.mark.parametrize("kind", KINDS)
def test_identity_raw_gives_the_vit_tiles(kind):
  """Fixed-scale regular-grid placements cut exactly the non-overlapping P×P tiles."""
  pt = patch_params.PatchTransform(kind, 8, (32, 32), max_scale=0.3, bound="reflect")
  theta, centres = pt(jnp.asarray(pt.identity_raw())[None])
  np.testing.assert_allclose(np.asarray(theta[0, :, :2]), np.asarray(sampler.regular_grid_theta((32, 32), 8)),
                             atol=1e-6)
  images = np.random.default_rng(3).normal(size=(2, 32, 32, 3)).astype(np.float32)
  got = sampler.sample_patches(jnp.asarray(images), jnp.broadcast_to(theta, (2,) + theta.shape[1:]), 8)
  np.testing.assert_allclose(np.asarray(got), tiles(images, 8), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(centres[0]), np.asarray(theta[0, :, :2, 2]), atol=0)


def test_projective_with_identity_homography_equals_affine():
  raw = np.random.default_rng(4).normal(0.0, 1.5, (2, 9, 6)).astype(np.float32)
  aff = patch_params.PatchTransform("affine", 8, (32, 32), max_scale=0.3)
  proj = patch_params.PatchTransform("projective", 8, (32, 32), max_scale=0.3)
  theta_a, t_a = aff(jnp.asarray(raw))
  theta_p, t_p = proj(jnp.asarray(np.concatenate([raw, np.zeros((2, 9, 2), np.float32)], -1)))
  np.testing.assert_array_equal(np.asarray(theta_p[..., :2, :]), np.asarray(theta_a))
  np.testing.assert_array_equal(np.asarray(theta_p[..., 2, :]), np.broadcast_to([0.0, 0.0, 1.0], (2, 9, 3)))
  images = jnp.asarray(np.random.default_rng(5).normal(size=(2, 32, 32, 3)), jnp.float32)
  np.testing.assert_array_equal(np.asarray(sampler.sample_patches(images, theta_p, 8)),
                                np.asarray(sampler.sample_patches(images, theta_a, 8)))


# --- positional codes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("lookup", posembed.LOOKUPS)
def test_posemb_lookup_matches_numpy(lookup):
  rng = np.random.default_rng(6)
  table = rng.normal(size=(1, 3 * 5, 7))
  centres = rng.uniform(-1.3, 1.3, (2, 11, 2))
  got = posembed.lookup_posemb(jnp.asarray(table, jnp.float32), (3, 5), jnp.asarray(centres, jnp.float32),
                               lookup)
  np.testing.assert_allclose(np.asarray(got, np.float64), ref.lookup(table[0], (3, 5), centres, lookup),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transform,posemb,bound", [("scale_rotate", "interpolate", "reflect"),
                                                    ("translate", "translation", "tanh"),
                                                    ("projective", "learn", "tanh")])
@pytest.mark.slow
def test_front_end_matches_numpy(transform, posemb, bound):
  """Given raw parameters, tokens and positional codes equal sampler + linear embedding + lookup."""
  front = adaptive.AdaptivePatching(width=24, patch_size=4, transform=transform, bound=bound, max_scale=0.3,
                                    stn_hidden=4, stn_attn_width=8, posemb=posemb, pos_dim=8)
  rng = np.random.default_rng(8)
  images = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
  params = init_params(front, jnp.asarray(images), 0)
  k = patch_params.KINDS[transform]
  raw = rng.normal(0.0, 1.0, (16, k)).astype(np.float32)
  params = {**params, "loc_head": {"kernel": jnp.zeros_like(params["loc_head"]["kernel"])},
            "patch_bias": jnp.asarray(raw)}
  tokens, pos, extras = front.apply({"params": params}, jnp.asarray(images), train=False)

  hs, ts = ref.patch_maps(np.broadcast_to(raw, (2, 16, k)), transform, 4, (16, 16), 0.3, 0.25, bound)
  xy = ref_sampler.affine_grid(hs[..., :2, :], 4, 4, False)
  wgrid = ref_sampler.affine_grid(np.concatenate([hs[..., 2:, :]] * 2, -2), 4, 4, False)[..., :1]
  patches = ref_sampler.grid_sample(images, xy / wgrid, "zeros", False)  # (2, 16, 4, 4, 3)
  emb = params["embedding"]
  want = patches.reshape(2, 16, -1) @ np.asarray(emb["kernel"], np.float64).reshape(48, -1) + np.asarray(
      emb["bias"])
  if posemb == "translation":
    te = params["translation_embed"]
    want = np.concatenate([want, ts @ np.asarray(te["kernel"], np.float64) + np.asarray(te["bias"])], -1)
  np.testing.assert_allclose(np.asarray(tokens, np.float64), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(as_homography(extras["theta"]), hs, rtol=1e-5, atol=2e-6)
  table = np.asarray(params["posemb"]["pos_embedding"], np.float64)[0] if posemb != "translation" else None
  if posemb == "interpolate":
    np.testing.assert_allclose(np.asarray(pos, np.float64), ref.lookup(table, (4, 4), ts, "cell_centres"),
                               rtol=1e-5, atol=1e-6)
  elif posemb == "learn":
    np.testing.assert_array_equal(np.asarray(pos)[0], table)
  else:
    assert pos is None


def test_full_translate_range_is_the_published_dps_code():
  """translate_range="full": t = tanh(raw) exactly (the published DPS-ViT code), so patches overhang the
  image and read zeros there; the positional code is computed from that t. The default ("inside")
  scales t by 1 - P/W and keeps every patch inside."""
  rng = np.random.default_rng()
  images = rng.uniform(0.5, 1.5, size=(2, 16, 16, 3)).astype(np.float32)  # no zero pixels inside
  raw = rng.normal(0.0, 1.0, (16, 2)).astype(np.float32)
  raw[0] = (4.0, -4.0)  # tanh = ±0.9993: the patch centre is almost on the border, half the patch outside
  tokens = {}
  for rng_mode in ("inside", "full"):
    front = adaptive.AdaptivePatching(width=24, patch_size=4, transform="translate", bound="tanh",
                                      translate_range=rng_mode, stn_hidden=4, stn_attn_width=8,
                                      posemb="translation", pos_dim=8)
    params = init_params(front, jnp.asarray(images), 0)
    params = {**params, "loc_head": {"kernel": jnp.zeros_like(params["loc_head"]["kernel"])},
              "patch_bias": jnp.asarray(raw)}
    tokens[rng_mode], _, extras = front.apply({"params": params}, jnp.asarray(images), train=False)
    centres = np.asarray(extras["centres"], np.float64)
    scale = 1.0 if rng_mode == "full" else 1.0 - 4 / 16
    np.testing.assert_allclose(centres, np.broadcast_to(np.tanh(raw.astype(np.float64)) * scale, (2, 16, 2)),
                               rtol=1e-6, atol=1e-7)
    hs, ts = ref.patch_maps(np.broadcast_to(raw, (2, 16, 2)), "translate", 4, (16, 16), bound="tanh",
                            translate_range=rng_mode)
    patches = ref_sampler.grid_sample(images, ref_sampler.affine_grid(hs[..., :2, :], 4, 4, False), "zeros", False)
    emb, te = params["embedding"], params["translation_embed"]
    want = np.concatenate([
        patches.reshape(2, 16, -1) @ np.asarray(emb["kernel"], np.float64).reshape(48, -1) + np.asarray(emb["bias"]),
        ts @ np.asarray(te["kernel"], np.float64) + np.asarray(te["bias"])], -1)
    np.testing.assert_allclose(np.asarray(tokens[rng_mode], np.float64), want, rtol=1e-5, atol=1e-5)
    # Patch 0's top-right quarter lies outside the image under "full" (zeros), never under "inside".
    outside = (patches[:, 0] == 0).all(-1)
    assert outside.any() if rng_mode == "full" else not outside.any()
  assert not np.allclose(np.asarray(tokens["inside"]), np.asarray(tokens["full"]))


# --- whole models ---------------------------------------------------------------------------------------

def max_batch_dependence(apply, x):
  """Largest change of any example's output between running it in the batch and on its own."""
  whole = np.asarray(apply(x))
  alone = np.concatenate([np.asarray(apply(x[i:i + 1])) for i in range(x.shape[0])])
  return np.abs(whole - alone).max()


MODELS = {
    "vit": model_config("grid"),
    "dps_vit": model_config("adaptive", transform="translate", posemb="translation", stn="dps"),
    "apvit": model_config("adaptive", transform="scale_rotate", posemb="interpolate", bound="reflect",
                          identity_init=True, max_scale=0.3, head_hidden=8),
    "cnn_projective": model_config("adaptive", transform="projective", posemb="learn", stn="cnn",
                                   max_scale=0.3),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.slow
def test_every_model_is_batch_independent(name):
  cfg = MODELS[name]
  registry.check_image_fits(cfg, (32, 32, 3))
  model = registry.build_model(cfg, 10)
  x = jnp.asarray(np.random.default_rng(9).normal(size=(5, 32, 32, 3)), jnp.float32)
  params = perturbed(init_params(model, x[:1], 1), 2)
  apply = jax.jit(lambda im: model.apply({"params": params}, im, train=False)[0])
  # Rounding alone differs with the batch size (XLA:CPU blocks its convolutions and matmuls by it), and
  # the sampler amplifies it: a translation ~2e-6 off (the STN's rounding) moves a 16-pixel patch by
  # 3e-5 pixels. Measured on an AVX-512 Xeon: 1.1e-5 of the logits' scale for DPS-ViT, 3e-7 to 3e-6 for
  # the others; attention across the batch (the test below) changes outputs by 7e-2 of their scale.
  scale = np.abs(np.asarray(apply(x))).max()
  assert scale > 0.1  # a real function, not zeros
  assert max_batch_dependence(apply, x) < 1e-4 * scale


def test_batch_independence_check_catches_attention_across_the_batch():
  """The published STN's bug (attention over the batch axis) fails the check above."""
  def across_batch(x):  # (B, ...) -> (B, D): the batch is the sequence
    t = x.reshape(1, x.shape[0], 1, -1)
    return jax.nn.dot_product_attention(t, t, t)[0, :, 0]
  x = jnp.asarray(np.random.default_rng(10).normal(size=(5, 4, 4, 3)), jnp.float32)
  assert max_batch_dependence(jax.jit(across_batch), x) > 1e-2


@pytest.mark.parametrize("transform", ["translate", "scale_rotate", "projective"])
@pytest.mark.slow
def test_identity_init_apvit_computes_the_vit(transform):
  vit = registry.build_model(model_config("grid"), 10)
  fields = dict(transform=transform, posemb="interpolate", bound="reflect", identity_init=True, max_scale=0.3)
  apvit = registry.build_model(model_config("adaptive", **fields), 10)
  x = jnp.asarray(np.random.default_rng(11).normal(size=(3, 32, 32, 3)), jnp.float32)
  vit_params = perturbed(init_params(vit, x[:1], 2), 3)
  ap_params = flax.traverse_util.flatten_dict(init_params(apvit, x[:1], 4))
  for path, value in flax.traverse_util.flatten_dict(vit_params).items():  # every ViT weight has a place
    assert ap_params[path].shape == value.shape, path
    ap_params[path] = value
  ap_params = flax.traverse_util.unflatten_dict(ap_params)
  logits_v, inter_v = vit.apply({"params": vit_params}, x, train=False)
  logits_a, inter_a = apvit.apply({"params": ap_params}, x, train=False)
  assert np.abs(np.asarray(logits_v)).max() > 0.1  # a real function, not zeros
  np.testing.assert_allclose(np.asarray(inter_a["tokens"]), np.asarray(inter_v["tokens"]), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(logits_a), np.asarray(logits_v), rtol=1e-5, atol=1e-5)
  # The published align-corners lookup reads the grid between cells: not the ViT any more.
  seed = registry.build_model(model_config("adaptive", posemb_lookup="seed", **fields), 10)
  logits_s, _ = seed.apply({"params": ap_params}, x, train=False)
  assert np.abs(np.asarray(logits_s) - np.asarray(logits_v)).max() > 1e-3


def _loss_grads(cfg, seed):
  model = registry.build_model(cfg, 10)
  x = jnp.asarray(np.random.default_rng(seed).normal(size=(4, 32, 32, 3)), jnp.float32)
  labels = jnp.arange(4) % 10
  params = perturbed(init_params(model, x[:1], seed), seed + 1)
  def loss(p):
    logits, _ = model.apply({"params": p}, x, train=True, rngs={"dropout": jax.random.key(0)})
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return jax.jit(jax.grad(loss))(params)


@pytest.mark.slow
def test_gradients_reach_the_localisation_network():
  grads = _loss_grads(model_config("adaptive", transform="scale_rotate", posemb="interpolate",
                                   stn_dropout=0.1, max_scale=0.3), 12)
  stn = flax.traverse_util.flatten_dict(grads["patch_embed"]["stn"])
  stn.update({("loc_head", "kernel"): grads["patch_embed"]["loc_head"]["kernel"],
              ("patch_bias",): grads["patch_embed"]["patch_bias"]})
  assert len(stn) > 10
  for path, g in stn.items():
    g = np.asarray(g)
    assert np.isfinite(g).all(), path
    assert np.abs(g).max() > 0, f"no gradient reaches {path}"


@pytest.mark.slow
def test_identity_start_moves_every_patch_including_border_tiles():
  """With the reflect bound the outer tiles (at the image border) still get translation gradients;
  tanh would need raw = +-inf there, where its gradient is 0."""
  grads = _loss_grads(model_config("adaptive", transform="scale_rotate", posemb="interpolate",
                                   bound="reflect", identity_init=True, max_scale=0.3), 13)
  bias = np.asarray(grads["patch_embed"]["patch_bias"])  # (16, 4): t_x, t_y, scale, angle
  assert np.isfinite(bias).all() and (np.abs(bias[:, :3]) > 0).all()
  assert np.abs(np.asarray(grads["patch_embed"]["loc_head"]["kernel"])).max() > 0


def _count(*shapes):
  return sum(math.prod(s) for s in shapes)


def _encoder_params(d, depth, classes):
  block = _count((2, d), (2, d), (3, d, d), (3, d), (d, d), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,))
  return depth * block + _count((2, d), (d, classes), (classes,), (d,), (d,))  # final LN, head, cls, cls pos


def test_published_dps_vit_and_standard_vit_architectures():
  """Parameter counts of the full configs, by hand: conv/linear patch embedding 8·8·3 -> width, the
  encoder (6 blocks of width 288), and for DPS-ViT its localisation network."""
  def build(config):
    config.num_classes = 10
    model = registry.build_model(config.model, 10)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(x.shape), train=False), shapes)
    return shapes["params"], out
  std_params, std_out = build(std_vit_cifar10.get_config())
  dps_params, dps_out = build(dps_vit_cifar10.get_config())
  encoder = _encoder_params(288, 6, 10)
  want_std = encoder + _count((8, 8, 3, 288), (288,), (16, 288))
  attention = lambda hw: _count((hw, 256), (256,)) + _encoder_params(256, 1, 0) - _count(
      (2, 256), (256,), (256,)) + _count((256, hw), (hw,))  # encode, one block, decode
  stn = _count((3, 3, 3, 32)) + attention(32 * 32) + _count((3, 3, 32, 16)) + attention(16 * 16)
  want_dps = encoder + _count((8, 8, 3, 256), (256,), (2, 32), (32,)) + stn + _count((256, 2), (16, 2))
  assert state_lib.count_params(std_params) == want_std
  assert state_lib.count_params(dps_params) == want_dps
  assert std_out[1]["tokens"].shape == dps_out[1]["tokens"].shape == (2, 17, 288)
  assert dps_out[1]["theta"].shape == (2, 16, 2, 3)


# --- optimizer ------------------------------------------------------------------------------------------

def test_cosine_warm_restarts_schedule():
  c = base_config().optim
  c.lr, c.warmup_epochs, c.schedule, c.restart_epochs, c.restart_mult, c.end_lr_ratio = (
      1e-3, 5.0, "cosine_restarts", 4.0, 2.0, 0.1)
  spe, total = 10, 300
  schedule = state_lib.learning_rate_schedule(c, total, spe)

  def want(step):
    if step < 50:
      return 1e-3 * step / 50
    u, length = step - 50, 40
    while u >= length:
      u, length = u - length, length * 2
    return 1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * u / length)))
  for step in [0, 1, 25, 49, 50, 51, 70, 89, 90, 91, 130, 169, 170, 171, 299]:
    np.testing.assert_allclose(float(schedule(step)), want(step), rtol=1e-5, atol=1e-9, err_msg=str(step))


@pytest.mark.slow
def test_localisation_network_takes_its_own_learning_rate():
  model = registry.build_model(MODELS["apvit"], 10)
  params = init_params(model, jnp.zeros((1, 32, 32, 3)), 0)
  c = base_config().optim
  c.stn_lr_ratio, c.grad_clip = 0.0, 0.0
  tx = state_lib.make_optimizer(c, optax.constant_schedule(1e-2))
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  labels = state_lib.localisation_labels(params)
  flat_u = flax.traverse_util.flatten_dict(updates)
  flat_l = flax.traverse_util.flatten_dict(labels)
  assert {"stn", "rest"} == set(flat_l.values())
  for path, u in flat_u.items():
    moved = np.abs(np.asarray(u)).max() > 0
    assert moved == (flat_l[path] == "rest"), path
  assert flat_l[("patch_embed", "patch_bias")] == "stn" and flat_l[("head", "kernel")] == "rest"
