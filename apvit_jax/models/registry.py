"""Builds a model from `config.model` (an ml_collections ConfigDict), validating it before compilation."""
from __future__ import annotations

import jax.numpy as jnp

from apvit_jax.models.adaptive import ADAPTIVE_POSEMBS, AdaptivePatching, adaptive_vit
from apvit_jax.models.posembed import LOOKUPS
from apvit_jax.models.stn import STNS
from apvit_jax.models.vit import ViT, decode_variant

MODELS = ("vit",)
FRONT_ENDS = ("grid", "adaptive")   # grid: ViT / PiT; adaptive: DPS-ViT, APViT
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ATTENTION_IMPLS = ("auto", "xla", "cudnn")


def _choice(value, choices, field: str):
  if value not in choices:
    raise ValueError(f"unknown {field}={value!r}; choose from {tuple(choices)}")


def architecture(model_cfg) -> dict:
  """The encoder's shape: the variant's, with model.{patch_size,width,depth,num_heads} > 0 overriding."""
  arch = decode_variant(model_cfg.variant)
  for field in ("patch_size", "width", "depth", "num_heads"):
    if model_cfg.get(field):
      arch[field] = model_cfg[field]
  return arch


def build_model(model_cfg, num_classes: int):
  """config.model -> a Flax module whose __call__(images, *, train) returns (logits, intermediates)."""
  _choice(model_cfg.name, MODELS, "model.name")
  _choice(model_cfg.dtype, DTYPES, "model.dtype")
  _choice(model_cfg.attention_impl, ATTENTION_IMPLS, "model.attention_impl")
  front_end = model_cfg.get("front_end", "grid")
  _choice(front_end, FRONT_ENDS, "model.front_end")
  vit_kwargs = dict(posemb=model_cfg.get("posemb", "learn"), pool=model_cfg.get("pool", "token"),
                    dropout=model_cfg.get("dropout", 0.0), drop_path=model_cfg.get("drop_path", 0.0),
                    mlp_ratio=model_cfg.get("mlp_ratio", 4), dtype=DTYPES[model_cfg.dtype],
                    attention_impl=model_cfg.attention_impl, remat=model_cfg.get("remat", False),
                    scan=model_cfg.get("scan_layers", False), **architecture(model_cfg))
  if front_end == "grid":
    return ViT(num_classes=num_classes, **vit_kwargs)
  return adaptive_vit(num_classes, vit_kwargs, model_cfg.adaptive.to_dict())


def check_image_fits(model_cfg, image_shape) -> None:
  """Raises before any compilation when the model cannot be built for images of this shape."""
  arch = architecture(model_cfg)
  p = arch["patch_size"]
  h, w = image_shape[:2]
  if p > min(h, w):
    raise ValueError(f"patch size {p} is larger than the {h}x{w} image (model.variant={model_cfg.variant!r}, "
                     f"model.patch_size={model_cfg.get('patch_size', 0)})")
  if model_cfg.get("front_end", "grid") == "grid":
    if h % p or w % p:
      raise ValueError(f"image size {h}x{w} is not divisible by patch size {p} "
                       f"(model.variant={model_cfg.variant!r}); resize the data or change the patch size")
    return
  a = model_cfg.adaptive
  _choice(a.stn, STNS, "model.adaptive.stn")
  _choice(a.posemb, ADAPTIVE_POSEMBS, "model.adaptive.posemb")
  _choice(a.posemb_lookup, LOOKUPS, "model.adaptive.posemb_lookup")
  if not 0 <= a.num_patches <= h * w:  # patches may overlap, but more of them than pixels is an error
    raise ValueError(f"model.adaptive.num_patches={a.num_patches}: more patches than fit a {h}x{w} image "
                     f"(at most one per pixel, {h * w}); 0 means the ViT grid's {(h // p) * (w // p)}")
  if a.posemb == "interpolate" and (h < p or w < p):
    raise ValueError(f"model.adaptive.posemb='interpolate' needs a grid of at least one {p}x{p} cell in "
                     f"the {h}x{w} image")
  if a.posemb == "translation" and not 0 < a.pos_dim < arch["width"]:
    raise ValueError(f"model.adaptive.pos_dim={a.pos_dim} must be in (0, width={arch['width']})")
  front = AdaptivePatching(arch["width"], p, **a.to_dict())
  pt = front.patch_transform(image_shape)   # validates kind, bound and scale limits
  if a.identity_init:
    pt.identity_raw()  # raises when the regular grid cannot be reached
    if a.num_patches not in (0, (h // p) * (w // p)):
      raise ValueError(f"model.adaptive.identity_init needs num_patches = {(h // p) * (w // p)} (the "
                       f"{h // p}x{w // p} grid) or 0, got {a.num_patches}")
