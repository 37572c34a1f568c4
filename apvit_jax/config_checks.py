"""What each config field may hold, checked for every field at start-up before anything is loaded or
compiled: one rule per field of `base_config()` (a test fails when a field has none), each error one line
naming the field. Rules here are about one field at a time (type, range, choice); what depends on the
data or on several fields (a patch size that must divide the image, M <= N) is checked by the data
loaders and the model families, still before compilation.
"""
from __future__ import annotations

import math
import numbers

import ml_collections

from apvit_jax.errors import ConfigError  # noqa: F401 (raised here; importers take it from here too)
from apvit_jax.models.adaptive import ADAPTIVE_POSEMBS, PATCH_SAMPLERS
from apvit_jax.models.families.vit import FRONT_ENDS
from apvit_jax.models.ips import ENCODERS, LOADING
from apvit_jax.models.options import ATTENTION_IMPLS, COMPUTE_DTYPES
from apvit_jax.models.posembed import LOOKUPS, POSEMB_KINDS
from apvit_jax.models.stn import STNS
from apvit_jax.models.vit import POOLS
from apvit_jax.patch_params import BOUNDS, KINDS, TRANSLATE_RANGES
from apvit_jax.training.parallel import MODES
from apvit_jax.training.replicas import LOOPS
from apvit_jax.training.state import OPTIMIZERS, SCHEDULES

HUGE = 10 ** 9   # more than any count a run can use (examples, steps, pixels, widths)


def _number(value, lo, hi, *, integer: bool, lo_open: bool = False, hi_open: bool = False):
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or (integer and not isinstance(
      value, numbers.Integral)):
    return f"must be {'an integer' if integer else 'a number'}, got {value!r}"
  if not math.isfinite(value):
    return f"must be finite, got {value!r}"
  low_bad = value <= lo if lo_open else value < lo
  high_bad = hi is not None and (value >= hi if hi_open else value > hi)
  if low_bad or high_bad:
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    return f"must be in {left}{lo}, {'inf' if hi is None else hi}{right}, got {value!r}"
  return None


def integer(lo=0, hi=HUGE, **kw):
  return lambda v: _number(v, lo, hi, integer=True, **kw)


def real(lo=0.0, hi=None, **kw):
  return lambda v: _number(v, lo, hi, integer=False, **kw)


def one_of(*choices):
  return lambda v: None if v in choices else f"choose from {choices}"


def boolean(v):
  return None if isinstance(v, bool) else f"must be True or False, got {v!r}"


def auto_true_false(v):
  """A switch that "auto" resolves where it is used (by backend, by environment); any letter case."""
  return None if str(v).lower() in ("auto", "true", "false") else f"must be 'auto', 'true' or 'false', got {v!r}"


def text(nonempty: bool = False):
  def check(v):
    if not isinstance(v, str):
      return f"must be a string, got {v!r}"
    return "must not be empty" if nonempty and not v.strip() else None
  return check


def numbers_tuple(lengths, each):
  """A tuple whose length is in `lengths` and whose every entry passes `each`."""
  def check(v):
    if not isinstance(v, (tuple, list)) or len(v) not in lengths:
      return f"must be a tuple of {' or '.join(map(str, lengths))} numbers, got {v!r}"
    errors = [e for e in map(each, v) if e]
    return f"entries {errors[0]}" if errors else None
  return check


def ordered_pair(each, allow_zeros: bool = False):
  """(lo, hi) with lo <= hi, each entry passing `each`; (0, 0) means off where allow_zeros."""
  def check(v):
    if allow_zeros and isinstance(v, (tuple, list)) and tuple(v) == (0, 0):
      return None
    return numbers_tuple((2,), each)(v) or (f"must have lo <= hi, got {v!r}" if v[0] > v[1] else None)
  return check


probability = real(0.0, 1.0)
dropout_rate = real(0.0, 1.0, hi_open=True)
count = integer(1)                 # at least one
size_or_zero = integer(0)          # 0: "from elsewhere" (see base_config's comments)
positive = real(0.0, lo_open=True)

