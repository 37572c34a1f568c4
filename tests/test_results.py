"""python -m apvit_jax.results: final and best test values per seed and mean ± sd per experiment, from
workdirs written by the trainer's own MetricWriter (one-seed, resumed and multi-seed runs), checked
against NumPy on random values."""
import json
import types

import numpy as np
import pytest

from apvit_jax import results
from apvit_jax.training import metrics as metrics_lib
from apvit_jax.training import replicas

TASKS = ("accuracy", "accuracy/majority", "loss")


class Clock:
  """Stands in for the time module in training/metrics.py: records get the times a test chooses."""

  def __init__(self):
    self.now = 0.0

  def time(self):
    return self.now


def write_run(workdir, monkeypatch, seeds, values, starts, resume_at=None):
  """A workdir as the trainer writes it: runs.jsonl (one line per start, at the times in `starts`) and
  test records at epochs 1..E, record e at time start + 10 e. values: {name: (E, K)}. With resume_at = r
  the second start logs epochs r..E again (the first start's records from r on are superseded)."""
  clock = Clock()
  monkeypatch.setattr(metrics_lib, "time", types.SimpleNamespace(time=clock.time))
  workdir.mkdir(parents=True)
  writer = metrics_lib.MetricWriter(workdir)
  config = {"seed": seeds[0], "num_seeds": len(seeds)}
  (workdir / "runs.jsonl").write_text("".join(json.dumps({"time": t, "start_step": 0, "config": config}) + "\n"
                                              for t in starts))
  epochs = len(next(iter(values.values())))
  segments = [(starts[0], range(1, epochs + 1))]
  if resume_at is not None:
    segments = [(starts[0], range(1, epochs)), (starts[1], range(resume_at, epochs + 1))]
  for start, logged in segments:
    for e in logged:
      clock.now = start + 10.0 * e
      superseded = resume_at is not None and start == starts[0] and e >= resume_at
      noise = 0.05 if superseded else 0.0   # records logged again later differ from the ones kept
      record = replicas.summarize({n: v[e - 1] + noise for n, v in values.items()}, seeds)
      writer.write(100 * e, "test", {**record, "epoch": float(e), "images_per_sec": 50.0 * len(seeds)},
                   echo=None)
  return clock


def random_values(rng, epochs, k):
  return {n: rng.uniform(0.1, 0.9, (epochs, k)) for n in TASKS}


def test_one_seed_resumed_and_multi_seed_workdirs_against_numpy(tmp_path, monkeypatch):
  rng = np.random.default_rng()
  epochs = 5
  one = [random_values(rng, epochs, 1) for _ in range(2)]
  multi = random_values(rng, epochs, 2)
  write_run(tmp_path / "a_s0", monkeypatch, [0], one[0], starts=[1000.0])
  write_run(tmp_path / "a_s1", monkeypatch, [1], one[1], starts=[5000.0, 9000.0], resume_at=3)
  write_run(tmp_path / "a_more", monkeypatch, [2, 3], multi, starts=[20000.0])

  assert list(results.read_workdir(tmp_path / "a_s0")[0].final) == ["accuracy", "accuracy/majority"]
  assert list(results.read_workdir(tmp_path / "a_more")[1].best) == ["accuracy", "accuracy/majority"]
  got = [r for w in ("a_s0", "a_s1", "a_more") for r in results.read_workdir(tmp_path / w, TASKS)]
  assert [r.seed for r in got] == [0, 1, 2, 3]
  for name in TASKS:
    table = np.concatenate([one[0][name], one[1][name], multi[name]], axis=1)   # (epochs, seeds)
    best = table.min(0) if name == "loss" else table.max(0)
    best_epoch = 1 + (table.argmin(0) if name == "loss" else table.argmax(0))
    for k, r in enumerate(got):
      np.testing.assert_allclose(r.final[name], table[-1, k], rtol=1e-12)
      np.testing.assert_allclose(r.best[name], best[k], rtol=1e-12)
      assert r.best_epoch[name] == best_epoch[k]
  assert [r.epochs for r in got] == [epochs] * 4
  # wall: one start to its last record; the resumed run: (epoch 4's record - start 1) + (epoch 5's - start 2)
  assert got[0].wall_seconds == 10.0 * epochs
  assert got[1].wall_seconds == 10.0 * (epochs - 1) + 10.0 * epochs
  assert got[2].wall_seconds == got[3].wall_seconds == 10.0 * epochs and got[2].shared_by == 2
  assert [r.images_per_sec for r in got] == [50.0] * 4   # the multi-seed run's 100 img/s, per replica

  summary = results.summarize(got)
  for name in TASKS:
    finals = [r.final[name] for r in got]
    np.testing.assert_allclose(summary["final"][name]["mean"], np.mean(finals), rtol=1e-12)
    np.testing.assert_allclose(summary["final"][name]["sd"], np.std(finals, ddof=1), rtol=1e-12)
  assert summary["wall_seconds"] == 10.0 * epochs * 3 + 10.0 * (epochs - 1)   # the shared run counted once


