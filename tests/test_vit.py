"""ViT: parameter counts, NumPy reference forward, pooling, bf16, batch independence, bad input."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from apvit_jax.models.posembed import sincos2d
from apvit_jax.models.vit import DropPath, ViT, decode_variant
import compiled
import numpy_vit


def count_params(model, shape):
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


def test_vit_b16_parameter_count():
  model = ViT(num_classes=1000, **decode_variant("B/16"))
  assert count_params(model, (1, 224, 224, 3)) == 86_567_656


def test_variants():
  assert decode_variant("Ti/16") == dict(width=192, depth=12, num_heads=3, patch_size=16)
  assert decode_variant("S/16") == dict(width=384, depth=12, num_heads=6, patch_size=16)
  assert decode_variant("Ti/1")["patch_size"] == 1
  with pytest.raises(ValueError, match="unknown ViT variant 'X/16'"):
    decode_variant("X/16")


def randomise(params, rng):
  """Fresh random values for every leaf (the zero-initialised head would hide errors)."""
  return jax.tree.map(lambda x: jnp.asarray(rng.normal(0, 0.3, x.shape), x.dtype), params)


@pytest.mark.parametrize("pool", ["token", "gap"])
def test_matches_numpy_forward(pool):
  rng = np.random.default_rng()
  model = ViT(num_classes=5, width=16, depth=2, num_heads=2, patch_size=4, pool=pool)
  images = rng.normal(size=(3, 8, 12, 3)).astype(np.float32)
  params = randomise(compiled.param_shapes(model, images, train=False), rng)
  # Flax's nn.gelu is the tanh approximation by default, as in the reference.
  logits, aux = compiled.apply(model)({"params": params}, images, train=False)
  want = numpy_vit.vit_forward(flax.core.unfreeze(params), images, 4, 2, pool)
  np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-4, atol=1e-4)
  assert aux["tokens"].shape == (3, 6 + (pool == "token"), 16)


@pytest.mark.slow
def test_pixel_transformer_and_bf16():
  rng = np.random.default_rng()
  model = ViT(num_classes=3, width=16, depth=1, num_heads=2, patch_size=1, dtype=jnp.bfloat16)
  images = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
  shapes = compiled.param_shapes(model, images, train=False)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes))  # params stay float32
  params = randomise(shapes, rng)
  logits, aux = compiled.apply(model)({"params": params}, images, train=False)
  assert logits.dtype == jnp.float32 and aux["tokens"].shape == (2, 37, 16)
  ref = compiled.apply(ViT(num_classes=3, width=16, depth=1, num_heads=2, patch_size=1))(
      {"params": params}, images, train=False)[0]
  # bf16 activations: ~3 significant digits per op.
  np.testing.assert_allclose(np.asarray(logits), np.asarray(ref), rtol=5e-2, atol=5e-2 * np.abs(ref).max())


@pytest.mark.slow
def test_batch_independence_and_dropout_rng():
  rng = np.random.default_rng()
  model = ViT(num_classes=4, width=16, depth=2, num_heads=2, patch_size=4, dropout=0.1, drop_path=0.1)
  images = rng.normal(size=(4, 8, 8, 3)).astype(np.float32)
  params = randomise(compiled.param_shapes(model, images, train=False), rng)
  apply = compiled.apply(model)
  full = apply({"params": params}, images, train=False)[0]
  single = apply({"params": params}, images[1:2], train=False)[0]
  np.testing.assert_allclose(np.asarray(full[1:2]), np.asarray(single), rtol=1e-5, atol=1e-5)
  a = apply({"params": params}, images, train=True, rngs={"dropout": jax.random.key(1)})[0]
  b = apply({"params": params}, images, train=True, rngs={"dropout": jax.random.key(2)})[0]
  assert not np.allclose(np.asarray(a), np.asarray(b))


def test_patch_size_must_divide_image():
  model = ViT(num_classes=2, width=16, depth=1, num_heads=2, patch_size=5)
  with pytest.raises(ValueError, match="not divisible by patch size 5"):
    model.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)), train=False)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN fused attention needs an NVIDIA GPU")
@pytest.mark.parametrize("seq", [64, 65, 257])
def test_cudnn_attention_matches_xla(seq):
  from apvit_jax.models.vit import dot_product_attention
  rng = np.random.default_rng()
  q, k, v = (jnp.asarray(rng.normal(size=(4, seq, 3, 64)), jnp.bfloat16) for _ in range(3))
  want = np.asarray(dot_product_attention(q, k, v, "xla"), np.float32)
  got = np.asarray(dot_product_attention(q, k, v, "auto"), np.float32)
  # bf16 inputs and outputs; the two kernels accumulate in different orders.
  np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2)


def test_sincos2d_formula():
  h, w, d = 3, 5, 16
  got = sincos2d(h, w, d)[0]
  q = d // 4
  omega = 1.0 / 10_000.0 ** (np.arange(q) / (q - 1))
  for y in range(h):
    for x in range(w):
      want = np.concatenate([np.sin(x * omega), np.cos(x * omega), np.sin(y * omega), np.cos(y * omega)])
      np.testing.assert_allclose(got[y * w + x], want, rtol=1e-6, atol=1e-6)
  assert len({tuple(r) for r in np.round(got, 6)}) == h * w  # every position distinct


def test_drop_path_drops_whole_examples_and_keeps_the_mean():
  x = jnp.asarray(np.random.default_rng().normal(size=(4000, 3, 2)), jnp.float32)
  y = np.asarray(DropPath(0.25).apply({}, x, train=True, rngs={"dropout": jax.random.key(0)}))
  dropped = np.all(y == 0, axis=(1, 2))
  np.testing.assert_allclose(y[~dropped], np.asarray(x)[~dropped] / 0.75, rtol=1e-6)
  # 4000 Bernoulli(0.25) draws: standard deviation 0.007, so +-0.03 fails with probability < 1e-4.
  assert abs(dropped.mean() - 0.25) < 0.03
  np.testing.assert_array_equal(np.asarray(DropPath(0.25).apply({}, x, train=False)), np.asarray(x))


@pytest.mark.parametrize("remat,scan", [(True, False), (False, True), (True, True)])
@pytest.mark.slow
def test_remat_and_scan_give_the_plain_loss_and_gradients(remat, scan):
  """Same weights (stacked for scan) -> same training loss and gradients as the plain model."""
  from apvit_jax.models.vit import stack_blocks
  rng = np.random.default_rng()
  kw = dict(num_classes=5, width=16, depth=3, num_heads=2, patch_size=4)
  plain, other = ViT(**kw), ViT(**kw, remat=remat, scan=scan)
  images = jnp.asarray(rng.normal(size=(4, 8, 8, 3)), jnp.float32)
  labels = jnp.arange(4) % 5
  params = randomise(compiled.param_shapes(plain, images, train=False), rng)
  stack = (lambda p: {**p, "encoder": stack_blocks(p["encoder"], 3)}) if scan else (lambda p: p)

  def loss(model, p):
    logits, _ = model.apply({"params": p}, images, train=True, rngs={"dropout": jax.random.key(1)})
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean()
  want_loss, want_grads = jax.jit(jax.value_and_grad(lambda p: loss(plain, p)))(params)
  got_loss, got_grads = jax.jit(jax.value_and_grad(lambda p: loss(other, p)))(stack(params))
  assert jax.tree.structure(got_grads) == jax.tree.structure(stack(want_grads))
  np.testing.assert_allclose(float(got_loss), float(want_loss), rtol=1e-6)
  for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(stack(want_grads))):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_scanned_layers_keep_their_drop_path_rates():
  """Under scan the drop rates are traced per-layer inputs: training still drops branches (finite,
  different from evaluation)."""
  model = ViT(num_classes=3, width=8, depth=2, num_heads=2, patch_size=4, drop_path=0.5, scan=True)
  x = jnp.asarray(np.random.default_rng().normal(size=(16, 8, 8, 3)), jnp.float32)
  params = model.init(jax.random.key(0), x, train=False)["params"]
  apply = compiled.apply(model)
  train_out = apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(2)})[1]["tokens"]
  eval_out = apply({"params": params}, x, train=False)[1]["tokens"]
  assert np.isfinite(np.asarray(train_out)).all()
  assert not np.allclose(np.asarray(train_out), np.asarray(eval_out))


def test_pit_t_cifar100_has_the_parameters_of_vit_ti_with_1x1_patches():
  """By hand: embedding 1·1·3·192 + 192; position grid 32·32·192; cls + cls position 2·192; per block
  two LayerNorms 4·192, q/k/v/out 4·(192² + 192), MLP 192·768 + 768 + 768·192 + 192; final LayerNorm
  2·192; head 192·100 + 100."""
  from apvit_jax.models import registry
  from configs import pit_t_cifar100
  d, m = 192, 768
  block = 4 * d + 4 * (d * d + d) + (d * m + m) + (m * d + d)
  want = (3 * d + d) + 32 * 32 * d + 2 * d + 12 * block + 2 * d + (d * 100 + 100)
  model = registry.build_model(pit_t_cifar100.get_config().model, 100)
  assert count_params(model, (1, 32, 32, 3)) == want == 5_555_812


def test_cudnn_fallback_is_logged_once_and_listed(monkeypatch, caplog):
  """"auto" attention that cuDNN refuses falls back to XLA's, says so once per shape, and the benchmark
  rows can list it (attention_fallbacks)."""
  from apvit_jax.models import vit
  real = jax.nn.dot_product_attention

  def no_cudnn(q, k, v, implementation=None, **kwargs):
    if implementation == "cudnn":   # padded or not
      raise NotImplementedError("sequence length 65 is not supported")
    return real(q, k, v, implementation=implementation, **kwargs)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(jax.nn, "dot_product_attention", no_cudnn)
  monkeypatch.setattr(vit, "_FALLBACKS", {})
  q = jnp.asarray(np.random.default_rng(0).normal(size=(2, 65, 2, 8)), jnp.bfloat16)
  with caplog.at_level("WARNING"):
    first = vit.dot_product_attention(q, q, q, "auto")
    vit.dot_product_attention(q, q, q, "auto")
  np.testing.assert_array_equal(np.asarray(first, np.float32), np.asarray(real(q, q, q), np.float32))
  warnings = [r for r in caplog.records if "cuDNN does not take it" in r.getMessage()]
  assert len(warnings) == 1 and "sequence length 65" in warnings[0].getMessage()
  assert vit.attention_fallbacks() == ["(2, 65, 2, 8) bfloat16: sequence length 65 is not supported"]


def numpy_attention(q, k, v):
  """float64 softmax(q kᵀ / √d) v on (B, T, heads, head_dim)."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  logits = np.einsum("bqhd,bshd->bhqs", q, k) / np.sqrt(q.shape[-1])
  w = np.exp(logits - logits.max(-1, keepdims=True))
  return np.einsum("bhqs,bshd->bqhd", w / w.sum(-1, keepdims=True), v)


