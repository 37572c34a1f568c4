"""The table of model families (config.model.name -> families/*.py) and the two entry points that
build and validate a model from `config.model` before any compilation."""
from __future__ import annotations

from apvit_jax.models.families.base import Family
from apvit_jax.models.families.ips import IPSFamily
from apvit_jax.models.families.vit import ViTFamily
from apvit_jax.models.options import choice, compute_dtype  # noqa: F401  (compute_dtype: public here)

FAMILIES = {f.name: f for f in (ViTFamily, IPSFamily)}
MODELS = tuple(FAMILIES)


def family(model_cfg, augment_cfg=None) -> Family:
  """config.model (and config.augment, which the family's inputs need) -> its family."""
  choice(model_cfg.name, MODELS, "model.name")
  return FAMILIES[model_cfg.name](model_cfg, augment_cfg)


def build_model(model_cfg, num_classes: int, tasks=None):
  """config.model -> a Flax module returning (logits, intermediates): ViTs take (images, *, train);
  IPS takes (patches, positions, *, train) and returns a dict of logits per task (`tasks`:
  ((name, classes, activation), ...))."""
  return family(model_cfg).build(num_classes, tasks)


def check_image_fits(model_cfg, image_shape) -> None:
  """Raises before any compilation when the model cannot be built for images of this shape."""
  family(model_cfg).check(image_shape)
