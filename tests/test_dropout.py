"""16-bit dropout (apvit_jax/models/dropout.py) against a NumPy threefry-2x32 and a float64 reference; its
statistics; flax's dropout semantics (identity when deterministic, zeros at rate 1, unbiased)."""
import jax
import jax.extend.random as jax_random
import jax.numpy as jnp
import numpy as np
import pytest

import compiled
from apvit_jax.models import dropout as dropout_lib
from apvit_jax.models.vit import ViT

ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def numpy_threefry2x32(key, x0, x1):
  """Threefry-2x32, 20 rounds (Salmon et al. 2011, Random123), on uint32 NumPy arrays."""
  rotl = lambda v, r: (v << np.uint32(r)) | (v >> np.uint32(32 - r))
  ks = [np.uint32(key[0]), np.uint32(key[1]), np.uint32(key[0] ^ key[1] ^ 0x1BD11BDA)]
  x0, x1 = x0 + ks[0], x1 + ks[1]
  for i in range(5):
    for r in ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = rotl(x1, r) ^ x0
    x0, x1 = x0 + ks[(i + 1) % 3], x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x0, x1


def numpy_uint16(key_data, n):
  """The contract of dropout.random_uint16: counters 0..2m-1 hashed as pairs (i, m + i); the words
  y0 (m of them) then y1; each word gives its low 16 bits, then its high 16 bits."""
  words = -(-n // 2)
  words += words % 2
  m = words // 2
  counts = np.arange(words, dtype=np.uint32)
  y0, y1 = numpy_threefry2x32(np.asarray(key_data, np.uint32), counts[:m], counts[m:])
  w = np.concatenate([y0, y1])
  return np.stack([w & np.uint32(0xFFFF), w >> np.uint32(16)], -1).reshape(-1)[:n]


def test_numpy_threefry_matches_the_published_test_vector():
  # Random123's known-answer test for threefry2x32_20 (also in JAX's own tests).
  y0, y1 = numpy_threefry2x32((0x13198A2E, 0x03707344), np.array([0x243F6A88], np.uint32),
                              np.array([0x85A308D3], np.uint32))
  assert (int(y0[0]), int(y1[0])) == (0xC4923A9C, 0x483DF7A0)


def test_written_out_threefry_equals_jax_and_numpy():
  """dropout.threefry_2x32 (the hash written out so that XLA fuses it) == JAX's own threefry_2x32 and the
  NumPy reference, bit for bit, on random keys and random (not consecutive) counters."""
  rng = np.random.default_rng()
  for n in (1, 7, 1000):
    key_data = rng.integers(0, 2 ** 32, size=2, dtype=np.uint32)
    x0, x1 = (rng.integers(0, 2 ** 32, size=n, dtype=np.uint32) for _ in range(2))
    got = jax.jit(dropout_lib.threefry_2x32)(jnp.asarray(key_data), jnp.asarray(x0), jnp.asarray(x1))
    want_jax = np.asarray(jax_random.threefry_2x32(jnp.asarray(key_data), jnp.concatenate([x0, x1])))
    want_np = numpy_threefry2x32(key_data, x0, x1)
    np.testing.assert_array_equal(np.concatenate([np.asarray(g) for g in got]), want_jax)
    np.testing.assert_array_equal(np.asarray(got[0]), want_np[0])
    np.testing.assert_array_equal(np.asarray(got[1]), want_np[1])


@pytest.mark.parametrize("shape", [(3, 5, 7), (4, 6), (1,), (2, 17, 40)])
def test_draws_and_output_equal_the_numpy_reference(shape):
  rng = np.random.default_rng()
  key = jax.random.key(int(rng.integers(2 ** 31)))
  n = int(np.prod(shape))
  u = numpy_uint16(np.asarray(jax.random.key_data(key)), n).reshape(shape)
  np.testing.assert_array_equal(np.asarray(dropout_lib.random_uint16(key, shape)), u)

  x = rng.normal(size=shape).astype(np.float32)
  for rate in (0.1, 0.5, 0.37):
    t = round((1 - rate) * 65536)
    want = np.where(u < t, x.astype(np.float64) * 65536 / t, 0.0)
    got = np.asarray(jax.jit(dropout_lib.dropout, static_argnums=1)(jnp.asarray(x), rate, key))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)   # one float32 multiply


