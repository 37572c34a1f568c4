"""config.data -> Dataset, through one table of loaders. Every split implements `types.SplitSource`.

- "cluttered_digits": built in, no download, no files (scikit-learn's bundled 8×8 digits; builtin.py).
- "synthetic:HxWxC:CLASSES": random images of that shape, for benchmarks (builtin.py).
- "cifar10_raw" / "cifar100_raw": the official python batches (`cifar-10-batches-py/`, `cifar-100-python/`);
  "mnist_raw" / "fashion_mnist_raw": MNIST-style idx `.gz` folders (raw.py).
- "tfds:NAME" (e.g. "tfds:cifar10", "tfds:imagenet2012"): `tfds.data_source`, no TensorFlow at train time
  (tfds.py).
- "megapixel_mnist" and "mnist_resized" (MNIST upscaled to data.image_size): large images drawn on demand,
  for IPS (megapixel.py). Their digits come from data.digits: "mnist_raw" (idx files in data.data_dir),
  "tfds:mnist", or "builtin" (scikit-learn's digits at 28x28, offline, for smoke tests).
"""
from __future__ import annotations

from apvit_jax.data import bad_examples, builtin, megapixel, raw, tfds
from apvit_jax.data.types import DataError, Dataset, Split  # noqa: F401  (the public names)

# Re-exported: the loaders by name, for code that reads a dataset without a config.
cluttered_digits, synthetic = builtin.cluttered_digits, builtin.synthetic
load_cifar, load_mnist_idx, load_tfds = raw.load_cifar, raw.load_mnist_idx, tfds.load_tfds


def _data_dir(data_cfg) -> str:
  if not data_cfg.data_dir:
    raise DataError(f"dataset {data_cfg.name!r} reads raw files: set --config.data.data_dir=PATH")
  return data_cfg.data_dir


def digits_28(data_cfg) -> Dataset:
  """28x28 digits for the large-image datasets, from data.digits (see the module docstring)."""
  source = data_cfg.digits
  if source == "builtin":
    return builtin.digits_28()
  if source == "mnist_raw":
    if not data_cfg.data_dir:
      raise DataError("data.digits='mnist_raw' reads MNIST idx files: set --config.data.data_dir=PATH")
    return load_mnist_idx(data_cfg.data_dir)
  if source.startswith("tfds:"):
    return load_tfds(source[5:], data_cfg.data_dir or None, None)
  raise ValueError(f"unknown data.digits={source!r}; choose 'mnist_raw', 'tfds:mnist' or 'builtin'")


LOADERS = {
    "cluttered_digits": lambda d: builtin.cluttered_digits(seed=d.seed, num_train=d.num_train,
                                                           num_test=d.num_test, canvas=d.canvas),
    "cifar10_raw": lambda d: load_cifar(_data_dir(d), 10),
    "cifar100_raw": lambda d: load_cifar(_data_dir(d), 100),
    "mnist_raw": lambda d: load_mnist_idx(_data_dir(d), "mnist"),
    "fashion_mnist_raw": lambda d: load_mnist_idx(_data_dir(d), "fashion_mnist"),
    "megapixel_mnist": lambda d: megapixel.load(d, digits_28(d)),
    "mnist_resized": lambda d: megapixel.load_resized(d, digits_28(d)),
}
# "PREFIX:REST" names: the loader gets the whole name.
PREFIXED = {
    "tfds:": lambda d: load_tfds(d.name[5:], d.data_dir or None, d.image_size or None, in_memory=d.in_memory),
    "synthetic:": lambda d: synthetic(d.name, d.num_train, d.num_test, d.seed),
}


def load(data_cfg) -> Dataset:
  """config.data -> Dataset. Raises DataError/ValueError before anything is compiled. Streamed splits come
  wrapped in `bad_examples.GuardedSplit` (an unreadable example: a clear error, or a counted replacement
  with data.skip_bad_examples)."""
  name = data_cfg.name
  loader = LOADERS.get(name) or next((f for p, f in PREFIXED.items() if name.startswith(p)), None)
  if loader is None:
    raise ValueError(f"unknown dataset name {name!r}; choose from {tuple(LOADERS)}, 'tfds:NAME' or "
                     f"'synthetic:HxWxC:CLASSES'")
  return bad_examples.guard(loader(data_cfg), data_cfg.skip_bad_examples)
