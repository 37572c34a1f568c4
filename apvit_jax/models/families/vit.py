"""ViT-like models: a patch front-end ("grid": ViT, PiT; "adaptive": DPS-ViT, APViT, model.adaptive.*)
in front of a ViT encoder with one softmax head; the inputs are the images, augmented on device."""
from __future__ import annotations

from apvit_jax.data.augment import example_keys, preprocess
from apvit_jax.models.families.base import Family, fetch
from apvit_jax.models.adaptive import ADAPTIVE_POSEMBS, PATCH_SAMPLERS, AdaptivePatching, adaptive_vit
from apvit_jax.models.options import architecture, choice, jnp_dtype
from apvit_jax.models.posembed import LOOKUPS
from apvit_jax.models.stn import STNS
from apvit_jax.models.vit import ViT
from apvit_jax.patch_params import AXIS_ALIGNED_KINDS, TRANSLATE_RANGES

FRONT_ENDS = ("grid", "adaptive")   # grid: ViT / PiT; adaptive: DPS-ViT, APViT


class ViTFamily(Family):
  name = "vit"

  def check(self, image_shape) -> None:
    m = self.model_cfg
    choice(m.front_end, FRONT_ENDS, "model.front_end")
    jnp_dtype(m)
    arch = architecture(m)
    p = arch["patch_size"]
    h, w = image_shape[:2]
    if p > min(h, w):
      raise ValueError(f"patch size {p} is larger than the {h}x{w} image (model.variant={m.variant!r}, "
                       f"model.patch_size={m.patch_size})")
    if m.front_end == "grid":
      if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by patch size {p} "
                         f"(model.variant={m.variant!r}); resize the data or change the patch size")
      return
    self._check_adaptive(arch, h, w)

  def _check_adaptive(self, arch, h: int, w: int) -> None:
    a, p = self.model_cfg.adaptive, arch["patch_size"]
    choice(a.stn, STNS, "model.adaptive.stn")
    choice(a.posemb, ADAPTIVE_POSEMBS, "model.adaptive.posemb")
    choice(a.posemb_lookup, LOOKUPS, "model.adaptive.posemb_lookup")
    choice(a.translate_range, TRANSLATE_RANGES, "model.adaptive.translate_range")
    choice(a.patch_sampler, PATCH_SAMPLERS, "model.adaptive.patch_sampler")
    if not 0 <= a.num_patches <= h * w:  # patches may overlap, but more of them than pixels is an error
      raise ValueError(f"model.adaptive.num_patches={a.num_patches}: more patches than fit a {h}x{w} image "
                       f"(at most one per pixel, {h * w}); 0 means the ViT grid's {(h // p) * (w // p)}")
    if a.posemb == "interpolate" and (h < p or w < p):
      raise ValueError(f"model.adaptive.posemb='interpolate' needs a grid of at least one {p}x{p} cell in "
                       f"the {h}x{w} image")
    if a.posemb == "translation" and not 0 < a.pos_dim < arch["width"]:
      raise ValueError(f"model.adaptive.pos_dim={a.pos_dim} must be in (0, width={arch['width']})")
    front = AdaptivePatching(arch["width"], p, **a.to_dict())
    pt = front.patch_transform((h, w))   # validates kind, bound and scale limits
    if a.patch_sampler == "separable" and not pt.axis_aligned:
      raise ValueError(f"model.adaptive.patch_sampler='separable' cuts axis-aligned patches only "
                       f"(model.adaptive.transform in {AXIS_ALIGNED_KINDS}), not transform={a.transform!r}; "
                       f"use patch_sampler='gather'")
    if a.identity_init:
      pt.identity_raw()  # raises when the regular grid cannot be reached
      if a.num_patches not in (0, (h // p) * (w // p)):
        raise ValueError(f"model.adaptive.identity_init needs num_patches = {(h // p) * (w // p)} (the "
                         f"{h // p}x{w // p} grid) or 0, got {a.num_patches}")

  def build(self, num_classes: int, tasks=None):
    m = self.model_cfg
    choice(m.front_end, FRONT_ENDS, "model.front_end")
    vit_kwargs = dict(posemb=m.posemb, pool=m.pool, dropout=m.dropout, drop_path=m.drop_path,
                      mlp_ratio=m.mlp_ratio, dtype=jnp_dtype(m), attention_impl=m.attention_impl,
                      remat=m.remat, scan=m.scan_layers, **architecture(m))
    if m.front_end == "grid":
      return ViT(num_classes=num_classes, **vit_kwargs)
    return adaptive_vit(num_classes, vit_kwargs, m.adaptive.to_dict())

  def uncounted_loops(self, apply_fn, variables, batch: int, image_shape) -> list | None:
    return None if self.model_cfg.scan_layers else []   # scanned blocks: not counted here

  def model_inputs(self, state, data, batch, key, *, train: bool):
    """-> ((images (b, H, W, C) float, augmented when training and normalised,), labels (b,))."""
    images, labels = fetch(data, batch)
    keys = example_keys(key, batch["position"]) if train else None
    return (preprocess(images, keys, self.augment, train=train),), labels

  def figures(self, model, variables, images, labels, tasks, out_dir, prefix: str, inputs_key) -> list:
    """The image, the regular grid, the adaptive patches and the patches as sampled (visualize.py)."""
    from apvit_jax import visualize   # matplotlib only when drawing
    return visualize.render_patch_figures(model, variables, images, labels, self.augment, out_dir,
                                          f"patches_{prefix}")
