"""The standard ViT of the DPS-ViT comparison on CIFAR-10: 16 patches of 8×8 by a conv embedding, width
288, 6 pre-LN layers, 4 heads, MLP ×4, dropout 0.1, cls token, learned position embeddings.

  python train.py --config=configs/std_vit_cifar10.py --workdir=workdirs/std_vit_cifar10

Data: tfds `cifar10` (prepare once with internet and TensorFlow: `tfds build cifar10`), or the official
python batches offline:
  --config.data.name=cifar10_raw --config.data.data_dir=/path/containing/cifar-10-batches-py
Recipe (published, identical for configs/dps_vit_cifar10.py): 150 epochs, batch 256, AdamW lr 1e-4,
weight decay 1e-3 (here on kernels only), 5 warm-up epochs then cosine warm restarts (T0 = 40 epochs,
Tmult = 2, stepped per step rather than per epoch), label smoothing 0.1, random crop (pad 4) + flip +
rotation ±15°, CIFAR mean/std normalisation, no gradient clipping; compute dtype "auto": bf16 on GPU/TPU,
float32 on CPU (the published runs used fp16 AMP).
Published (clean CIFAR-10, best epoch): 72.85 %; the published PyTorch code on the JPEG-75 copy: 72.36 %
best / 71.30 % final. Ours: not measured yet (no GPU was available to this task).
Smoke: --config=configs/std_vit_cifar10.py:smoke (tiny model, a few steps on the built-in digits, offline).
"""
from apvit_jax.base_config import apply_arg, base_config
from apvit_jax import recipes


def get_config(arg: str | None = None):
  return apply_arg(recipes.dps_paper_cifar10(base_config()), arg, recipes.smoke_on_digits)
