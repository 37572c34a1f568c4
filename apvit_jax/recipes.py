"""Recipes shared by several config files, so config files never import each other. Each function
changes a ConfigDict from `base_config()` in place and returns it; the config files say which they use.
"""
from apvit_jax.base_config import CIFAR10_MEAN, CIFAR10_STD, smoke

CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def smoke_on_digits(c, canvas: int = 0):
  """Offline smoke: the built-in grey digits stand in for the dataset (canvas > 0: that size), no
  colour augmentation, then `smoke`."""
  c.data.name = "cluttered_digits"
  if canvas:
    c.data.canvas = canvas
  c.augment.mean, c.augment.std = (0.5,), (0.5,)
  c.augment.color_jitter_prob = c.augment.grayscale_prob = 0.0
  return smoke(c)


# --- ViT / DPS-ViT comparison on CIFAR-10 (the DPS-ViT paper) ----------------------------------

def dps_paper_cifar10(c):
  """The DPS-ViT paper's CIFAR-10 recipe and encoder, shared by the standard ViT and DPS-ViT."""
  c.data.name = "tfds:cifar10"
  c.batch_size = 256
  c.num_epochs = 150
  c.label_smoothing = 0.1
  c.optim.name = "adamw"
  c.optim.lr = 1e-4
  c.optim.weight_decay = 1e-3
  c.optim.warmup_epochs = 5.0
  c.optim.schedule = "cosine_restarts"
  c.optim.restart_epochs = 40.0
  c.optim.restart_mult = 2.0
  c.optim.end_lr_ratio = 0.0
  c.optim.grad_clip = 0.0
  c.augment.crop_padding = 4
  c.augment.flip = True
  c.augment.rotate_degrees = 15.0
  c.augment.mean, c.augment.std = CIFAR10_MEAN, CIFAR10_STD
  c.model.variant = "S/8"  # patch 8; width, depth and heads below
  c.model.width, c.model.depth, c.model.num_heads = 288, 6, 4
  c.model.dropout = 0.1
  c.log_every_steps = 100
  return c


def dps_front_end(c):
  """DPS-ViT's localisation network and translation-only patches (configs/dps_vit_cifar10.py)."""
  c.model.front_end = "adaptive"
  a = c.model.adaptive
  a.num_patches = 16
  a.transform = "translate"
  a.bound = "tanh"
  a.stn = "dps"
  a.stn_hidden = 32
  a.stn_attn_width = 256
  a.stn_attn_heads = 4
  a.stn_dropout = 0.1
  a.head_hidden = 0
  a.identity_init = False
  a.posemb = "translation"
  a.pos_dim = 32
  return c


# --- a strong ViT-S/4 on CIFAR-10, with and without APViT's front-end ---------------------------

def strong_vit_cifar10(c):
  """ViT-S/4 from scratch on CIFAR-10 (configs/vit_cifar10.py, configs/apvit_cifar10.py)."""
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
  return c


def apvit_front_end(c):
  """APViT: translation, scale and rotation per patch, starting on the ViT grid (configs/apvit_cifar10.py)."""
  c.model.front_end = "adaptive"
  a = c.model.adaptive
  a.num_patches = 0  # the ViT grid's count: 64 for 4×4 patches of a 32×32 image
  a.transform = "scale_rotate"
  a.max_scale = 0.3
  a.bound = "reflect"
  a.identity_init = True
  a.stn = "dps"
  a.stn_hidden = 32
  a.stn_attn_width = 256
  a.stn_attn_heads = 4
  a.head_hidden = 128
  a.posemb = "interpolate"
  a.posemb_lookup = "cell_centres"
  c.optim.stn_lr_ratio = 0.1
  return c


# --- the built-in quickstart ---------------------------------------------------------------------

def quickstart(c):
  """ViT-mu/8 on the built-in cluttered digits, 12 epochs (configs/quickstart.py)."""
  c.data.name = "cluttered_digits"
  c.model.variant = "mu/8"
  c.batch_size = 128
  c.num_epochs = 12
  c.optim.lr = 2e-3
  c.optim.weight_decay = 0.05
  c.optim.warmup_epochs = 1.0
  c.augment.crop_padding = 2
  c.log_every_steps = 20
  return c


