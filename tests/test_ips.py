"""IPS: the aggregator against a float64 NumPy reference, iterative selection == global top-M (one head,
one task), the three loading modes select the same patches, no gradient through the selection, ResNet
trunk sizes, the Megapixel MNIST generator's labels, and clear errors."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import compiled
from apvit_jax.data import megapixel
from apvit_jax.models import ips
from apvit_jax.models.resnet import ResNetTrunk
from apvit_jax.training import step as step_lib
from apvit_jax.models.families.ips import IPSFamily

RNG = np.random.default_rng()


def _layer_norm(x, scale, bias, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * scale + bias


def numpy_aggregator(p, x):
  """float64 reference: queries attend to x (no biases), post-norm, ReLU MLP, post-norm. -> (tokens,
  weights (B, H, T, N))."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
  x = np.asarray(x, np.float64)
  q = np.einsum("td,dhk->thk", p["queries"][0], p["query"]["kernel"])
  k = np.einsum("bnd,dhk->bnhk", x, p["key"]["kernel"])
  v = np.einsum("bnd,dhk->bnhk", x, p["value"]["kernel"])
  logits = np.einsum("thk,bnhk->bhtn", q, k) / np.sqrt(q.shape[-1])
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  attended = np.einsum("bhtn,bnhk->bthk", w, v)
  out = np.einsum("bthk,hkd->btd", attended, p["out"]["kernel"])
  h = _layer_norm(out + p["queries"], p["norm1"]["scale"], p["norm1"]["bias"])
  y = np.maximum(h @ p["mlp1"]["kernel"] + p["mlp1"]["bias"], 0) @ p["mlp2"]["kernel"] + p["mlp2"]["bias"]
  return _layer_norm(y + h, p["norm2"]["scale"], p["norm2"]["bias"]), w


def _randomise(params, scale=0.3):
  leaves, tree = jax.tree.flatten(params)
  return jax.tree.unflatten(tree, [jnp.asarray(RNG.normal(0, scale, x.shape), jnp.float32) for x in leaves])


