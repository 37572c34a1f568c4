"""python -m apvit_jax.plot: curves read from metrics.jsonl, a resumed run's repeated steps, the PNG."""
import json
import pathlib
import subprocess
import sys

import pytest

from apvit_jax import plot


def write_metrics(workdir, records):
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_curves_by_epoch_with_a_resumed_run(tmp_path):
  records = [{"step": 5, "split": "train", "loss": 2.0}, {"step": 10, "split": "train", "loss": 1.5},
             {"step": 10, "split": "test", "loss": 1.6, "accuracy": 0.4, "epoch": 1.0},
             {"step": 10, "split": "train", "loss": 1.4},  # resumed at step 5: step 10 logged again
             {"step": 20, "split": "test", "loss": 1.2, "accuracy": 0.6, "epoch": 2.0}]
  write_metrics(tmp_path, records)
  c = plot.curves(plot.read_metrics(tmp_path))
  assert c["train_loss"] == ([0.5, 1.0], [2.0, 1.4], None)
  assert c["test_accuracy"] == ([1.0, 2.0], [0.4, 0.6], None)
  assert c["test_loss"] == ([1.0, 2.0], [1.6, 1.2], None)


def test_multi_seed_curves_are_the_mean_with_a_band(tmp_path):
  records = [{"step": 4, "split": "train", "loss_mean": 2.0, "loss_sd": 0.2, "loss/seed0": 1.8, "loss/seed1": 2.2},
             {"step": 4, "split": "test", "loss_mean": 1.6, "loss_sd": 0.1, "accuracy_mean": 0.4,
              "accuracy_sd": 0.05, "epoch": 1.0}]
  write_metrics(tmp_path, records)
  c = plot.curves(plot.read_metrics(tmp_path))
  assert c["train_loss"] == ([1.0], [2.0], [0.2])
  assert c["test_accuracy"] == ([1.0], [0.4], [0.05])
  out = plot.plot([tmp_path], tmp_path / "band.png")
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_writes_a_png(tmp_path):
  for name, acc in (("a", 0.5), ("b", 0.7)):
    write_metrics(tmp_path / name, [{"step": 4, "split": "train", "loss": 1.0},
                                    {"step": 4, "split": "test", "loss": 0.9, "accuracy": acc, "epoch": 1.0}])
  out = subprocess.run([sys.executable, "-m", "apvit_jax.plot", str(tmp_path / "a"), str(tmp_path / "b"),
                        f"--out={tmp_path / 'c.png'}"], capture_output=True, text=True,
                       cwd=pathlib.Path(__file__).resolve().parents[1])
  assert out.returncode == 0, out.stderr
  assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
    plot.read_metrics(tmp_path / "missing")


def test_seeds_in_separate_workdirs_are_one_line_with_a_band(tmp_path):
  """--seeds: one-seed workdirs drawn as their mean and sample sd (ddof=1, as a multi-seed run logs) at
  the epochs all of them logged; --test picks the test metrics (an IPS run's accuracy/TASK)."""
  import numpy as np
  rng = np.random.default_rng()
  acc = rng.uniform(0.1, 0.9, (3, 3))   # 3 seeds x 3 epochs
  for seed in range(3):
    epochs = 3 if seed else 2             # seed 0 stopped after two epochs
    write_metrics(tmp_path / f"s{seed}", [
        r for e in range(epochs) for r in ({"step": 4 * e + 4, "split": "train", "loss": float(acc[seed, e])},
                                           {"step": 4 * e + 4, "split": "test", "loss": 1.0, "epoch": e + 1.0,
                                            "accuracy/top": float(acc[seed, e])})])
  runs = [plot.curves(plot.read_metrics(tmp_path / f"s{s}"), ("accuracy/top",)) for s in range(3)]
  epochs, mean, sd = plot.seed_curves(runs)["test_accuracy/top"]
  assert epochs == [1.0, 2.0]
  np.testing.assert_allclose(mean, acc[:, :2].mean(0), rtol=1e-12)
  np.testing.assert_allclose(sd, acc[:, :2].std(0, ddof=1), rtol=1e-12)
  out = plot.plot([tmp_path / f"s{s}" for s in range(3)], tmp_path / "seeds.png", ("accuracy/top",), seeds=True)
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ValueError, match="no 'accuracy/majority' in the record of step 4; it has"):
    plot.curves(plot.read_metrics(tmp_path / "s0"), ("accuracy/majority",))


def test_seeds_may_be_replicas_of_a_multi_seed_workdir(tmp_path):
  """--seeds over a one-seed workdir and a two-seed one: three seeds, each replica's own values (not the
  run's logged mean), with the shared names (epoch) kept."""
  import numpy as np
  rng = np.random.default_rng()
  acc = rng.uniform(0.1, 0.9, (3, 2))   # seeds 0, 1, 2 x 2 epochs
  write_metrics(tmp_path / "one", [{"step": 4 * e + 4, "split": "test", "loss": 1.0, "epoch": e + 1.0,
                                     "accuracy/top": float(acc[0, e])} for e in range(2)])
  write_metrics(tmp_path / "two", [
      {"step": 4 * e + 4, "split": "test", "epoch": e + 1.0, "loss_mean": 1.0, "loss_sd": 0.0,
       "accuracy/top_mean": float(acc[1:, e].mean()), "accuracy/top_sd": 9.0,
       **{f"{name}/seed{s}": v for s in (1, 2) for name, v in (("loss", 1.0), ("accuracy/top", float(acc[s, e])))}}
      for e in range(2)])
  by_seed = plot.replica_records(plot.read_metrics(tmp_path / "two"))
  assert list(by_seed) == [1, 2] and list(plot.replica_records(plot.read_metrics(tmp_path / "one"))) == [None]
  replicas = list(by_seed.values())
  assert [[r["accuracy/top"] for r in seed] for seed in replicas] == acc[1:].tolist()
  assert replicas[1][0] == {"step": 4, "split": "test", "epoch": 1.0, "loss": 1.0, "accuracy/top": acc[2, 0]}
  each = [plot.curves(r, ("accuracy/top",)) for w in ("one", "two")
          for r in plot.replica_records(plot.read_metrics(tmp_path / w)).values()]
  epochs, mean, sd = plot.seed_curves(each)["test_accuracy/top"]
  assert epochs == [1.0, 2.0]
  np.testing.assert_allclose(mean, acc.mean(0), rtol=1e-12)
  np.testing.assert_allclose(sd, acc.std(0, ddof=1), rtol=1e-12)
  out = plot.plot([tmp_path / "one", tmp_path / "two"], tmp_path / "mixed.png", ("accuracy/top",), seeds=True)
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  plot.plot([tmp_path / "two"], tmp_path / "replicas.png", ("accuracy/top",), seeds=True)   # two seeds in one
  (label, three), (alone, first) = plot.lines([f"{tmp_path / 'one'},{tmp_path / 'two'}", tmp_path / "one"],
                                              ("accuracy/top",))   # commas: one experiment's seeds
  assert (label, alone) == ("runs… (3 seeds)", "one")   # the folder names share nothing
  assert three["test_accuracy/top"] == (epochs, mean, sd) and first["test_accuracy/top"][1] == acc[0].tolist()
  assert plot.lines([tmp_path / "one", tmp_path / "two"], ("accuracy/top",), seeds=True)[0][1] == three
  with pytest.raises(ValueError, match="at least two are needed"):
    plot.plot([tmp_path / "one"], tmp_path / "single.png", ("accuracy/top",), seeds=True)
