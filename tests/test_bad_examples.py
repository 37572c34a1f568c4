"""Data failing mid-run: an unreadable example of a streamed split stops the run naming it, or, with
data.skip_bad_examples, is replaced by the next readable one and counted; every other example of every
batch stays where it was."""
import numpy as np
import pytest

from apvit_jax.data import bad_examples, batches
from apvit_jax.data.tfds import StreamingSplit, shard_of
from apvit_jax.data.types import DataError
from apvit_jax.training import loop
from fake_splits import FlakySplit
from test_training import logged_metrics, tiny_config


@pytest.fixture(autouse=True)
def no_retry_wait(monkeypatch):
  monkeypatch.setattr(bad_examples, "RETRY_SECONDS", (0.0, 0.0))


def test_unreadable_example_is_named_when_not_skipping():
  guarded = bad_examples.GuardedSplit(FlakySplit(broken={7}), "fake train", skip=False)
  np.testing.assert_array_equal(guarded.get([1, 2, 3])[0], guarded.split.images[[1, 2, 3]])
  with pytest.raises(DataError, match=r"reading example 7 of fake train failed after 3 attempts: OSError: "
                                      r".*Input/output error reading record 7.*skip_bad_examples=True"):
    guarded.get([3, 7, 9])


def test_skipping_replaces_in_place_and_keeps_every_other_example_of_every_batch():
  """A whole run's batches (each step's shuffled global batch) with two unreadable examples, one of
  them followed by another unreadable one: only their positions change, to the next readable index."""
  clean = FlakySplit()
  guarded = bad_examples.GuardedSplit(FlakySplit(broken={7, 8, 20}, transient={30}), "fake train", skip=True)
  replaced = {7: 9, 8: 9, 20: 21}
  hits = 0
  for step in range(40):
    idx = batches.train_indices(3, step, 50, 10)
    images, labels = guarded.get(idx)
    want = np.array([replaced.get(int(i), int(i)) for i in idx])
    np.testing.assert_array_equal(images, clean.images[want])
    np.testing.assert_array_equal(labels, clean.labels[want])
    hits += sum(int(i) in replaced for i in idx)
  assert hits >= 3, "the seeded order never drew a broken example; draw more steps"
  assert sorted(guarded.bad) == [7, 8, 20] and guarded.bad_count == 3   # 30 failed once: a retry read it
  assert "Input/output error" in guarded.bad[7]
  # Replacements are remembered: a batch holding a bad index is read in one call, not example by example.
  reads = guarded.split.reads
  guarded.get([7, 1, 2])
  assert guarded.split.reads == reads + 1


def test_a_run_of_unreadable_examples_stops_even_when_skipping(monkeypatch):
  monkeypatch.setattr(bad_examples, "MAX_REPLACEMENT_TRIES", 4)
  guarded = bad_examples.GuardedSplit(FlakySplit(broken=range(10, 16)), "fake train", skip=True)
  with pytest.raises(DataError, match="4 examples of fake train after index 10 in a row cannot be read"):
    guarded.get([10])


def test_shard_of_names_the_file_and_record():
  class Instruction:
    def __init__(self, filename, skip, take):
      self.filename, self.skip, self.take = filename, skip, take
  shards = [Instruction("train.array_record-00000-of-00002", 0, 5),
            Instruction("train.array_record-00001-of-00002", 2, 4)]
  assert shard_of(shards, 4) == "file train.array_record-00000-of-00002, record 4"
  assert shard_of(shards, 5) == "file train.array_record-00001-of-00002, record 2"
  assert shard_of(shards, 8) == "file train.array_record-00001-of-00002, record 5"
  assert shard_of(shards, 9) == ""


@pytest.mark.slow
def test_training_on_a_streamed_source_with_a_bad_record(tmp_path, monkeypatch):
  """The trainer end to end (a tfds source read on demand): one record of the training split raises;
  without skipping the run stops naming it, with skipping it finishes and logs the count."""
  tfds = pytest.importorskip("tensorflow_datasets")
  config = lambda **o: tiny_config(**{"data.name": "tfds:imagenet2012", "data.in_memory": False,
                                      "data.image_size": 24, "total_steps": 4, "batch_size": 8,
                                      "log_every_steps": 1, "data.workers": 0, **o})
  # Steps 0-2 are one pass over the 24 examples: `bad` is first read for step 2 (made while step 1 runs;
  # batches made in the training process: workers would read further ahead, see test_host_pipeline.py).
  bad = int(batches.train_indices(config().seed, 2, 24, 8)[3])
  real_read = StreamingSplit._read

  def read(self, index):
    if len(self) == 24 and index == bad:
      raise ValueError("image file is truncated (3 bytes not processed)")
    return real_read(self, index)
  monkeypatch.setattr(StreamingSplit, "_read", read)
  with tfds.testing.mock_data(num_examples=24):
    with pytest.raises(DataError, match=rf"example {bad} of imagenet2012 train .*image file is truncated"):
      loop.train_and_evaluate(config(), tmp_path / "stops")
    summary = loop.train_and_evaluate(config(**{"data.skip_bad_examples": True}), tmp_path / "skips")
  assert summary["final_step"] == 4 and summary["train_bad_examples"] == 1
  assert summary["test_bad_examples"] == 1   # the mock's test split holds the same 24 records
  train = [r for r in logged_metrics(tmp_path / "skips") if r["split"] == "train"]
  counts = [r["bad_examples"] for r in train]
  assert counts[0] == 0 and counts[-1] == 1 and counts == sorted(counts) and len(counts) == 4