RULES = {
    "seed": integer(0, 2 ** 31 - 1),
    "num_seeds": integer(1, 4096),
    "replica_loop": one_of("auto", *LOOPS),
    "parallel": one_of(*MODES),
    "distributed": auto_true_false,
    "donate_state": auto_true_false,
    "batch_size": count,
    "num_epochs": real(0.0, HUGE),
    "total_steps": size_or_zero,
    "num_classes": size_or_zero,
    "label_smoothing": real(0.0, 1.0, hi_open=True),
    "eval_every_epochs": count,
    "log_every_steps": count,
    "progress_bar": boolean,
    "compilation_cache": boolean,
    "steps_per_call": integer(1, 4096),
    "skip_nonfinite_steps": boolean,
    "init_from": text(),
    "log_efficiency": boolean,
    "data.name": text(nonempty=True),
    "data.data_dir": text(),
    "data.in_memory": boolean,
    "data.skip_bad_examples": boolean,
    "data.workers": integer(-1, 256),
    "data.image_size": size_or_zero,
    "data.seed": integer(0, 2 ** 31 - 1),
    "data.num_train": count,
    "data.num_test": count,
    "data.canvas": size_or_zero,   # unused (0) by the sources that do not draw canvases
    "data.num_noise": size_or_zero,
    "data.digits": text(nonempty=True),
    "augment.crop_padding": integer(0, 4096),
    "augment.flip": boolean,
    "augment.rotate_degrees": real(0.0, 180.0),
    "augment.crop_scale": ordered_pair(real(0.0, 1.0, lo_open=True), allow_zeros=True),
    "augment.crop_ratio": ordered_pair(positive),
    "augment.color_jitter": numbers_tuple((4,), real(0.0, HUGE)),
    "augment.color_jitter_prob": probability,
    "augment.grayscale_prob": probability,
    "augment.mean": numbers_tuple((1, 3), real(-HUGE, HUGE)),
    "augment.std": numbers_tuple((1, 3), positive),
    "model.name": text(nonempty=True),          # the family table names the choices (models/registry.py)
    "model.variant": text(nonempty=True),       # NAME/PATCH, checked by decode_variant
    "model.patch_size": size_or_zero,
    "model.width": size_or_zero,
    "model.depth": size_or_zero,
    "model.num_heads": size_or_zero,
    "model.mlp_ratio": count,
    "model.posemb": one_of(*POSEMB_KINDS),
    "model.pool": one_of(*POOLS),
    "model.dropout": dropout_rate,
    "model.drop_path": dropout_rate,
    "model.dtype": one_of(*COMPUTE_DTYPES),
    "model.attention_impl": one_of(*ATTENTION_IMPLS),
    "model.remat": boolean,
    "model.scan_layers": boolean,
    "model.front_end": one_of(*FRONT_ENDS),
    "model.adaptive.num_patches": size_or_zero,
    "model.adaptive.transform": one_of(*KINDS),
    "model.adaptive.bound": one_of(*BOUNDS),
    "model.adaptive.translate_range": one_of(*TRANSLATE_RANGES),
    "model.adaptive.max_scale": real(0.0, 1.0, lo_open=True),
    "model.adaptive.max_perspective": real(0.0, 1.0),
    "model.adaptive.stn": one_of(*STNS),
    "model.adaptive.stn_hidden": count,
    "model.adaptive.stn_attn_width": count,
    "model.adaptive.stn_attn_heads": count,
    "model.adaptive.stn_dropout": dropout_rate,
    "model.adaptive.head_hidden": size_or_zero,
    "model.adaptive.identity_init": boolean,
    "model.adaptive.posemb": one_of(*ADAPTIVE_POSEMBS),
    "model.adaptive.pos_dim": count,
    "model.adaptive.posemb_lookup": one_of(*LOOKUPS),
    "model.adaptive.patch_sampler": one_of(*PATCH_SAMPLERS),
    "model.ips.encoder": one_of(*ENCODERS),
    "model.ips.num_stages": integer(1, 4),
    "model.ips.width": count,
    "model.ips.patch_size": count,
    "model.ips.patch_stride": count,
    "model.ips.memory": integer(-HUGE),   # the range (1 <= M <= N) is checked with the image (families/ips.py)
    "model.ips.chunk": integer(-HUGE),
    "model.ips.loading": one_of(*LOADING),
    "model.ips.dim": count,
    "model.ips.num_heads": count,
    "model.ips.head_dim": count,
    "model.ips.mlp_dim": count,
    "model.ips.num_tokens": size_or_zero,
    "model.ips.use_pos": boolean,
    "model.ips.dropout": dropout_rate,
    "model.ips.attn_dropout": dropout_rate,
    "model.ips.tasks": text(),
    "optim.name": one_of(*OPTIMIZERS),
    "optim.lr": positive,   # too large diverges: the run stops at the first non-finite loss, naming it
    "optim.b1": real(0.0, 1.0, hi_open=True),
    "optim.b2": real(0.0, 1.0, hi_open=True),
    "optim.weight_decay": real(0.0, HUGE),
    "optim.warmup_epochs": real(0.0, HUGE),
    "optim.schedule": one_of(*SCHEDULES),
    "optim.end_lr_ratio": real(0.0, 1.0),
    "optim.restart_epochs": positive,
    "optim.restart_mult": real(1.0, HUGE),
    "optim.stn_lr_ratio": real(0.0, HUGE),
    "optim.grad_clip": real(0.0, HUGE),
    "checkpoint.async_save": boolean,
    "checkpoint.keep_latest": count,
}


def flat_fields(c: ml_collections.ConfigDict, prefix: str = "") -> dict:
  """{"model.ips.memory": value, ...} for every leaf field."""
  out = {}
  for key, value in c.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(flat_fields(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first field whose value its rule refuses (fields without a rule, which
  config files may add for their own use, are not checked here)."""
  for field, value in flat_fields(config).items():
    rule = RULES.get(field)
    error = rule(value) if rule else None
    if error and error.startswith("choose from"):
      raise ConfigError(f"unknown {field}={value!r}; {error}")
    if error:
      raise ConfigError(f"config.{field}={value!r}: {error}")
