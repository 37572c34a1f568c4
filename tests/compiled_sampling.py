"""What the compiled train step really samples, against float64 NumPy: the crop augmentation's images and
the adaptive front-end's patches, captured inside the step (jax.debug.callback) as train.py compiles it.

Run in a subprocess at XLA's default optimisation level (tests/test_compiled_sampling.py): the suite
compiles at level 0 (conftest.py), where the defect these guard against (coordinates recomputed in two
fusions that rounded whole-pixel positions apart, reads a whole pixel off) did not show.
"""
from __future__ import annotations

import dataclasses
import types

import jax
import numpy as np

import numpy_sampler as ref
from apvit_jax.base_config import set_fields
from apvit_jax.data import augment
from apvit_jax.models import adaptive
from apvit_jax.models.families.base import fetch
from apvit_jax.training import feed, run as run_lib, step as step_lib
from bench.step_bench import load_config


def _capture(seen: list, *arrays) -> None:
  """Appends the arrays' values, as the compiled step computes them, to `seen` (a vmapped step's
  replicas arrive stacked or one by one: both are kept)."""
  jax.debug.callback(lambda *a: seen.append(tuple(np.asarray(x, np.float64) for x in a)), *arrays)


def _step_once(config_name: str, overrides: dict, capture_model_input: list | None = None):
  """Sets up the smoke run of configs/<config_name>.py with overrides and runs its compiled train step
  once on the first batch. -> (run, host batch, train key)."""
  config = set_fields(load_config(config_name, "smoke"), {"optim.name": "sgd", "optim.grad_clip": 0.0,
                                                         "total_steps": 3, **overrides})
  run = run_lib.setup(config, devices=jax.devices()[:1])
  if capture_model_input is not None:
    apply = run.state.apply_fn

    def apply_and_capture(variables, images, **kwargs):
      _capture(capture_model_input, images)
      return apply(variables, images, **kwargs)
    run = dataclasses.replace(run, state=run.state.replace(apply_fn=apply_and_capture))
  par, key = run.par, run_lib.train_key(run)
  batch = feed.train_batch_maker(run, on_host=True)(0)
  data = feed.device_data(par, run.dataset.train)
  jax.block_until_ready(run_lib.compile_train_step(run)(par.replicate(run.state), data, par.shard(batch), key))
  return run, batch, key


def _stacked(seen: list, count: int) -> np.ndarray:
  """The captured (B, ...) arrays of `count` replicas as (count, B, ...), whichever way vmap sent them."""
  arrays = [a[0] for a in seen]
  return np.stack(arrays) if len(arrays) == count else arrays[0].reshape(count, *arrays[0].shape[1:])


def crop_error(aug: dict, num_seeds: int = 1) -> float:
  """The largest difference between the images the model receives inside the compiled train step and a
  float64 NumPy crop (flip, rotation) of the same images with the same draws, in normalised units, over
  every replica (num_seeds > 1: the replicated step). Quickstart config: 40x40 digits, whole-pixel crops
  (crop_padding 2), or random resized crops with augment.crop_scale."""
  seen = []
  run, batch, key = _step_once("quickstart", {**aug, "num_seeds": num_seeds}, seen)
  a, (h, w) = run.config.augment, run.dataset.image_shape[:2]
  padding = "border" if a.crop_scale[1] > 0 else "zeros"   # as augment.augment pads
  keys, got = key.reshape(num_seeds), _stacked(seen, num_seeds)
  errors = []
  for r in range(num_seeds):
    one = {k: v.reshape(v.shape[0], num_seeds)[:, r] for k, v in batch.items()}
    draws = augment.example_keys(step_lib.inputs_key(keys[r], 0), one["position"])
    theta = np.asarray(jax.vmap(lambda k: augment.random_affine(
        k, h, w, a.crop_padding, a.flip, a.rotate_degrees, tuple(a.crop_scale), tuple(a.crop_ratio)))(draws))
    images, _ = fetch(run.dataset.train.arrays(), one)
    want = ref.grid_sample(np.asarray(images, np.float64), ref.affine_grid(theta.astype(np.float64), h, w, False),
                           padding, False)
    errors.append(np.max(np.abs(got[r] - (want / 255.0 - np.asarray(a.mean)) / np.asarray(a.std))))
  return float(max(errors))


def patch_error(config_name: str, overrides: dict, patch_sampler: str = "gather") -> float:
  """The largest difference between the patches an adaptive front-end cuts inside the compiled train step
  (with model.adaptive.patch_sampler) and float64 NumPy sampling of the same images with the same maps (both
  captured there). The smoke runs start from the identity: every patch exactly on the regular grid, every
  sample on a pixel centre."""
  seen = []
  module, name = (("separable_sampler", "sample_patches_axis_aligned") if patch_sampler == "separable"
                  else ("sampler", "sample_patches"))
  real = getattr(adaptive, module)

  def sample_and_capture(images, theta, *args, **kwargs):
    patches = getattr(real, name)(images, theta, *args, **kwargs)
    _capture(seen, images, theta, patches)
    return patches
  setattr(adaptive, module, types.SimpleNamespace(**{**vars(real), name: sample_and_capture}))
  try:
    _step_once(config_name, {**overrides, "model.adaptive.patch_sampler": patch_sampler})
  finally:
    setattr(adaptive, module, real)
  errors = []
  for images, theta, patches in seen:   # the training forward (and any re-trace: each is checked)
    p = patches.shape[2]
    want = ref.grid_sample(images, ref.affine_grid(theta, p, p, False), "zeros", False)
    errors.append(np.max(np.abs(patches - want)))
  assert errors, f"the front-end's {name} was never called"
  return float(max(errors))
