"""Pretrained import: a vision_transformer-layout .npz written here (fresh random weights) loads into our
ViT and into an APViT, and both match a NumPy forward pass that reads the .npz names directly;
position-embedding resizing."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import compiled
import numpy_vit
from apvit_jax.base_config import base_config
from apvit_jax.models import pretrained, registry

WIDTH, DEPTH, HEADS, PATCH, CLASSES = 32, 2, 2, 4, 10


def npz_weights(rng, grid=4, classes=CLASSES, pre_logits=False, channels=3):
  """Random weights under the google-research/vision_transformer names."""
  d, hd = WIDTH, WIDTH // HEADS
  w = lambda *shape: rng.normal(0.0, 0.2, shape).astype(np.float32)
  flat = {"embedding/kernel": w(PATCH, PATCH, channels, d), "embedding/bias": w(d), "cls": w(1, 1, d),
          "Transformer/posembed_input/pos_embedding": w(1, 1 + grid * grid, d),
          "Transformer/encoder_norm/scale": 1 + w(d), "Transformer/encoder_norm/bias": w(d),
          "head/kernel": w(d, classes), "head/bias": w(classes)}
  for i in range(DEPTH):
    b = f"Transformer/encoderblock_{i}/"
    for ln in ("LayerNorm_0", "LayerNorm_2"):
      flat[b + ln + "/scale"], flat[b + ln + "/bias"] = 1 + w(d), w(d)
    for name in ("query", "key", "value"):
      flat[b + f"MultiHeadDotProductAttention_1/{name}/kernel"] = w(d, HEADS, hd)
      flat[b + f"MultiHeadDotProductAttention_1/{name}/bias"] = w(HEADS, hd)
    flat[b + "MultiHeadDotProductAttention_1/out/kernel"] = w(HEADS, hd, d)
    flat[b + "MultiHeadDotProductAttention_1/out/bias"] = w(d)
    flat[b + "MlpBlock_3/Dense_0/kernel"], flat[b + "MlpBlock_3/Dense_0/bias"] = w(d, 4 * d), w(4 * d)
    flat[b + "MlpBlock_3/Dense_1/kernel"], flat[b + "MlpBlock_3/Dense_1/bias"] = w(4 * d, d), w(d)
  if pre_logits:
    flat["pre_logits/kernel"], flat["pre_logits/bias"] = w(d, d), w(d)
  return flat


def npz_forward(flat, images):
  """Float64 forward pass written against the .npz names (token pooling)."""
  f = {k: np.asarray(v, np.float64) for k, v in flat.items()}
  b, h, w, c = images.shape
  x = np.asarray(images, np.float64).reshape(b, h // PATCH, PATCH, w // PATCH, PATCH, c)
  x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, PATCH * PATCH * c)
  x = x @ f["embedding/kernel"].reshape(-1, WIDTH) + f["embedding/bias"]
  x = np.concatenate([np.broadcast_to(f["cls"], (b, 1, WIDTH)), x], 1)
  x = x + f["Transformer/posembed_input/pos_embedding"]
  for i in range(DEPTH):
    g = lambda name: f[f"Transformer/encoderblock_{i}/{name}"]
    ln = lambda t, name: numpy_vit.layer_norm(t, {"scale": g(name + "/scale"), "bias": g(name + "/bias")})
    attn = {k: {"kernel": g(f"MultiHeadDotProductAttention_1/{k}/kernel"),
                "bias": g(f"MultiHeadDotProductAttention_1/{k}/bias")} for k in ("query", "key", "value", "out")}
    x = x + numpy_vit.attention(ln(x, "LayerNorm_0"), attn)
    y = numpy_vit.gelu_tanh(ln(x, "LayerNorm_2") @ g("MlpBlock_3/Dense_0/kernel") + g("MlpBlock_3/Dense_0/bias"))
    x = x + y @ g("MlpBlock_3/Dense_1/kernel") + g("MlpBlock_3/Dense_1/bias")
  x = numpy_vit.layer_norm(x, {"scale": f["Transformer/encoder_norm/scale"], "bias": f["Transformer/encoder_norm/bias"]})
  return x[:, 0] @ f["head/kernel"] + f["head/bias"]


def model_config(scan=False, **adaptive):
  c = base_config().model
  c.variant, c.width, c.depth, c.num_heads = f"mu/{PATCH}", WIDTH, DEPTH, HEADS
  c.scan_layers = scan
  if adaptive:
    c.front_end = "adaptive"
    c.adaptive.stn_hidden, c.adaptive.stn_attn_width = 4, 8
    for k, v in adaptive.items():
      c.adaptive[k] = v
  return c


def load(cfg, flat, image_hw, classes=CLASSES):
  model = registry.build_model(cfg, classes)
  params = compiled.init(model)(jax.random.key(0), jnp.zeros((1, *image_hw, 3)), train=False)["params"]
  grid = (image_hw[0] // PATCH, image_hw[1] // PATCH)
  return model, pretrained.vit_params_from_npz(flat, params, grid)


@pytest.mark.parametrize("adaptive", [{}, {"scan": True},
                                      dict(transform="scale_rotate", bound="reflect", identity_init=True,
                                           max_scale=0.5, posemb="interpolate")],
                         ids=["vit", "vit_scanned_layers", "apvit_identity_start"])
@pytest.mark.slow
def test_npz_import_matches_numpy_forward(tmp_path, adaptive):
  """Our ViT, and an APViT on its identity start, compute the .npz model's logits."""
  rng = np.random.default_rng(0)
  flat = npz_weights(rng)
  np.savez(tmp_path / "vit.npz", **flat)
  model, params = load(model_config(**adaptive), pretrained.load_npz(tmp_path / "vit.npz"), (16, 16))
  images = rng.normal(size=(3, 16, 16, 3)).astype(np.float32)
  logits, _ = compiled.apply(model)({"params": params}, jnp.asarray(images), train=False)
  want = npz_forward(flat, images)
  assert np.abs(want).max() > 0.5
  np.testing.assert_allclose(np.asarray(logits, np.float64), want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_new_class_count_and_resolution(tmp_path):
  """5 classes at 24×24: the encoder is loaded, the head stays fresh (pre_logits dropped), and the 4×4
  position grid is resized to 6×6 with the cls position kept."""
  flat = npz_weights(np.random.default_rng(1), pre_logits=True)
  _, params = load(model_config(), flat, (24, 24), classes=5)
  np.testing.assert_array_equal(params["head"]["kernel"], np.zeros((WIDTH, 5)))
  np.testing.assert_array_equal(params["encoder"]["block1"]["mlp"]["Dense_0"]["kernel"],
                                flat["Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel"])
  pe = flat["Transformer/posembed_input/pos_embedding"]
  np.testing.assert_array_equal(params["cls_pos_embedding"], pe[:, :1])
  np.testing.assert_allclose(params["patch_embed"]["posemb"]["pos_embedding"],
                             pretrained.resize_posemb(pe[:, 1:], (4, 4), (6, 6)))


def _bilinear_corners(grid, new_hw):
  """Float64 NumPy reference: corner-aligned bilinear resampling of (gh, gw, D)."""
  gh, gw, _ = grid.shape
  nh, nw = new_hw
  out = np.zeros((nh, nw, grid.shape[-1]))
  for i in range(nh):
    for j in range(nw):
      y = i * (gh - 1) / (nh - 1) if nh > 1 else 0.0
      x = j * (gw - 1) / (nw - 1) if nw > 1 else 0.0
      y0, x0 = min(int(y), gh - 2), min(int(x), gw - 2)
      fy, fx = y - y0, x - x0
      out[i, j] = ((1 - fy) * (1 - fx) * grid[y0, x0] + (1 - fy) * fx * grid[y0, x0 + 1]
                   + fy * (1 - fx) * grid[y0 + 1, x0] + fy * fx * grid[y0 + 1, x0 + 1])
  return out


def test_posemb_resize():
  rng = np.random.default_rng(2)
  pe = rng.normal(size=(1, 4 * 5, 6)).astype(np.float32)
  np.testing.assert_array_equal(pretrained.resize_posemb(pe, (4, 5), (4, 5)), pe)
  got = pretrained.resize_posemb(pe, (4, 5), (7, 3))
  np.testing.assert_allclose(got[0], _bilinear_corners(pe[0].reshape(4, 5, 6).astype(np.float64), (7, 3))
                             .reshape(21, 6), rtol=1e-5, atol=1e-6)
  # Round trip: 4 -> 7 (= 2·3 + 1) keeps the old cells as every other new cell, so 7 -> 4 gives them back.
  up = pretrained.resize_posemb(pe, (4, 5), (7, 9))
  np.testing.assert_allclose(pretrained.resize_posemb(up, (7, 9), (4, 5)), pe, rtol=1e-6, atol=1e-6)


def test_import_errors(tmp_path):
  flat = npz_weights(np.random.default_rng(3))
  with pytest.raises(FileNotFoundError, match="no pretrained checkpoint"):
    pretrained.load_npz(tmp_path / "missing.npz")
  cfg = model_config()
  cfg.width = 48
  with pytest.raises(ValueError, match=r"embedding/kernel: checkpoint \(4, 4, 3, 32\) vs model \(4, 4, 3, 48\)"):
    load(cfg, flat, (16, 16))
  with pytest.raises(ValueError, match="Transformer/encoderblock_2/LayerNorm_0/scale .* has no place"):
    load(model_config(), {**flat, "Transformer/encoderblock_2/LayerNorm_0/scale": np.ones(WIDTH)}, (16, 16))


def test_config_init_from(tmp_path):
  """config.init_from: checked before compilation, then a new run starts from the .npz weights."""
  from apvit_jax.training import run as run_lib
  from test_training import tiny_config
  overrides = {"model.variant": f"mu/{PATCH}", "model.width": WIDTH, "model.depth": DEPTH,
               "model.num_heads": HEADS}
  with pytest.raises(FileNotFoundError, match="init_from"):
    run_lib.setup(tiny_config(init_from=str(tmp_path / "none.npz"), **overrides))
  flat = npz_weights(np.random.default_rng(4), grid=10, channels=1)  # 40×40 grey digits, 10×10 patches
  np.savez(tmp_path / "vit.npz", **flat)
  run = run_lib.setup(tiny_config(init_from=str(tmp_path / "vit.npz"), **overrides))
  state = run_lib.pretrained_state(run, run.config.init_from)
  np.testing.assert_array_equal(state.params["patch_embed"]["posemb"]["pos_embedding"],
                                flat["Transformer/posembed_input/pos_embedding"][:, 1:])
  np.testing.assert_array_equal(state.params["head"]["kernel"], flat["head/kernel"])


@pytest.mark.slow
def test_init_from_our_own_workdir_at_another_resolution(tmp_path):
  """A run trained on 40×40 digits (5×5 grid of 8×8 patches) starts another at 24×24 (3×3 grid) with the
  position grid resized on restore, and an APViT starts from the same workdir (front-end kept fresh)."""
  from apvit_jax.training import loop, run as run_lib
  from test_training import tiny_config
  loop.train_and_evaluate(tiny_config(total_steps=2), tmp_path / "vit40")
  saved = run_lib.ckpt_lib.Checkpointer(tmp_path / "vit40", read_only=True).restore_saved(2)["params"]
  run = run_lib.setup(tiny_config(**{"data.canvas": 24, "init_from": str(tmp_path / "vit40")}))
  state = run_lib.pretrained_state(run, run.config.init_from)
  np.testing.assert_allclose(state.params["patch_embed"]["posemb"]["pos_embedding"],
                             pretrained.resize_posemb(saved["patch_embed"]["posemb"]["pos_embedding"], (5, 5), (3, 3)))
  np.testing.assert_array_equal(state.params["encoder"]["block0"]["attn"]["query"]["kernel"],
                                saved["encoder"]["block0"]["attn"]["query"]["kernel"])
  ap = run_lib.setup(tiny_config(**{"init_from": str(tmp_path / "vit40"), "model.front_end": "adaptive",
                                 "model.adaptive.stn": "cnn", "model.adaptive.stn_hidden": 4}))
  ap_state = run_lib.pretrained_state(ap, ap.config.init_from)
  np.testing.assert_array_equal(ap_state.params["patch_embed"]["embedding"]["kernel"],
                                saved["patch_embed"]["embedding"]["kernel"])
  assert "stn" in ap_state.params["patch_embed"]
  with pytest.raises(ValueError, match=r"encoder/block0/attn/query/kernel: checkpoint \(64, 4, 16\) vs model \(64, 2, 32\)"):
    run_lib.pretrained_state(run_lib.setup(tiny_config(**{"model.num_heads": 2})), str(tmp_path / "vit40"))
