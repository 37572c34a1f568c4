"""Every config field with its default. Config files start from `base_config()` and override fields,
so `--config.FIELD=VALUE` on a field that does not exist is an error naming it."""
from __future__ import annotations

import ml_collections

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = 1              # K > 1: K independent replicas (seeds seed..seed+K-1) in one compiled step
  c.replica_loop = "auto"     # num_seeds > 1: "vmap" (each operation K replicas wide, compiled once),
                               # "unroll" (K copies of the step in one program: compile time grows with K,
                               # 2x at K = 3), or "auto": vmap on GPU/TPU, unroll on CPU, where vmapped
                               # replicas train at 0.5-1.0 of K separate runs' speed (IPS 0.65) and
                               # unrolled ones at ~1.0 (bench/RESULTS.md)
  c.parallel = "pmap"          # "pmap" or "shard_map" (jit over a Mesh)
  c.distributed = "auto"       # jax.distributed.initialize(): "true", "false", or "auto" (cluster detected)
  c.batch_size = 128           # global, over all devices and hosts
  c.num_epochs = 10.0
  c.total_steps = 0            # > 0 overrides num_epochs
  c.num_classes = 0            # 0: from the dataset; otherwise checked against it
  c.label_smoothing = 0.0
  c.eval_every_epochs = 1
  c.log_every_steps = 50
  c.progress_bar = True
  c.compilation_cache = True   # keep compiled programs in WORKDIR/compilation_cache (resume, eval.py, reruns)
  c.steps_per_call = 1         # > 1: that many train steps in one compiled call (a lax.scan; fewer
                               # dispatches for short steps); calls stop at epoch ends, SIGTERM is
                               # answered between calls
  c.donate_state = "auto"      # the train step writes the new state over the old one's memory: "true",
                               # "false", or "auto": true on GPU/TPU (device memory), false on CPU, where
                               # XLA then copies every parameter and moment each step (6-9 % of a ViT step,
                               # bench/RESULTS.md) and memory is plentiful
  c.skip_nonfinite_steps = False  # True: a step with a NaN/inf loss or gradient changes nothing (counted
                                 # as "skipped" in the logs); False: the run stops with the step named
  c.init_from = ""             # a vision_transformer-style .npz: start from its weights (new runs only)

  c.data = ml_collections.ConfigDict()
  c.data.name = "cluttered_digits"  # see apvit_jax/data/sources.py
  c.data.data_dir = ""
  c.data.in_memory = True      # tfds only: False streams from disk (needs image_size)
  c.data.image_size = 0        # tfds streaming: resize + centre crop to this size
  c.data.skip_bad_examples = False  # streamed data: an unreadable example is replaced by the next readable
                                    # one and counted (bad_examples in the logs); False: the run stops naming it
  c.data.workers = -1          # streamed data (tfds from disk, Megapixel canvases): grain worker processes
                               # that read/draw batches; 0: in the training process; -1: one per spare CPU
                               # core (<= 16), none below 4 cores (data/host_pipeline.py says why)
  c.data.seed = 0              # cluttered_digits only
  c.data.num_train = 10_000
  c.data.num_test = 2_000
  c.data.canvas = 40
  c.data.num_noise = 50        # megapixel_mnist: noise scribbles per canvas (50 on the published 1500²)
  c.data.digits = "mnist_raw"   # megapixel_mnist / mnist_resized: "mnist_raw", "tfds:mnist" or "builtin"

  c.augment = ml_collections.ConfigDict()
  c.augment.crop_padding = 0   # random crop after zero padding by this many pixels
  c.augment.flip = False
  c.augment.rotate_degrees = 0.0
  c.augment.crop_scale = (0.0, 0.0)   # (lo, hi) > 0: random resized crop of that area fraction instead
  c.augment.crop_ratio = (3 / 4, 4 / 3)
  c.augment.color_jitter = (0.0, 0.0, 0.0, 0.0)  # brightness, contrast, saturation, hue strengths
  c.augment.color_jitter_prob = 0.0
  c.augment.grayscale_prob = 0.0
  c.augment.mean = (0.5,)
  c.augment.std = (0.5,)

  c.model = ml_collections.ConfigDict()
  c.model.name = "vit"
  c.model.variant = "Ti/16"    # NAME/PATCH, NAME in mu, Ti, S, M, B, L
  c.model.patch_size = 0       # > 0 overrides the variant's patch size
  c.model.width = 0            # > 0 overrides the variant's width (likewise depth, num_heads)
  c.model.depth = 0
  c.model.num_heads = 0
  c.model.mlp_ratio = 4
  c.model.posemb = "learn"     # or "sincos2d"
  c.model.pool = "token"       # or "gap"
  c.model.dropout = 0.0
  c.model.drop_path = 0.0
  c.model.dtype = "auto"       # compute dtype (parameters stay float32): "auto" = bfloat16 on GPU/TPU,
                               # float32 on CPU; or "float32" / "bfloat16" as given
  c.model.attention_impl = "auto"  # "auto": cuDNN on GPU in bf16 where it takes the shapes, else XLA
  c.model.remat = False        # recompute each block's activations in the backward pass (less memory):
                               # the ViT's encoder blocks; IPS's ResNet stem and residual blocks
  c.model.scan_layers = False  # nn.scan over the blocks (compile time independent of depth)
  c.model.front_end = "grid"   # "grid" (ViT, PiT) or "adaptive" (DPS-ViT, APViT: model.adaptive.*)

  a = c.model.adaptive = ml_collections.ConfigDict()  # see apvit_jax/models/adaptive.py
  a.num_patches = 0            # 0: the ViT grid's count
  a.transform = "translate"    # translate (DPS) | scale | aniso_scale | scale_rotate (APViT) |
                               # aniso_scale_rotate | affine | projective  (apvit_jax/patch_params.py)
  a.bound = "tanh"             # translation bound: "tanh" (published) or "reflect" (reaches the border)
  a.translate_range = "inside"  # "inside": t scaled so patches stay in the image (DPS-ViT document);
                               # "full": unscaled t, patches may overhang (the published DPS-ViT code)
  a.max_scale = 0.5
  a.max_perspective = 0.25     # projective only
  a.stn = "dps"                # localisation net: "dps" (conv + channel attention) or "cnn"
  a.stn_hidden = 32
  a.stn_attn_width = 256
  a.stn_attn_heads = 4
  a.stn_dropout = 0.0
  a.head_hidden = 0            # > 0: a hidden ReLU layer in the per-patch head
  a.identity_init = False      # start on the regular ViT grid (needs bound="reflect")
  a.posemb = "interpolate"     # interpolate (APViT) | translation (DPS, concatenated) | learn | none
  a.pos_dim = 32               # posemb="translation": width of the concatenated code
  a.posemb_lookup = "cell_centres"  # or "seed" (the published align-corners mapping)
  a.patch_sampler = "gather"   # "gather" (every transform) or "separable": axis-aligned transforms as two
                               # small matmuls per patch (same result; slower on CPU, measured)

  i = c.model.ips = ml_collections.ConfigDict()  # model.name="ips": apvit_jax/models/ips.py
  i.encoder = "resnet18"       # resnet18 | resnet50 | features (LayerNorm -> Linear -> BN -> ReLU)
  i.num_stages = 2             # ResNet stages kept (1..4)
  i.width = 64                 # the ResNet's first-stage width (64 as published; stage s has width·2^s)
  i.patch_size = 50
  i.patch_stride = 50
  i.memory = 100               # M: patches kept and re-encoded with gradients
  i.chunk = 100                # I: patches scored per iteration of the selection scan
  i.loading = "eager"          # eager | eager_sequential | lazy (patches stay on the host)
  i.dim = 128                  # D
  i.num_heads = 8
  i.head_dim = 16              # d_k = d_v
  i.mlp_dim = 512
  i.num_tokens = 0             # 0: one query token per task
  i.use_pos = True             # 1-D sinusoidal code of the patch index, for scoring and the final pass
  i.dropout = 0.1
  i.attn_dropout = 0.1
  i.tasks = ""                 # comma-separated subset of the dataset's tasks; "": all of them
  c.log_efficiency = False     # log ms per step and peak device memory at every log step

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"       # or "sgd" (momentum = b1)
  c.optim.lr = 1e-3
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 0.05
  c.optim.warmup_epochs = 1.0
  c.optim.schedule = "cosine"  # after warm-up: "cosine" (one decay) or "cosine_restarts" (SGDR)
  c.optim.end_lr_ratio = 0.0   # cosine decays to lr * end_lr_ratio
  c.optim.restart_epochs = 40.0  # cosine_restarts: first cycle length, each next one restart_mult x
  c.optim.restart_mult = 2.0
  c.optim.stn_lr_ratio = 1.0   # learning rate of the localisation network (params under "stn") x this
  c.optim.grad_clip = 1.0      # global-norm clipping; 0 disables

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.async_save = True
  c.checkpoint.keep_latest = 1   # the best-by-test-accuracy step is kept as well
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A tiny model and a few steps on offline data: under a minute on CPU."""
  c.model.variant = "mu/" + c.model.variant.split("/")[1]
  c.model.width = c.model.depth = c.model.num_heads = 0
  c.model.dtype = "float32"
  a = c.model.adaptive
  a.stn_hidden, a.stn_attn_width = min(a.stn_hidden, 8), min(a.stn_attn_width, 32)
  a.head_hidden = min(a.head_hidden, 16)
  a.pos_dim = min(a.pos_dim, 16)
  c.total_steps = 6
  c.batch_size = 16
  c.log_every_steps = 2
  if c.data.name == "cluttered_digits":
    c.data.num_train, c.data.num_test = 64, 40
  c.optim.warmup_epochs = 0.0
  return c


def set_fields(c: ml_collections.ConfigDict, values: dict) -> ml_collections.ConfigDict:
  """Sets dotted fields ({"model.ips.memory": 8, ...}) in place. A field that does not exist is an error
  naming it, as on the command line (ConfigDict.update_from_flattened_dict would skip it silently, and
  an unlocked ConfigDict would add it), so a typo in a benchmark's --set or a test's override fails."""
  for key, value in values.items():
    node = c
    *parents, leaf = key.split(".")
    for depth, name in enumerate([*parents, leaf]):
      if not isinstance(node, ml_collections.ConfigDict) or name not in node:
        known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        raise KeyError(f"unknown config field {key!r}: {'.'.join([*parents, leaf][:depth + 1])!r} does not "
                       f"exist (fields there: {known})")
      if depth < len(parents):
        node = node[name]
    node[leaf] = value
  return c


def apply_arg(c: ml_collections.ConfigDict, arg: str | None, smoke_fn=None) -> ml_collections.ConfigDict:
  """The one parse of a config file's argument (configs/NAME.py[:ARG]): none -> c as is; "smoke" ->
  smoke_fn(c) (default `smoke`); anything else is an error naming the choices."""
  if arg == "smoke":
    return (smoke_fn or smoke)(c)
  if arg:
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke' or nothing")
  return c