def test_command_prints_the_table_and_never_overwrites_its_json(tmp_path, monkeypatch, capsys):
  rng = np.random.default_rng()
  values = [random_values(rng, 3, 1) for _ in range(3)]
  for s in range(3):
    write_run(tmp_path / f"b_s{s}", monkeypatch, [s], values[s], starts=[100.0 * s])
  group = ",".join(str(tmp_path / f"b_s{s}") for s in range(3))
  out = tmp_path / "results.json"
  results.main([group, "--metrics=accuracy", f"--json={out}"])
  table = capsys.readouterr().out
  finals = np.array([v["accuracy"][-1, 0] for v in values])
  assert f"{100 * finals.mean():.2f} ± {100 * finals.std(ddof=1):.2f}" in table
  assert "| **b** | mean ± sd of 3 |" in table and "accuracy/majority" not in table
  saved = json.loads(out.read_text())
  assert saved[0]["experiment"] == "b" and [r["seed"] for r in saved[0]["seeds"]] == [0, 1, 2]
  before = out.read_bytes()
  with pytest.raises(SystemExit):
    results.main([group, f"--json={out}"])
  assert "not overwritten" in capsys.readouterr().err and out.read_bytes() == before


def test_bad_input_is_named(tmp_path, monkeypatch, capsys):
  with pytest.raises(FileNotFoundError, match="no metrics.jsonl in .*nowhere"):
    results.read_workdir(tmp_path / "nowhere")
  rng = np.random.default_rng()
  write_run(tmp_path / "c_s0", monkeypatch, [0], random_values(rng, 2, 1), starts=[0.0])
  write_run(tmp_path / "c_again", monkeypatch, [0], random_values(rng, 2, 1), starts=[0.0])
  with pytest.raises(ValueError, match=r"no 'accuracy/top' in the test record of step 100; it logs "
                                       r"\['accuracy', 'accuracy/majority', 'loss'\]"):
    results.read_workdir(tmp_path / "c_s0", ["accuracy/top"])
  with pytest.raises(SystemExit):
    results.main([f"{tmp_path / 'c_s0'},{tmp_path / 'c_again'}"])
  assert "seed(s) [0] appear in more than one workdir" in capsys.readouterr().err
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "train", "loss": 1.0}) + "\n")
  with pytest.raises(ValueError, match="holds no test record"):
    results.read_workdir(tmp_path / "empty")


def test_seeds_come_from_the_records_without_runs_jsonl(tmp_path, monkeypatch):
  """metrics.jsonl alone (e.g. copied back from another machine): a multi-seed run's records name its
  seeds; a one-seed run's seed is unknown (None, "?" in the table), its values still read. No wall time."""
  rng = np.random.default_rng()
  multi, one = random_values(rng, 2, 2), random_values(rng, 2, 1)
  write_run(tmp_path / "m", monkeypatch, [7, 8], multi, starts=[0.0])
  write_run(tmp_path / "o", monkeypatch, [5], one, starts=[0.0])
  for w in ("m", "o"):
    (tmp_path / w / "runs.jsonl").unlink()
  got = results.read_workdir(tmp_path / "m") + results.read_workdir(tmp_path / "o")
  assert [r.seed for r in got] == [7, 8, None] and {r.wall_seconds for r in got} == {None}
  np.testing.assert_allclose([r.final["accuracy/majority"] for r in got],
                             [*multi["accuracy/majority"][-1], one["accuracy/majority"][-1, 0]], rtol=1e-12)
  assert "| o | ? | 2 |" in results.markdown([("o", got[2:])])
