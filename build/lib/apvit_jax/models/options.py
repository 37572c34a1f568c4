"""Choices shared by the model families: validated names, the compute dtype, the ViT encoder's shape."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from apvit_jax.models.vit import decode_variant

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
COMPUTE_DTYPES = ("auto", *DTYPES)
ATTENTION_IMPLS = ("auto", "xla", "cudnn")


def choice(value, choices, field: str):
  """Raises naming the field when `value` is not one of `choices`."""
  if value not in choices:
    raise ValueError(f"unknown {field}={value!r}; choose from {tuple(choices)}")


def compute_dtype(name: str) -> str:
  """model.dtype -> the compute dtype used: "auto" is bfloat16 on GPU/TPU (tensor cores, MXU) and float32
  on CPU (no bf16 arithmetic on most CPUs: converting costs time, measured ~25 % on this project's CPU);
  "float32"/"bfloat16" are honoured as given."""
  choice(name, COMPUTE_DTYPES, "model.dtype")
  if name != "auto":
    return name
  return "bfloat16" if jax.default_backend() in ("gpu", "tpu") else "float32"


def jnp_dtype(model_cfg):
  """model.dtype (and model.attention_impl, checked here too) -> the jnp compute dtype."""
  choice(model_cfg.attention_impl, ATTENTION_IMPLS, "model.attention_impl")
  return DTYPES[compute_dtype(model_cfg.dtype)]


def architecture(model_cfg) -> dict:
  """The encoder's shape: the variant's, with model.{patch_size,width,depth,num_heads} > 0 overriding."""
  arch = decode_variant(model_cfg.variant)
  for field in ("patch_size", "width", "depth", "num_heads"):
    if model_cfg[field]:
      arch[field] = model_cfg[field]
  return arch