@pytest.mark.parametrize("multiple", [8, 64])
def test_padded_attention_is_the_attention(multiple):
  """65 tokens padded to 72 or 128 with the padding keys masked: the values of a float64 reference, and
  the gradients of the unpadded attention (float32, XLA's kernel on both sides)."""
  from apvit_jax.models.vit import padded_attention
  rng = np.random.default_rng()
  q, k, v = (jnp.asarray(rng.normal(size=(3, 65, 2, 8)), jnp.float32) for _ in range(3))
  got = padded_attention(q, k, v, multiple, "xla")
  assert got.shape == q.shape
  np.testing.assert_allclose(got, numpy_attention(q, k, v), rtol=1e-5, atol=1e-6)
  w = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
  loss = lambda f: lambda q, k, v: jnp.sum(f(q, k, v) * w)
  want = jax.grad(loss(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla")),
                  argnums=(0, 1, 2))(q, k, v)
  grads = jax.grad(loss(lambda q, k, v: padded_attention(q, k, v, multiple, "xla")), argnums=(0, 1, 2))(q, k, v)
  for g, h in zip(grads, want):
    np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("takes,tokens", [(8, 72), (64, 128)])
def test_auto_pads_the_tokens_where_cudnn_refuses_their_count(monkeypatch, takes, tokens):
  """A cuDNN that takes only token counts divisible by `takes` (faked on CPU by XLA's kernel): "auto" runs
  it on 65 tokens padded to `tokens`, says so once, and computes the attention of the 65."""
  from apvit_jax.models import vit
  real, calls = jax.nn.dot_product_attention, []

  def picky_cudnn(q, k, v, implementation=None, **kwargs):
    if implementation == "cudnn":
      if q.shape[1] % takes:
        raise NotImplementedError(f"sequence length {q.shape[1]} is not supported")
      calls.append(q.shape[1])
      implementation = "xla"
    return real(q, k, v, implementation=implementation, **kwargs)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(jax.nn, "dot_product_attention", picky_cudnn)
  monkeypatch.setattr(vit, "_FALLBACKS", {})
  rng = np.random.default_rng()
  q, k, v = (jnp.asarray(rng.normal(size=(2, 65, 2, 8)), jnp.bfloat16) for _ in range(3))
  got = vit.dot_product_attention(q, k, v, "auto")
  assert calls == [tokens]
  np.testing.assert_array_equal(np.asarray(got, np.float32),
                                np.asarray(vit.padded_attention(q, k, v, takes, "xla"), np.float32))
  # bf16 inputs and output: one bf16 rounding of values of size ~1.
  np.testing.assert_allclose(np.asarray(got, np.float32), numpy_attention(q, k, v), rtol=2e-2, atol=2e-2)
  assert vit.attention_fallbacks() == [
      f"(2, 65, 2, 8) bfloat16: cuDNN on {tokens} tokens, the padding masked (sequence length 65 is not supported)"]