def test_aggregator_matches_numpy():
  agg = ips.CrossAttentionAggregator(dim=24, num_heads=3, head_dim=8, mlp_dim=40, num_tokens=2)
  x = jnp.asarray(RNG.normal(size=(3, 17, 24)), jnp.float32)
  params = _randomise(compiled.param_shapes(agg, x, train=False))
  apply = compiled.apply(agg)
  tokens = apply({"params": params}, x, train=False)
  scores = apply({"params": params}, x, method="scores")
  ref_tokens, ref_w = numpy_aggregator(params, x)
  np.testing.assert_allclose(tokens, ref_tokens, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(scores, ref_w.mean(axis=(1, 2)), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(scores).sum(-1), 1.0, rtol=1e-5)


def test_sinusoidal_encoding_formula():
  pos = RNG.integers(0, 900, (2, 7))
  code = np.asarray(ips.sinusoidal_encoding(jnp.asarray(pos), 10))
  i = np.arange(5)
  angle = pos[..., None] / 10_000 ** (2 * i / 10)
  np.testing.assert_allclose(code[..., 0::2], np.sin(angle), atol=2e-4)
  np.testing.assert_allclose(code[..., 1::2], np.cos(angle), atol=2e-4)


def _features_model(heads=1, tasks=(("a", 5),), dim=16):
  return ips.IPSNet(tasks=tasks, encoder="features", dim=dim, num_heads=heads, head_dim=8, mlp_dim=32,
                    dropout=0.0, attn_dropout=0.0)


def _init(model, inputs, scale=0.3):
  variables = compiled.init(model)(jax.random.key(1), *inputs, train=False)
  return {"params": _randomise(variables["params"], scale), "batch_stats": variables["batch_stats"]}


@pytest.mark.parametrize("memory,chunk", [(10, 15), (7, 1), (1, 40)])
@pytest.mark.slow
def test_one_head_one_task_iterative_selection_is_global_top_m(memory, chunk):
  """With one head and one query, a patch's softmax weight is monotone in its own logit, so keeping
  the top-M chunk by chunk gives the global top-M of all N scores."""
  model = _features_model()
  feats = jnp.asarray(RNG.normal(size=(4, 200, 12)), jnp.float32)
  v = _init(model, (feats[:, :memory], jnp.zeros((4, memory), jnp.int32)))
  picked = ips.select_eager(model.apply, v, feats, jax.random.key(RNG.integers(1 << 30)), memory=memory,
                            chunk=chunk)
  apply = compiled.apply(model)
  emb = apply(v, feats, train=False, method="embed")
  scores = np.asarray(apply(v, emb, jnp.broadcast_to(jnp.arange(200), (4, 200)), method="scores"))
  best = np.argsort(-scores, axis=1)[:, :memory]
  assert picked.shape == (4, memory)
  np.testing.assert_array_equal(np.sort(picked, 1), np.sort(best, 1))


@pytest.mark.slow
def test_many_heads_and_tokens_still_select_m_distinct_patches():
  model = _features_model(heads=4, tasks=(("a", 3), ("b", 4)))
  feats = jnp.asarray(RNG.normal(size=(2, 50, 12)), jnp.float32)
  v = _init(model, (feats[:, :6], jnp.zeros((2, 6), jnp.int32)))
  picked = np.asarray(ips.select_eager(model.apply, v, feats, jax.random.key(3), memory=6, chunk=9))
  assert all(len(set(row)) == 6 and row.min() >= 0 and row.max() < 50 for row in picked)


@pytest.mark.slow
def test_three_loading_modes_select_the_same_patches():
  model = ips.IPSNet(tasks=(("a", 10), ("b", 10)), encoder="resnet18", num_stages=1, dim=32, num_heads=2,
                     head_dim=8, mlp_dim=32)
  images = RNG.uniform(size=(3, 48, 40, 1)).astype(np.float32)
  patches = ips.extract_patches(images, 8, 8)                 # 6 x 5 = 30 patches
  v = _init(model, (jnp.asarray(patches[:, :4]), jnp.zeros((3, 4), jnp.int32)), scale=0.1)
  key = jax.random.key(RNG.integers(1 << 30))
  kw = dict(memory=4, chunk=7)                                 # 26 = 3 chunks of 7 + a remainder of 5
  eager = np.asarray(ips.select_eager(model.apply, v, jnp.asarray(patches), key, **kw))
  sequential = np.asarray(ips.select_eager_sequential(model.apply, v, jnp.asarray(patches), key, **kw))
  lazy = ips.LazySelector(model.apply, **kw)(v, patches, key)
  np.testing.assert_array_equal(eager, sequential)
  np.testing.assert_array_equal(eager, lazy)
  assert all(len(set(row)) == 4 for row in eager)


def test_memory_of_all_patches_skips_selection():
  model = _features_model()
  feats = jnp.asarray(RNG.normal(size=(2, 9, 12)), jnp.float32)
  v = _init(model, (feats, jnp.zeros((2, 9), jnp.int32)))
  for m in (9, 12):
    picked = ips.select_eager(model.apply, v, feats, jax.random.key(0), memory=m, chunk=4)
    np.testing.assert_array_equal(picked, np.broadcast_to(np.arange(9), (2, 9)))
    np.testing.assert_array_equal(ips.LazySelector(model.apply, memory=m, chunk=4)(v, np.asarray(feats),
                                                                                  jax.random.key(0)), picked)


def test_extract_patches_row_major_with_stride():
  images = RNG.integers(0, 255, (2, 11, 14, 3))
  patches = ips.extract_patches(images, 5, 3)                  # rows 0,3,6; cols 0,3,6,9
  assert patches.shape == (2, 12, 5, 5, 3)
  for n, (r, c) in enumerate((r, c) for r in (0, 3, 6) for c in (0, 3, 6, 9)):
    np.testing.assert_array_equal(patches[:, n], images[:, r:r + 5, c:c + 5])
  np.testing.assert_array_equal(ips.extract_patches(jnp.asarray(images), 5, 3), patches)


def _ips_config(loading="eager"):
  from apvit_jax.base_config import base_config
  c = base_config()
  c.model.name = "ips"
  i = c.model.ips
  i.num_stages, i.patch_size, i.patch_stride, i.memory, i.chunk = 1, 8, 8, 4, 5
  i.dim, i.num_heads, i.head_dim, i.mlp_dim, i.dropout, i.attn_dropout = 32, 2, 8, 32, 0.0, 0.0
  i.loading = loading
  c.augment.mean, c.augment.std = (0.0,), (1.0,)
  with c.unlocked():
    c.tasks = (("a", 10, "softmax"), ("b", 10, "sigmoid"))
  return c


@pytest.mark.slow
def test_no_gradient_flows_through_the_selection():
  """The gradient of the train loss equals the gradient with the selected positions given as constants:
  the selection pass contributes nothing (and is not differentiated)."""
  from apvit_jax.models.registry import build_model
  from apvit_jax.training.state import TrainState
  import optax
  c = _ips_config()
  model = build_model(c.model, 10, c.tasks)
  images = RNG.integers(0, 256, (2, 32, 24, 1)).astype(np.uint8)
  labels = {"a": jnp.asarray(RNG.integers(0, 10, 2)), "b": jnp.asarray(RNG.integers(0, 2, (2, 10)))}
  patches0 = jnp.zeros((1, 4, 8, 8, 1))
  v = _init(model, (patches0, jnp.zeros((1, 4), jnp.int32)), scale=0.1)
  state = TrainState.create(apply_fn=model.apply, params=v["params"], tx=optax.sgd(0.1),
                            batch_stats=v["batch_stats"])
  batch = {"images": jnp.asarray(images), "labels": labels}
  key = jax.random.key(5)

  def loss(params, fixed=None):
    s = state.replace(params=params)
    (patches, positions), y = IPSFamily(c.model, c.augment).model_inputs(s, {}, batch, key, train=True)
    if fixed is not None:
      positions = fixed
      patches = ips.gather_patches(ips.extract_patches(jnp.asarray(images, jnp.float32) / 255, 8, 8), fixed)
    logits, _ = model.apply({"params": params, "batch_stats": v["batch_stats"]}, patches, positions,
                            train=True, mutable=["batch_stats"])[0]
    return step_lib.task_losses(logits, y, c.tasks).mean()

  (_, positions), _ = IPSFamily(c.model, c.augment).model_inputs(state, {}, batch, key, train=True)
  grad = jax.jit(jax.grad(loss))
  g_select = grad(state.params)
  g_fixed = grad(state.params, positions)
  chex.assert_trees_all_close(g_select, g_fixed, rtol=1e-6, atol=1e-8)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(g_select))
  assert any(np.abs(x).max() > 0 for x in jax.tree.leaves(g_select["trunk"]))


