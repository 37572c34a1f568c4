"""Streamed batches made by grain worker processes (data/host_pipeline.py): the same batches in the same
order as made in the training process, from any first step (resume), with unreadable examples named or
counted as they are without workers."""
import gc
from multiprocessing import synchronize

import numpy as np
import pytest

from apvit_jax import base_config
from apvit_jax.data import bad_examples, host_pipeline, sources
from apvit_jax.data.types import DataError
from fake_splits import FlakySplit


def megapixel_split(num_train=64):
  c = base_config.base_config()
  c.data.name, c.data.digits, c.data.canvas, c.data.num_train, c.data.num_test = (
      "megapixel_mnist", "builtin", 150, num_train, 8)
  return sources.load(c.data).train


def batches_of(make, items, workers):
  return [jax_free_copy(b) for b in host_pipeline.iterate(make, items, workers)]


def jax_free_copy(tree):
  """A batch as plain NumPy arrays (out of grain's shared memory), nested dicts kept."""
  return {k: jax_free_copy(v) if isinstance(v, dict) else np.array(v) for k, v in tree.items()}


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      if isinstance(x[k], dict):
        assert_batches_equal([x[k]], [y[k]])
      else:
        np.testing.assert_array_equal(x[k], y[k])


def test_resolve_workers():
  split = megapixel_split(8)
  assert host_pipeline.resolve_workers(3, split) == 3
  assert host_pipeline.resolve_workers(0, split) == 0
  auto = host_pipeline.resolve_workers(-1, split)
  assert 0 <= auto <= host_pipeline.MAX_AUTO_WORKERS
  resident = sources.synthetic("synthetic:8x8x3:10", 16, 8, 0).train
  assert host_pipeline.resolve_workers(4, resident) == 0   # indices only: nothing to make on the host


@pytest.mark.parametrize("seeds", [(0,), (3, 4)], ids=["one_seed", "two_seeds"])
@pytest.mark.slow
def test_two_workers_make_the_batches_the_training_process_makes(seeds):
  """Megapixel canvases drawn in two spawned workers equal those drawn here, step by step, and a pipeline
  started at step 5 (a resumed run) gives the tail of one started at 0."""
  make = host_pipeline.TrainBatch(megapixel_split(), seeds, 8, host_pipeline.Host())
  here = [make(s) for s in range(0, 11)]
  assert_batches_equal(batches_of(make, range(0, 11), workers=2), here)
  assert_batches_equal(batches_of(make, range(5, 11), workers=2), here[5:])
  assert here[0]["images"].shape == ((8, len(seeds), 150, 150, 1) if len(seeds) > 1 else (8, 150, 150, 1))
  assert not np.array_equal(here[0]["images"], here[1]["images"])


@pytest.mark.slow
def test_evaluation_batches_and_host_slices_in_workers():
  """Each of two hosts reads its half of every evaluation batch (the last one padded and masked)."""
  split = megapixel_split()
  items = [(np.arange(s, s + 8) % 20, np.arange(s, s + 8) < 20) for s in range(0, 20, 8)]
  for host in (host_pipeline.Host(0, 2), host_pipeline.Host(1, 2)):
    make = host_pipeline.EvalBatch(split, host)
    got = batches_of(make, items, workers=2)
    assert_batches_equal(got, [make(i) for i in items])
    assert got[-1]["mask"].tolist() == ([True] * 4 if host.index == 0 else [False] * 4)


def test_an_unreadable_example_in_a_worker_stops_with_its_name():
  split = bad_examples.GuardedSplit(FlakySplit(n=40, broken={13}), "fake train", skip=False)
  make = host_pipeline.EvalBatch(split, host_pipeline.Host())
  items = [(np.arange(s, s + 10), np.ones(10, bool)) for s in range(0, 40, 10)]
  with pytest.raises(DataError, match=r"reading example 13 of fake train failed after 3 attempts: OSError"):
    batches_of(make, items, workers=2)


@pytest.mark.slow
def test_skipped_examples_found_in_workers_are_counted_here():
  """With skip_bad_examples the workers replace index 13 by 14 and 27 by 28; their record of it comes back
  with the batches, so the training process's split counts both, and the batches equal those made here."""
  items = [(np.arange(s, s + 10), np.ones(10, bool)) for s in range(0, 40, 10)]
  in_workers = bad_examples.GuardedSplit(FlakySplit(n=40, broken={13, 27}), "fake train", skip=True)
  got = batches_of(host_pipeline.EvalBatch(in_workers, host_pipeline.Host()), items, workers=2)
  here = bad_examples.GuardedSplit(FlakySplit(n=40, broken={13, 27}), "fake train", skip=True)
  assert_batches_equal(got, [host_pipeline.EvalBatch(here, host_pipeline.Host())(i) for i in items])
  assert in_workers.bad_count == here.bad_count == 2
  assert in_workers.replacement == here.replacement == {13: 14, 27: 28}
  assert "OSError" in in_workers.bad[13]


@pytest.mark.slow
def test_streamed_tfds_batches_in_workers():
  tfds = pytest.importorskip("tensorflow_datasets")
  c = base_config.base_config()
  c.data.name, c.data.in_memory, c.data.image_size = "tfds:imagenet2012", False, 24
  with tfds.testing.mock_data(num_examples=48):
    split = sources.load(c.data).train
    make = host_pipeline.TrainBatch(split, (0,), 8, host_pipeline.Host())
    assert_batches_equal(batches_of(make, range(2, 8), workers=2), [make(s) for s in range(2, 8)])


@pytest.mark.parametrize("consume", ["all", "first"])
def test_a_closed_pipeline_leaves_no_semaphores_for_a_later_garbage_collection(consume):
  """grain's worker pool leaves its multiprocessing semaphores in reference cycles (50 for two workers).
  Left to a later, automatic collection they can be finalised inside a call into multiprocessing's
  resource tracker, which warns "ResourceTracker called reentrantly ... might leak" for each. `iterate`
  frees them when it ends, read to the end or closed early. Automatic collection is off meanwhile, so
  only `iterate` can have freed them."""
  split = bad_examples.GuardedSplit(FlakySplit(n=40, broken=set()), "fake train", skip=False)
  make = host_pipeline.EvalBatch(split, host_pipeline.Host())
  items = [(np.arange(s, s + 10), np.ones(10, bool)) for s in range(0, 40, 10)]
  gc.collect()
  gc.disable()
  try:
    batches = host_pipeline.iterate(make, items, workers=2)
    first = jax_free_copy(next(batches))
    if consume == "all":
      assert len([jax_free_copy(b) for b in batches]) == len(items) - 1
    batches.close()
    del batches
    gc.set_debug(gc.DEBUG_SAVEALL)   # what a collection now finds stays in gc.garbage, to be counted
    gc.collect()
    left = [o for o in gc.garbage if isinstance(o, synchronize.SemLock)]
  finally:
    gc.set_debug(0)
    gc.garbage.clear()
    gc.enable()
  assert_batches_equal([first], [make(items[0])])
  assert not left, f"{len(left)} semaphores of the closed pipeline left for a later collection"
