"""Quickstart: a small ViT on the built-in cluttered digits. Offline, no files, no download.

  python train.py --config=configs/quickstart.py --workdir=workdirs/quickstart

Data: built in (scikit-learn's 8×8 digits on a 40×40 cluttered canvas), 10,000 train / 2,000 test.
Model: ViT-mu/8 (width 64, 4 layers, 4 heads), 25 patches + cls, 0.2 M parameters.
Measured: 83.75 % test accuracy (chance is 10 %) after 12 epochs (936 steps), identical across
repeated runs; about 2 minutes on 2 CPU cores.
Smoke: --config=configs/quickstart.py:smoke (a few steps, seconds).
"""
from apvit_jax.base_config import base_config, smoke


def get_config(arg: str | None = None):
  c = base_config()
  c.data.name = "cluttered_digits"
  c.model.variant = "mu/8"
  c.batch_size = 128
  c.num_epochs = 12
  c.optim.lr = 2e-3
  c.optim.weight_decay = 0.05
  c.optim.warmup_epochs = 1.0
  c.augment.crop_padding = 2
  c.log_every_steps = 20
  if arg == "smoke":
    smoke(c)
  elif arg:
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke' or nothing")
  return c