@pytest.mark.parametrize("name,stages,width,params", [("resnet18", 4, 64, 11_176_512), ("resnet50", 4, 64, 23_508_032),
                                                      ("resnet18", 2, 64, 683_072), ("resnet18", 2, 16, 44_816)])
def test_resnet_trunk_sizes(name, stages, width, params):
  """torchvision's resnet18 / resnet50 have 11,689,512 / 25,557,032 parameters; without the 1000-way fc
  (512·1000 + 1000 / 2048·1000 + 1000) that is 11,176,512 / 23,508,032. Two stages of resnet18 at first-stage
  width w on 3 channels: stem 147w + BN 2w; stage 1: 4 convs of 9w² + 4 BN of 2w; stage 2: 18w² + 3 x 36w² +
  the 1x1 projection 2w² + 5 BN of 4w; in all 164w² + 177w: 683,072 at w = 64, 44,816 at w = 16."""
  trunk = ResNetTrunk(name, stages, width=width)
  shapes = jax.eval_shape(lambda: trunk.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
  assert sum(np.prod(x.shape) for x in jax.tree.leaves(shapes["params"])) == params
  out = jax.eval_shape(lambda: trunk.apply(trunk.init(jax.random.key(0), jnp.zeros((2, 64, 64, 3)),
                                                      train=False), jnp.zeros((2, 64, 64, 3)), train=False))
  assert out.shape == (2, width * 2 ** (stages - 1) * (4 if name == "resnet50" else 1))


@pytest.mark.slow
def test_remat_trunk_has_the_same_parameters_values_statistics_and_gradients():
  """model.remat on IPS: the ResNet stem and blocks recomputed in the backward pass. The same parameter
  tree (checkpoints move between the two), and in training mode the same logits, BatchNorm statistics and
  gradients."""
  x = jnp.asarray(RNG.uniform(size=(2, 3, 16, 16, 1)), jnp.float32)
  positions = jnp.asarray(RNG.integers(0, 16, (2, 3)), jnp.int32)
  build = lambda remat: ips.IPSNet(tasks=(("a", 4),), encoder="resnet18", num_stages=1, dim=32, num_heads=2,
                                   head_dim=8, mlp_dim=16, remat=remat)
  plain, remat = build(False), build(True)
  v = compiled.init(plain)(jax.random.key(0), x, positions, train=False)
  v = {"params": _randomise(v["params"], 0.1), "batch_stats": v["batch_stats"]}
  assert (jax.tree.structure(jax.eval_shape(lambda: remat.init(jax.random.key(0), x, positions, train=False)))
          == jax.tree.structure(v))

  def loss(model, params):
    (logits, _), updated = model.apply({**v, "params": params}, x, positions, train=True, mutable=["batch_stats"],
                                       rngs={"dropout": jax.random.key(1)})
    return jnp.sum(logits["a"] ** 2), (logits, updated)

  run = lambda model: jax.jit(jax.value_and_grad(lambda p: loss(model, p), has_aux=True))(v["params"])
  (_, (logits, stats)), grads = run(plain)
  (_, (r_logits, r_stats)), r_grads = run(remat)
  chex.assert_trees_all_close((logits, stats), (r_logits, r_stats), rtol=1e-6, atol=1e-7)
  chex.assert_trees_all_close(grads, r_grads, rtol=1e-5, atol=1e-7)
  assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(grads["trunk"]))


