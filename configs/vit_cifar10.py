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
from apvit_jax.base_config import apply_arg, base_config
from apvit_jax import recipes


def get_config(arg: str | None = None):
  return apply_arg(recipes.strong_vit_cifar10(base_config()), arg, recipes.smoke_on_digits)
