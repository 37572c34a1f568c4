"""PiT-S on ImageNet at 28×28: 784 pixel tokens + cls, for users who have ImageNet prepared in tfds.

  python train.py --config=configs/pit_s_imagenet28.py --workdir=workdirs/pit_s_imagenet28

Data: tfds `imagenet2012` (prepare it yourself: the archives need a manual download), streamed from disk,
resized and centre-cropped to 28×28 on the host by a thread pool, augmented on device. Variant B:
--config.model.variant=B/1.
Recipe: the CIFAR recipe of configs/pit_t_cifar100.py (AdamW lr 0.004, betas (0.9, 0.95), wd 0.3, batch
1024, 20 warm-up epochs then cosine, MoCo-v3 augmentation), 100 epochs, ImageNet mean/std.
Measured: not yet (no ImageNet and no GPU here).
Smoke: --config=configs/pit_s_imagenet28.py:smoke (tiny model on 16×16 built-in digits, offline).
"""
from apvit_jax.base_config import apply_arg, base_config
from apvit_jax import recipes


def get_config(arg: str | None = None):
  c = recipes.pit_paper_cifar100(base_config(), "S/1")
  c.data.name = "tfds:imagenet2012"
  c.data.in_memory = False
  c.data.image_size = 28
  c.num_epochs = 100
  c.augment.mean, c.augment.std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  return apply_arg(c, arg, recipes.pit_smoke)   # smoke: the built-in digits stand in for ImageNet