def test_megapixel_labels_agree_with_the_digits_placed():
  digits = RNG.integers(0, 256, (60, 28, 28)).astype(np.uint8)
  classes = np.arange(60) % 10
  split = megapixel.make_split(digits, classes, n=12, seed=int(RNG.integers(1 << 30)), canvas=150)
  images, labels = split.get(np.arange(12))
  assert images.shape == (12, 150, 150, 1) and images.dtype == np.uint8
  for i in range(12):
    boxes = split.digit_xy[i]
    placed = []
    for d, (r, c) in zip(split.digit_ids[i], boxes):
      np.testing.assert_array_equal(images[i, r:r + 28, c:c + 28, 0], digits[d])  # drawn last, intact
      placed.append(classes[d])
    for a in range(5):
      for b in range(a):
        assert abs(boxes[a][0] - boxes[b][0]) >= 28 or abs(boxes[a][1] - boxes[b][1]) >= 28
    counts = np.bincount(placed, minlength=10)
    assert counts.max() == 3 and labels["majority"][i] == counts.argmax()
    assert labels["max"][i] == max(placed)
    assert labels["top"][i] == placed[int(np.argmin(boxes[:, 0]))]
    np.testing.assert_array_equal(labels["multi"][i], (counts > 0).astype(np.float32))
    noise_only = images[i, ..., 0].copy()
    for r, c in boxes:
      noise_only[r:r + 28, c:c + 28] = 0
    assert noise_only.max() == 255  # the noise scribbles are there