def test_keep_threshold():
  assert dropout_lib.keep_threshold(0.1) == 58982           # rate in effect 0.1000061
  assert abs((1 - 58982 / 65536) - 0.1) < 2 ** -17
  assert dropout_lib.keep_threshold(0.0) == 65536 and dropout_lib.keep_threshold(1.0) == 0
  with pytest.raises(ValueError, match="dropout rate must be in"):
    dropout_lib.keep_threshold(1.5)


def test_statistics_of_the_mask():
  """Over 2^20 elements: the kept fraction is t / 2^16 within 5 standard deviations; neighbours (the two
  halves of one word, and consecutive words) are uncorrelated; the output is unbiased."""
  n, rate = 1 << 20, 0.1
  key = jax.random.fold_in(jax.random.key(np.random.default_rng().integers(2 ** 31)), 7)
  keep = np.asarray(dropout_lib.dropout(jnp.ones((n,)), rate, key)) > 0
  p = dropout_lib.keep_threshold(rate) / 65536
  sd = np.sqrt(p * (1 - p) / n)
  assert abs(keep.mean() - p) < 5 * sd
  k = keep.astype(np.float64) - keep.mean()
  for lag in (1, 2, 3):
    corr = (k[:-lag] * k[lag:]).mean() / k.var()
    assert abs(corr) < 5 / np.sqrt(n), (lag, corr)
  x = np.random.default_rng().normal(1.0, 1.0, size=n).astype(np.float32)
  out = np.asarray(dropout_lib.dropout(jnp.asarray(x), rate, key))
  # E[out] = x: the mean differs from x's by the sampling noise of the mask alone.
  assert abs(out.mean() - x.mean()) < 5 * np.sqrt((1 - p) / p * (x.astype(np.float64) ** 2).mean() / n)


def test_layer_semantics_as_flax_dropout():
  x = jnp.asarray(np.random.default_rng().normal(size=(4, 9, 16)), jnp.float32)
  key = jax.random.key(3)
  layer = dropout_lib.Dropout(0.3)
  assert layer.apply({}, x, deterministic=True) is x
  assert dropout_lib.Dropout(0.0).apply({}, x, deterministic=False) is x
  np.testing.assert_array_equal(dropout_lib.Dropout(1.0).apply({}, x, deterministic=False, rngs={"dropout": key}), 0)
  y1 = layer.apply({}, x, deterministic=False, rngs={"dropout": key})
  y2 = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(4)})
  assert not np.array_equal(y1, y2)
  # The gradient is the mask times the scale, as flax's.
  grad = jax.grad(lambda v: jnp.sum(layer.apply({}, v, deterministic=False, rngs={"dropout": key})))(x)
  np.testing.assert_array_equal(np.asarray(grad), np.where(np.asarray(y1) != 0, 65536 / 45875, 0.0).astype(np.float32))
  # A key of another PRNG implementation draws its own bits, with the same statistics.
  rbg = jax.random.key(5, impl="rbg")
  kept = np.mean(np.asarray(layer.apply({}, jnp.ones((1 << 16,)), deterministic=False, rngs={"dropout": rbg})) > 0)
  assert abs(kept - 45875 / 65536) < 5 * np.sqrt(0.21 / (1 << 16))


def test_the_vit_drops_in_training_only():
  model = ViT(num_classes=3, width=16, depth=1, num_heads=2, patch_size=4, dropout=0.2)
  images = jnp.asarray(np.random.default_rng().normal(size=(2, 8, 8, 3)), jnp.float32)
  params = compiled.init(model)(jax.random.key(0), images, train=False)["params"]
  apply = compiled.apply(model)
  run = lambda k: apply({"params": params}, images, train=True, rngs={"dropout": jax.random.key(k)})[1]["tokens"]
  assert not np.allclose(run(1), run(2))
  np.testing.assert_array_equal(run(1), run(1))
  evaluated = apply({"params": params}, images, train=False)[1]["tokens"]
  no_dropout = compiled.apply(ViT(num_classes=3, width=16, depth=1, num_heads=2, patch_size=4))(
      {"params": params}, images, train=False)[1]["tokens"]
  np.testing.assert_array_equal(evaluated, no_dropout)
