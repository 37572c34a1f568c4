"""Data sources (raw files, built-in, tfds mock), augmentation vs NumPy, deterministic batch order."""
import gzip
import hashlib
import pickle

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from apvit_jax.base_config import base_config
from apvit_jax import sampler
from apvit_jax.data import augment, batches, sources


def data_config(**fields) -> ml_collections.ConfigDict:
  """config.data with the defaults of base_config and these fields."""
  return ml_collections.ConfigDict({**base_config().data.to_dict(), **fields})


def test_mnist_exact(shared_data):
  ds = sources.load_mnist_idx(shared_data / "mnist")
  assert ds.train.images.shape == (60_000, 28, 28, 1) and ds.test.images.shape == (10_000, 28, 28, 1)
  # The README gives the md5 of the official uncompressed train-images file; rebuild it from our array.
  header = bytes([0, 0, 8, 3]) + (60_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
  assert hashlib.md5(header + ds.train.images.tobytes()).hexdigest() == "6bbc9ace898e44ae57da46a324031adb"
  assert np.bincount(ds.train.labels).tolist()[:3] == [5923, 6742, 5958]


def test_fashion_mnist_subset(shared_data):
  ds = sources.load_mnist_idx(shared_data / "fashion_mnist_subset", "fashion_mnist")
  assert len(ds.train) == 8226 and len(ds.test) == 6978 and ds.num_classes == 10


def test_cifar10_batches(shared_data):
  ds = sources.load_cifar(shared_data / "cifar10_jpeg75", 10)
  assert ds.train.images.shape == (50_000, 32, 32, 3) and len(ds.test) == 10_000
  assert np.bincount(ds.train.labels).tolist() == [5000] * 10
  with open(shared_data / "cifar10_jpeg75" / "cifar-10-batches-py" / "test_batch", "rb") as f:
    raw = pickle.load(f, encoding="bytes")
  i = np.random.default_rng().integers(10_000)
  # Channels-last layout: pixel (r, c) channel k is data[k * 1024 + r * 32 + c].
  r, c = np.random.default_rng().integers(32, size=2)
  assert [ds.test.images[i, r, c, k] for k in range(3)] == [raw[b"data"][i][k * 1024 + r * 32 + c]
                                                            for k in range(3)]


def test_cifar100_official_layout(tmp_path):
  """A synthetic CIFAR-100 in the official pickle layout: bytes keys, R/G/B planes, fine labels."""
  rng = np.random.default_rng()
  folder = tmp_path / "cifar-100-python"
  folder.mkdir()
  images = {}
  for split, n in (("train", 6), ("test", 4)):
    images[split] = rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)
    record = {b"data": images[split].transpose(0, 3, 1, 2).reshape(n, 3072),
              b"fine_labels": rng.integers(0, 100, n).tolist(), b"coarse_labels": [0] * n}
    with open(folder / split, "wb") as f:
      pickle.dump(record, f, protocol=4)
  ds = sources.load_cifar(tmp_path, 100)
  np.testing.assert_array_equal(ds.train.images, images["train"])
  np.testing.assert_array_equal(ds.test.images, images["test"])
  assert ds.num_classes == 100
  (folder / "test").write_bytes(b"not a pickle")
  with pytest.raises(sources.DataError, match="cannot read CIFAR batch"):
    sources.load_cifar(folder, 100)


def write_idx(path, array):
  header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_idx_roundtrip_and_truncated(tmp_path):
  rng = np.random.default_rng()
  imgs, labels = rng.integers(0, 256, (7, 5, 4)), rng.integers(0, 10, 7)
  for prefix, n in (("train", 7), ("t10k", 3)):
    write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", imgs[:n])
    write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels[:n])
  ds = sources.load_mnist_idx(tmp_path)
  np.testing.assert_array_equal(ds.train.images[..., 0], imgs)
  np.testing.assert_array_equal(ds.test.labels, labels[:3])
  raw = gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz").read()
  with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
    f.write(raw[:-5])
  with pytest.raises(sources.DataError, match="truncated"):
    sources.load_mnist_idx(tmp_path)