def test_megapixel_is_deterministic_by_seed_and_stores_no_canvas():
  digits = RNG.integers(0, 256, (30, 28, 28)).astype(np.uint8)
  classes = np.arange(30) % 10
  a, b = (megapixel.make_split(digits, classes, 5, seed=7, canvas=112) for _ in range(2))
  np.testing.assert_array_equal(a.get([0, 4])[0], b.get([0, 4])[0])
  assert not np.array_equal(a.get([0])[0], megapixel.make_split(digits, classes, 5, seed=8, canvas=112).get([0])[0])
  stored = sum(np.asarray(x).nbytes for x in (a.digit_ids, a.digit_xy, a.noise_ids, a.noise_xy, a.classes))
  assert stored < 112 * 112  # layouts only: less than one canvas for five examples


def test_megapixel_noise_count_comes_from_the_config():
  """data.num_noise scribbles per canvas (the published 50 by default); none leaves only the digits."""
  import ml_collections
  from apvit_jax.data.types import Dataset, Split
  digits = RNG.integers(1, 256, (40, 28, 28, 1)).astype(np.uint8)
  pool = Split(digits, (np.arange(40) % 10).astype(np.int32))
  cfg = lambda k: ml_collections.ConfigDict({"seed": 3, "canvas": 140, "num_train": 6, "num_test": 4, "num_noise": k})
  for k in (0, 7):
    data = megapixel.load(cfg(k), Dataset(pool, pool, 10, "digits"))
    assert data.train.noise_ids.shape == (6, k) and data.test.noise_xy.shape == (4, k, 2)
  images, _ = data.train.get(np.arange(6))   # k = 7: scribbles outside the digits
  quiet, _ = megapixel.load(cfg(0), Dataset(pool, pool, 10, "digits")).train.get(np.arange(6))
  for i in range(6):
    outside = np.ones((140, 140), bool)
    for r, c in data.train.digit_xy[i]:
      outside[r:r + 28, c:c + 28] = False
    assert quiet[i, ..., 0][outside].max() == 0 and images[i, ..., 0][outside].max() > 0


def test_megapixel_small_canvas_never_gets_stuck():
  """On a tight canvas an unlucky layout can leave no room for the fifth digit (this once hung); such a
  layout is redrawn, and a canvas too small for five digits is refused."""
  digits = RNG.integers(0, 256, (30, 28, 28)).astype(np.uint8)
  split = megapixel.make_split(digits, np.arange(30) % 10, 300, seed=int(RNG.integers(1 << 30)), canvas=112)
  boxes = split.digit_xy
  sep = np.maximum(*np.abs(boxes[:, :, None] - boxes[:, None]).transpose(3, 0, 1, 2))
  assert (sep + 1000 * np.eye(5) >= 28).all() and boxes.max() <= 112 - 28
  with pytest.raises(ValueError, match="canvas=100 is too small"):
    megapixel.make_split(digits, np.arange(30) % 10, 1, seed=0, canvas=100)


@pytest.mark.parametrize("override,message", [
    ({"model.ips.memory": 0}, "M=0 and chunk size I=8 must both be >= 1"),
    ({"model.ips.chunk": 0}, "chunk size I=0"),
    ({"model.ips.patch_size": 30}, "does not tile the 200x200 image"),
    ({"model.ips.patch_stride": 10}, "patch_stride=10 does not tile"),
    ({"model.ips.memory": 65}, "M=65 is larger than the number of patches N=64"),
    ({"model.ips.tasks": "majority,colour"}, "names \\['colour'\\]"),
    ({"model.ips.loading": "streaming"}, "unknown model.ips.loading='streaming'"),
    ({"model.ips.encoder": "vgg"}, "unknown model.ips.encoder='vgg'"),
    ({"model.name": "vit"}, "has 4 tasks"),
])
def test_clear_ips_errors(override, message):
  from apvit_jax.training import run as run_lib
  from apvit_jax.base_config import set_fields
  from test_training import load_config
  c = set_fields(load_config("ips_megapixel_mnist"), override)
  with pytest.raises(ValueError, match=message):
    run_lib.setup(c)


