"""Builds a model from `config.model` (an ml_collections ConfigDict), validating it before compilation."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from apvit_jax.models.adaptive import ADAPTIVE_POSEMBS, AdaptivePatching, adaptive_vit
from apvit_jax.models.posembed import LOOKUPS
from apvit_jax.models.stn import STNS
from apvit_jax.models.vit import ViT, decode_variant
from apvit_jax.patch_params import TRANSLATE_RANGES

MODELS = ("vit", "ips")
FRONT_ENDS = ("grid", "adaptive")   # grid: ViT / PiT; adaptive: DPS-ViT, APViT
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
COMPUTE_DTYPES = ("auto", *DTYPES)


def compute_dtype(name: str) -> str:
  """model.dtype -> the compute dtype used: "auto" is bfloat16 on GPU/TPU (tensor cores, MXU) and float32
  on CPU (no bf16 arithmetic on most CPUs: converting costs time, measured ~25 % on this project's CPU);
  "float32"/"bfloat16" are honoured as given."""
  _choice(name, COMPUTE_DTYPES, "model.dtype")
  if name != "auto":
    return name
  return "bfloat16" if jax.default_backend() in ("gpu", "tpu") else "float32"
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


def build_model(model_cfg, num_classes: int, tasks=None):
  """config.model -> a Flax module returning (logits, intermediates): ViTs take (images, *, train);
  IPS takes (patches, positions, *, train) and returns a dict of logits per task (`tasks`, as from
  training.step.tasks_of)."""
  _choice(model_cfg.name, MODELS, "model.name")
  dtype = DTYPES[compute_dtype(model_cfg.dtype)]
  _choice(model_cfg.attention_impl, ATTENTION_IMPLS, "model.attention_impl")
  if model_cfg.name == "ips":
    return build_ips(model_cfg, tasks, dtype)
  front_end = model_cfg.get("front_end", "grid")
  _choice(front_end, FRONT_ENDS, "model.front_end")
  vit_kwargs = dict(posemb=model_cfg.get("posemb", "learn"), pool=model_cfg.get("pool", "token"),
                    dropout=model_cfg.get("dropout", 0.0), drop_path=model_cfg.get("drop_path", 0.0),
                    mlp_ratio=model_cfg.get("mlp_ratio", 4), dtype=dtype,
                    attention_impl=model_cfg.attention_impl, remat=model_cfg.get("remat", False),
                    scan=model_cfg.get("scan_layers", False), **architecture(model_cfg))
  if front_end == "grid":
    return ViT(num_classes=num_classes, **vit_kwargs)
  return adaptive_vit(num_classes, vit_kwargs, model_cfg.adaptive.to_dict())


def build_ips(model_cfg, tasks, dtype):
  from apvit_jax.models.ips import IPSNet
  c = model_cfg.ips
  return IPSNet(tasks=tuple((name, classes) for name, classes, _ in tasks), encoder=c.encoder,
                num_stages=c.num_stages, dim=c.dim, num_heads=c.num_heads, head_dim=c.head_dim,
                mlp_dim=c.mlp_dim, num_tokens=c.num_tokens, use_pos=c.use_pos, attn_dropout=c.attn_dropout,
                dropout=c.dropout, dtype=dtype)


def check_ips(model_cfg, image_shape) -> int:
  """Validates config.model.ips for images of this shape -> the number of selected patches M'."""
  from apvit_jax.models import ips
  c = model_cfg.ips
  _choice(c.encoder, ips.ENCODERS, "model.ips.encoder")
  _choice(c.loading, ips.LOADING, "model.ips.loading")
  gh, gw = ips.patch_grid(image_shape[:2], c.patch_size, c.patch_stride)
  n = gh * gw
  ips.check_memory(n, c.memory, c.chunk)
  if c.memory > n:
    raise ValueError(f"model.ips.memory M={c.memory} is larger than the number of patches N={n} "
                     f"({gh}x{gw} of {c.patch_size}px, stride {c.patch_stride}); use M <= N (M = N uses all)")
  if c.encoder != "features" and not 1 <= c.num_stages <= 4:
    raise ValueError(f"model.ips.num_stages={c.num_stages} must be in 1..4")
  if c.dim % 2 and c.use_pos:
    raise ValueError(f"model.ips.dim={c.dim} must be even for the sinusoidal position code")
  return n


def check_image_fits(model_cfg, image_shape) -> None:
  """Raises before any compilation when the model cannot be built for images of this shape."""
  if model_cfg.name == "ips":
    check_ips(model_cfg, image_shape)
    return
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
  _choice(a.translate_range, TRANSLATE_RANGES, "model.adaptive.translate_range")
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