def small_adaptive_front_end(c, head_hidden: int = 64):
  """A small CNN localisation network, scale and rotation per patch, from the grid
  (configs/apvit_quickstart.py). The localisation network learns at a tenth of the rate: at the
  quickstart's full rate its runs succeed or fail by seed and by float rounding (docs/RESULTS.md)."""
  c.model.front_end = "adaptive"
  a = c.model.adaptive
  a.transform = "scale_rotate"
  a.max_scale = 0.3
  a.bound = "reflect"
  a.identity_init = True
  a.stn = "cnn"
  a.head_hidden = head_hidden
  a.posemb = "interpolate"
  c.optim.stn_lr_ratio = 0.1
  return c


# --- pixel transformers (PiT) on CIFAR-100 -------------------------------------------------------

def pit_paper_cifar100(c, variant: str):
  """The PiT paper's CIFAR recipe, shared by the PiT and ViT/2 configs."""
  c.data.name = "tfds:cifar100"
  c.model.variant = variant
  c.batch_size = 1024
  c.num_epochs = 200
  c.optim.lr = 0.004
  c.optim.b1, c.optim.b2 = 0.9, 0.95
  c.optim.weight_decay = 0.3
  c.optim.warmup_epochs = 20.0
  c.optim.end_lr_ratio = 1e-6 / 0.004
  c.augment.crop_scale = (0.2, 1.0)
  c.augment.flip = True
  c.augment.color_jitter = (0.4, 0.4, 0.4, 0.1)
  c.augment.color_jitter_prob = 0.8
  c.augment.grayscale_prob = 0.2
  c.augment.mean, c.augment.std = CIFAR100_MEAN, CIFAR100_STD
  c.log_every_steps = 50
  return c


def pit_smoke(c):
  """16×16 built-in digits: 1-pixel patches stay cheap."""
  return smoke_on_digits(c, canvas=16)


# --- IPS -------------------------------------------------------------------------------------------

def ips_megapixel_paper(c):
  """IPS on Megapixel MNIST as the authors released it (configs/ips_megapixel_mnist.py says what)."""
  c.data.name = "megapixel_mnist"
  c.data.digits = "mnist_raw"
  c.data.canvas = 1500
  c.data.num_train, c.data.num_test = 5000, 1000
  c.model.name = "ips"
  c.model.dtype = "float32"   # bf16 trunk: trained as well on a CPU toy (bench/RESULTS.md); GPU memory/speed unmeasured
  i = c.model.ips
  i.encoder, i.num_stages = "resnet18", 2
  i.patch_size = i.patch_stride = 50
  i.memory, i.chunk = 5, 100   # the authors' released setting; M = 100: --config.model.ips.memory=100
  i.dim, i.num_heads, i.head_dim, i.mlp_dim = 128, 8, 16, 512
  i.use_pos = True
  i.dropout = i.attn_dropout = 0.1
  c.augment.mean, c.augment.std = (0.0,), (1.0,)   # pixels in [0, 1], as the reference code feeds them
  c.batch_size = 16
  c.num_epochs = 150
  c.label_smoothing = 0.0
  c.optim.lr = 1e-3
  c.optim.weight_decay = 0.1
  c.optim.warmup_epochs = 10.0
  c.optim.end_lr_ratio = 1e-3
  c.optim.grad_clip = 0.0
  c.log_every_steps = 50
  return c


def ips_megapixel_on_a_cpu(c):
  """The published Megapixel MNIST task and recipe at a size two CPU cores train in minutes: 300² canvases
  (N = 36 patches of 50², not 900) with the published clutter density (50 scribbles per 1500² -> 2 per
  300²), the ResNet-18 trunk at a quarter of its width (16; its convolutions' FLOPs scale with width²),
  15 epochs with one of warm-up. M = 5 as published; I = 100 covers the 36 patches in one iteration."""
  c.data.canvas = 300
  c.data.num_noise = 2
  c.model.ips.width = 16
  c.num_epochs = 15
  c.optim.warmup_epochs = 1.0
  return c


def ips_smoke(c, canvas: int, patch: int):
  """A few IPS steps offline: builtin 28x28 digits, a small canvas, a small encoder."""
  c.data.digits = "builtin"
  c.data.canvas = canvas
  c.data.num_train, c.data.num_test = 32, 16
  i = c.model.ips
  i.num_stages = 1
  i.patch_size = i.patch_stride = patch
  i.memory, i.chunk = 8, 8
  i.dim, i.num_heads, i.head_dim, i.mlp_dim = 64, 2, 8, 64
  c.batch_size = 8
  c.total_steps = 4
  c.log_every_steps = 2
  c.optim.warmup_epochs = 0.0
  c.log_efficiency = True
  return c
