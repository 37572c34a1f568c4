"""ViT-S/4 from scratch on CIFAR-10 (64 patches of 4×4 + cls, 21.3 M parameters).

  python train.py --config=configs/vit_cifar10.py --workdir=workdirs/vit_cifar10

Data: tfds `cifar10` (prepare once with internet and TensorFlow: `tfds build cifar10`), or the official
python batches offline:
  --config.data.name=cifar10_raw --config.data.data_dir=/path/containing/cifar-10-batches-py
Recipe: AdamW lr 1e-3, wd 0.05, batch 512, 200 epochs, 10 warm-up epochs then cosine, label smoothing
0.1, random crop (pad 4) + flip, drop path 0.1, bf16 compute on GPU/TPU (model.dtype "auto"; float32 on CPU).
Measured: 18,700 images/s training on one H100 (bf16, batch 512, on-device augmentation included;
bench/RESULTS.md), so 200 epochs take about 10 minutes there; the 200-epoch accuracy has not been
measured yet. On 2 CPU cores this model is far too slow to train; use configs/quickstart.py.
Smoke: --config=configs/vit_cifar10.py:smoke (tiny model, a few steps on the built-in digits, offline).
"""
from apvit_jax.base_config import CIFAR10_MEAN, CIFAR10_STD, base_config, smoke


def get_config(arg: str | None = None):
  c = base_config()
  c.data.name = "tfds:cifar10"
  c.model.variant = "S/4"
  c.model.drop_path = 0.1
  c.batch_size = 512
  c.num_epochs = 200
  c.label_smoothing = 0.1
  c.optim.lr = 1e-3
  c.optim.weight_decay = 0.05
  c.optim.warmup_epochs = 10.0
  c.optim.end_lr_ratio = 1e-2
  c.augment.crop_padding = 4
  c.augment.flip = True
  c.augment.mean, c.augment.std = CIFAR10_MEAN, CIFAR10_STD
  c.log_every_steps = 100
  if arg == "smoke":
    # Offline: the built-in digits stand in for CIFAR-10 (40×40 grey; patch 4 still divides it).
    c.data.name = "cluttered_digits"
    c.augment.mean, c.augment.std = (0.5,), (0.5,)
    smoke(c)
  elif arg:
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke' or nothing")
  return c