def test_missing_files_named(tmp_path):
  with pytest.raises(sources.DataError, match="data_batch_1"):
    sources.load_cifar(tmp_path, 10)
  with pytest.raises(sources.DataError, match="train-images-idx3-ubyte"):
    sources.load_mnist_idx(tmp_path)
  cfg = ml_collections.ConfigDict({"name": "cifar10_raw", "data_dir": ""})
  with pytest.raises(sources.DataError, match="data_dir"):
    sources.load(cfg)
  with pytest.raises(ValueError, match="unknown dataset name 'imagenet'"):
    sources.load(ml_collections.ConfigDict({"name": "imagenet"}))


def test_cluttered_digits_deterministic():
  a = sources.cluttered_digits(seed=3, num_train=50, num_test=20, canvas=32)
  b = sources.cluttered_digits(seed=3, num_train=50, num_test=20, canvas=32)
  c = sources.cluttered_digits(seed=4, num_train=50, num_test=20, canvas=32)
  np.testing.assert_array_equal(a.train.images, b.train.images)
  assert not np.array_equal(a.train.images, c.train.images)
  assert a.train.images.shape == (50, 32, 32, 1) and a.train.images.dtype == np.uint8
  assert set(np.unique(a.train.labels)) <= set(range(10)) and len(np.unique(a.train.labels)) > 5


def test_bundled_digits_are_scikit_learns_without_importing_it():
  """The built-in digits read scikit-learn's file directly (importing scikit-learn costs seconds per
  process): the same arrays as load_digits, and scikit-learn is not imported on the way. Both in processes
  of their own: scikit-learn imported here brings joblib's loky into this test process, and a later
  host-pipeline test in it then warned ~50 times about loky semaphores (CPython's resource tracker)."""
  import subprocess
  import sys
  same = ("import numpy as np; from sklearn.datasets import load_digits; from apvit_jax.data import builtin\n"
          "images, labels = builtin.bundled_digits(); want = load_digits()\n"
          "assert images.shape == (1797, 8, 8), images.shape\n"
          "np.testing.assert_array_equal(images, want.images); np.testing.assert_array_equal(labels, want.target)")
  not_imported = ("import sys; from apvit_jax.data import builtin; builtin.cluttered_digits(num_train=4, num_test=4)\n"
                  "assert 'sklearn' not in sys.modules, 'sklearn was imported'")
  for code in (same, not_imported):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_tfds_mock():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12):
    ds = sources.load(data_config(name="tfds:mnist", data_dir="", image_size=0, in_memory=True))
    assert ds.train.images.shape == (12, 28, 28, 1) and ds.num_classes == 10
    stream = sources.load_tfds("imagenet2012", None, 24, in_memory=False)
    images, labels = stream.train.get([0, 5, 2])
    assert images.shape == (3, 24, 24, 3) and labels.shape == (3,)


def numpy_crop_flip(image, shift_x, shift_y, flip):
  """torchvision semantics: output pixel (r, c) reads input (r + dy, c' + dx) with zero padding."""
  h, w, _ = image.shape
  out = np.zeros(image.shape, np.float64)
  for r in range(h):
    for c in range(w):
      src_c = (w - 1 - c if flip else c) + shift_x
      src_r = r + shift_y
      if 0 <= src_r < h and 0 <= src_c < w:
        out[r, c] = image[src_r, src_c]
  return out


@pytest.mark.parametrize("w", [16, 12])
def test_crop_flip_copies_pixels(w):
  rng = np.random.default_rng()
  images = rng.integers(0, 256, (6, 8, w, 3)).astype(np.uint8)
  keys = augment.example_keys(jax.random.key(int(rng.integers(1 << 30))), jnp.arange(6))
  got = np.asarray(augment.augment(jnp.asarray(images), keys, crop_padding=3, flip=True))
  thetas = jax.vmap(lambda k: augment.random_affine(k, 8, w, 3, True, 0.0))(keys)
  for i, th in enumerate(np.asarray(thetas)):
    flip = th[0, 0] < 0
    sx, sy = round(th[0, 2] * w / 2), round(th[1, 2] * 8 / 2)
    assert abs(sx) <= 3 and abs(sy) <= 3
    # Flip is about the image centre, then the shift: whole pixels copied, bit-exact at every size.
    np.testing.assert_array_equal(got[i], numpy_crop_flip(images[i], sx, sy, flip))