def test_selected_boxes_point_at_the_extracted_patches():
  from apvit_jax.visualize_ips import selected_boxes
  images = RNG.integers(0, 255, (1, 23, 17, 2))
  patches = ips.extract_patches(images, 5, 3)                  # 7 x 5 grid
  positions = RNG.permutation(35)[:9]
  for (r, c), n in zip(selected_boxes(positions, (23, 17), 5, 3), positions):
    np.testing.assert_array_equal(images[0, r:r + 5, c:c + 5], patches[0, n])


@pytest.mark.slow
def test_ips_figures_show_the_selected_patches(tmp_path):
  """eval.py --visualize for IPS: one PNG per image, the selection the model makes, labels and predictions
  for every task in the title."""
  import ml_collections
  from apvit_jax import visualize_ips
  model = ips.IPSNet(tasks=(("majority", 10), ("multi", 10)), encoder="resnet18", num_stages=1, dim=16,
                     num_heads=2, head_dim=8, mlp_dim=16)
  images = RNG.integers(0, 256, (2, 40, 40, 1)).astype(np.uint8)
  v = _init(model, (jnp.zeros((1, 3, 8, 8, 1)), jnp.zeros((1, 3), jnp.int32)), scale=0.1)
  config = ml_collections.ConfigDict({"model": {"ips": {"patch_size": 8, "patch_stride": 8, "memory": 5,
                                                        "chunk": 4}},
                                      "augment": {"mean": (0.5,), "std": (0.25,)}})
  labels = {"majority": np.array([3, 7]), "multi": np.eye(10)[[1, 2]], "max": np.array([9, 9])}
  prepare = lambda p: (p / 255.0 - 0.5) / 0.25
  paths = visualize_ips.render_ips_figures(model, v, images, labels, config.model.ips, prepare, tmp_path, "ips",
                                           jax.random.key(0))
  assert [p.name for p in paths] == ["ips_0.png", "ips_1.png"]
  assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in paths)


@pytest.mark.slow
def test_ips_figures_show_the_selection_evaluation_makes(tmp_path, monkeypatch):
  """eval.py --visualize draws the patches evaluation selects: the same patch order (selection key) and
  the same scores. The keys are compared directly: comparing selections among tied (blank) patches
  instead broke ties by float rounding, which differs between the eager scan and the lazy per-chunk
  programs, and even between the rows of one batch (failed in CI once)."""
  from apvit_jax import visualize_ips
  from apvit_jax.training import step as step_lib
  from apvit_jax.training.state import TrainState
  import optax
  c = _ips_config()
  c.model.ips.use_pos = False
  family = IPSFamily(c.model, c.augment)
  model = family.build(10, c.tasks)
  images = RNG.integers(0, 256, (3, 32, 24, 1)).astype(np.uint8)   # 4 x 3 patches of 8, M = 4
  # Weights at scale 0.3 spread the 12 scores apart: adjacent ones differ by >= 1e-5 relative in
  # practice (measured over 10 draws: smallest 2.7e-5), far above float32 rounding (~1e-7).
  v = _init(model, (jnp.zeros((1, 4, 8, 8, 1)), jnp.zeros((1, 4), jnp.int32)), scale=0.3)
  state = TrainState.create(apply_fn=model.apply, params=v["params"], tx=optax.sgd(0.1),
                            batch_stats=v["batch_stats"])
  keys = []
  shuffle_order = ips.shuffle_order
  monkeypatch.setattr(ips, "shuffle_order", lambda key, n: keys.append(jax.random.key_data(key))
                      or shuffle_order(key, n))
  batch = {"images": jnp.asarray(images), "labels": {"a": jnp.zeros(3, jnp.int32)}}
  (_, evaluated), _ = family.model_inputs(state, {}, batch, step_lib.eval_inputs_key(), train=False)
  drawn = []
  monkeypatch.setattr(visualize_ips, "ips_figure", lambda image, boxes, *a, **k: drawn.append(boxes))
  family.figures(model, v, images, {"a": np.zeros(3), "b": np.zeros((3, 10))}, c.tasks, tmp_path, "t",
                 step_lib.eval_inputs_key())
  assert len(keys) == 2
  np.testing.assert_array_equal(keys[0], keys[1])
  assert len(drawn) == 3
  for boxes, positions in zip(drawn, np.asarray(evaluated)):
    expected = visualize_ips.selected_boxes(positions, (32, 24), 8, 8)
    assert sorted(map(tuple, boxes)) == sorted(map(tuple, expected))


