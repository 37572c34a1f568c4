"""PiT-T (pixel transformer, "An Image is Worth More Than 16x16 Patches") on CIFAR-100: a ViT-Ti on 1×1
patches, 1,024 pixel tokens + cls, learned position embeddings, 5.56 M parameters.

  python train.py --config=configs/pit_t_cifar100.py --workdir=workdirs/pit_t_cifar100

Data: tfds `cifar100` (prepare once with internet and TensorFlow: `tfds build cifar100`), or the official
python batches offline: --config.data.name=cifar100_raw --config.data.data_dir=/path/containing/cifar-100-python
Recipe (published): AdamW lr 0.004, betas (0.9, 0.95), weight decay 0.3, global batch 1024, 20 warm-up
epochs then cosine to 1e-6, MoCo-v3 augmentation (random resized crop 32, scale (0.2, 1), colour jitter
0.4/0.4/0.4/0.1 with p 0.8, grayscale p 0.2, horizontal flip), all on device inside the compiled step;
compute dtype "auto" (bf16 on GPU/TPU, float32 on CPU), cuDNN attention on GPU where available.
Epochs: `num_epochs` (default 200). The paper trains far longer (its appendix; we have not re-checked
the exact count). One GPU hour is about 230 epochs at the 3,260 images/s a plain JAX + cuDNN
implementation reached on an H100; our own throughput and accuracy are not measured yet (no GPU was
available to this task). For memory, --config.model.remat=True recomputes activations in the backward pass.
Smoke: --config=configs/pit_t_cifar100.py:smoke (tiny model on 16×16 built-in digits, offline).
"""
from apvit_jax.base_config import apply_arg, base_config
from apvit_jax import recipes


def get_config(arg: str | None = None):
  return apply_arg(recipes.pit_paper_cifar100(base_config(), "Ti/1"), arg, recipes.pit_smoke)