@pytest.mark.parametrize("crop_padding,flip", [(3, True), (2, False), (0, True)])
def test_pixel_copy_equals_the_affine_sampler(crop_padding, flip):
  """The whole-pixel fast path against the general one (the same draws' map through grid_sample), on
  float images; 16 wide, so the map's offsets are exact in float32 and the sampler copies pixels too."""
  rng = np.random.default_rng()
  images = jnp.asarray(rng.normal(size=(32, 8, 16, 2)), jnp.float32)
  keys = augment.example_keys(jax.random.key(int(rng.integers(1 << 30))), jnp.arange(32))
  got = augment.padded_crop_and_flip(images, keys, crop_padding, flip)
  theta = jax.vmap(lambda k: augment.random_affine(k, 8, 16, crop_padding, flip, 0.0))(keys)
  want = sampler.grid_sample(images, sampler.affine_grid(theta, (8, 16)), padding_mode="zeros")
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  flipped = np.asarray(theta)[:, 0, 0] < 0
  assert (flipped.any() and not flipped.all()) if flip else not flipped.any()   # 32 fair draws: p = 2^-31
  if crop_padding:
    assert len(np.unique(np.round(np.asarray(theta)[:, :, 2] * 4))) > 3   # several shifts drawn


@pytest.mark.slow
def test_rotation_keeps_centre_and_mass():
  rng = np.random.default_rng()
  images = rng.integers(0, 256, (4, 17, 17, 1)).astype(np.uint8)
  keys = augment.example_keys(jax.random.key(0), jnp.arange(4))
  got = np.asarray(augment.augment(jnp.asarray(images), keys, rotate_degrees=15.0))
  # Odd size: the centre pixel maps to itself under rotation about the centre.
  np.testing.assert_allclose(got[:, 8, 8], images[:, 8, 8].astype(np.float32), atol=1e-3)
  assert not np.allclose(got, images)


def test_normalise():
  x = np.random.default_rng().integers(0, 256, (2, 3, 3, 3)).astype(np.uint8)
  mean, std = (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)
  want = (x / 255.0 - np.array(mean)) / np.array(std)
  # float32: |want| <= 2, so a few ulp is ~1e-6 absolute.
  np.testing.assert_allclose(np.asarray(augment.normalise(jnp.asarray(x), mean, std)), want, rtol=1e-6,
                             atol=2e-6)


def test_batch_order_deterministic_and_covering():
  n, b = 103, 10
  idx = [batches.train_indices(7, s, n, b) for s in range(10)]  # one epoch = 10 steps
  flat = np.concatenate(idx)
  assert len(np.unique(flat)) == 100  # no repeats within an epoch
  np.testing.assert_array_equal(batches.train_indices(7, 4, n, b), idx[4])
  assert not np.array_equal(batches.train_indices(7, 10, n, b), idx[0])  # next epoch reshuffles
  evals = list(batches.eval_batches(23, 8))
  assert sum(m.sum() for _, m in evals) == 23 and len(evals) == 3


def test_synthetic_source_shapes_and_errors():
  cfg = lambda name: data_config(name=name, num_train=6, num_test=4, seed=1)
  d = sources.load(cfg("synthetic:12x10x3:7"))
  assert d.image_shape == (12, 10, 3) and d.num_classes == 7 and len(d.train) == 6 and len(d.test) == 4
  assert d.train.images.dtype == np.uint8 and d.train.labels.max() < 7 and d.train.images.std() > 50
  for bad in ("synthetic:12x10:7", "synthetic:0x10x3:7", "synthetic:12x10x3"):
    with pytest.raises(ValueError, match="expected 'synthetic:HxWxC:CLASSES'"):
      sources.load(cfg(bad))
