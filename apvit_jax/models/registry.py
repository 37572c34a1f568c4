"""Builds a model from `config.model` (an ml_collections ConfigDict)."""
from __future__ import annotations

import jax.numpy as jnp

from apvit_jax.models.vit import ViT, decode_variant

MODELS = ("vit",)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ATTENTION_IMPLS = ("auto", "xla", "cudnn")


def build_model(model_cfg, num_classes: int):
  """config.model -> a Flax module whose __call__(images, *, train) returns (logits, intermediates)."""
  name = model_cfg.name
  if name not in MODELS:
    raise ValueError(f"unknown model name {name!r}; choose from {MODELS}")
  if model_cfg.dtype not in DTYPES:
    raise ValueError(f"unknown model dtype {model_cfg.dtype!r}; choose from {sorted(DTYPES)}")
  if model_cfg.attention_impl not in ATTENTION_IMPLS:
    raise ValueError(f"unknown model.attention_impl {model_cfg.attention_impl!r}; choose from "
                     f"{ATTENTION_IMPLS}")
  arch = decode_variant(model_cfg.variant)
  if model_cfg.get("patch_size"):
    arch["patch_size"] = model_cfg.patch_size
  return ViT(num_classes=num_classes, posemb=model_cfg.get("posemb", "learn"),
             pool=model_cfg.get("pool", "token"), dropout=model_cfg.get("dropout", 0.0),
             drop_path=model_cfg.get("drop_path", 0.0), dtype=DTYPES[model_cfg.dtype],
             attention_impl=model_cfg.attention_impl, **arch)


def check_image_fits(model_cfg, image_shape) -> None:
  """Raises before any compilation when the image cannot be cut into the model's patches."""
  p = model_cfg.get("patch_size") or decode_variant(model_cfg.variant)["patch_size"]
  h, w = image_shape[:2]
  if h % p or w % p:
    raise ValueError(f"image size {h}x{w} is not divisible by patch size {p} "
                     f"(model.variant={model_cfg.variant!r}); resize the data or change the patch size")
