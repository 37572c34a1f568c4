"""ViT-T/2 on CIFAR-100, the baseline of the pixel-transformer comparison: 2×2 patches, 256 tokens + cls.

  python train.py --config=configs/vit_t2_cifar100.py --workdir=workdirs/vit_t2_cifar100

Data and recipe: exactly those of configs/pit_t_cifar100.py (shared `recipes.pit_paper_cifar100`), so PiT-T and ViT-T/2
differ only in the patch size. About a quarter of PiT-T's encoder FLOPs.
Measured: not yet (no GPU was available to this task).
Smoke: --config=configs/vit_t2_cifar100.py:smoke (tiny model on 16×16 built-in digits, offline).
"""
from apvit_jax.base_config import apply_arg, base_config
from apvit_jax import recipes


def get_config(arg: str | None = None):
  return apply_arg(recipes.pit_paper_cifar100(base_config(), "Ti/2"), arg, recipes.pit_smoke)