@pytest.mark.slow
def test_lazy_selection_is_built_once_per_run(tmp_path, monkeypatch):
  """Lazy IPS: one host selector (one compilation) for all training steps and every evaluation."""
  from apvit_jax.training import loop
  from apvit_jax.base_config import set_fields
  from test_training import load_config
  built = []

  class Counting(ips.LazySelector):
    def __init__(self, *args, **kwargs):
      built.append(1)
      super().__init__(*args, **kwargs)
  monkeypatch.setattr(ips, "LazySelector", Counting)
  c = set_fields(load_config("ips_megapixel_mnist"), {"model.ips.loading": "lazy", "total_steps": 8,
                                                      "progress_bar": False, "log_efficiency": False})
  summary = loop.train_and_evaluate(c, tmp_path)   # 4 steps per epoch: evaluations at steps 4 and 8
  assert summary["final_step"] == 8 and len(built) == 1


@pytest.mark.slow
def test_initialisation_follows_the_authors_code():
  """Query tokens start uniform on ±sqrt(1/d_k); every BatchNorm scale starts at one (torchvision's
  default, which the authors keep); the feature projector's LayerNorm has PyTorch's eps 1e-5."""
  from apvit_jax.models.resnet import FeatureProjector
  model = ips.IPSNet(tasks=tuple((f"task{i}", 3) for i in range(16)), encoder="resnet18", num_stages=2, dim=64,
                     num_heads=4, head_dim=16, mlp_dim=32)   # one query token per task: 16 x 64 values
  v = model.init(jax.random.key(int(RNG.integers(1 << 30))), jnp.zeros((1, 4, 16, 16, 1)),
                 jnp.zeros((1, 4), jnp.int32), train=False)
  leaves = {jax.tree_util.keystr(k): np.asarray(x) for k, x in jax.tree_util.tree_flatten_with_path(v["params"])[0]}
  queries = np.concatenate([x.ravel() for k, x in leaves.items() if k.endswith("['queries']")])
  bound = np.sqrt(1 / 16)
  assert queries.size == 16 * 64 and np.abs(queries).max() <= bound and np.abs(queries).max() > 0.95 * bound
  np.testing.assert_allclose(queries.std(), bound / np.sqrt(3), rtol=0.1)   # uniform, not normal(1)
  scales = [x for k, x in leaves.items() if "bn" in k.lower() and k.endswith("['scale']")]
  assert len(scales) >= 5 and all((s == 1).all() for s in scales)
  # LayerNorm eps: rows with a variance of 1e-5, where 1e-5 and 1e-6 give visibly different outputs.
  x = (RNG.normal(size=(3, 20)) * np.sqrt(1e-5)).astype(np.float32)
  proj = FeatureProjector(dim=8)
  pv = compiled.init(proj)(jax.random.key(0), jnp.asarray(x), train=False)
  w, b = (np.asarray(pv["params"]["Dense_0"][n], np.float64) for n in ("kernel", "bias"))
  xn = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
  expected = np.maximum((xn @ w + b) / np.sqrt(1 + 1e-5), 0)   # BatchNorm at its initial statistics
  np.testing.assert_allclose(np.asarray(compiled.apply(proj)(pv, jnp.asarray(x), train=False)), expected, rtol=1e-4,
                             atol=1e-5)
