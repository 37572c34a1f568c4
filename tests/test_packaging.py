"""`pip install .`: the wheel holds the whole library (every module of apvit_jax/) and nothing else, and
its console commands apvit-train and apvit-eval train and evaluate from outside the repository, with only
the installed copy importable."""
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def pip(*args, cwd=None):
  out = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


@pytest.mark.slow
def test_wheel_installs_the_library_and_the_commands(tmp_path):
  # Built from a copy: setuptools writes build/ and *.egg-info/ next to pyproject.toml, not into the checkout.
  source = tmp_path / "source"
  shutil.copytree(ROOT / "apvit_jax", source / "apvit_jax", ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(ROOT / name, source / name)
  pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(source))
  (wheel,) = (tmp_path / "dist").glob("apvit_jax-*.whl")
  names = set(zipfile.ZipFile(wheel).namelist())
  modules = {str(p.relative_to(ROOT)) for p in (ROOT / "apvit_jax").rglob("*.py")}
  assert modules <= names, f"left out of the wheel: {sorted(modules - names)}"
  assert all(n.startswith(("apvit_jax/", "apvit_jax-")) for n in names), sorted(names)   # no configs/, tests/
  site = tmp_path / "site"
  pip("install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel))
  # Only the installed copy: run from outside the repository, the checkout not on the path.
  env = {**os.environ, "PYTHONPATH": str(site), "PYTHONUNBUFFERED": "1"}
  run = lambda *args: subprocess.run([str(site / "bin" / args[0]), *args[1:]], cwd=tmp_path, env=env,
                                     capture_output=True, text=True)
  where = subprocess.run([sys.executable, "-c", "import apvit_jax; print(apvit_jax.__file__)"], cwd=tmp_path,
                         env=env, capture_output=True, text=True).stdout
  assert pathlib.Path(where.strip()).is_relative_to(site), where
  help_text = run("apvit-train", "--helpshort").stdout
  assert "apvit-train --config=configs/quickstart.py" in help_text and "--workdir" in help_text
  work = tmp_path / "work"
  config = f"--config={ROOT / 'configs' / 'quickstart.py'}:smoke"
  trained = run("apvit-train", config, f"--workdir={work}", "--config.total_steps=4",
                "--config.progress_bar=False")
  assert trained.returncode == 0 and "FINAL best_accuracy=" in trained.stdout, trained.stderr[-2000:]
  evaluated = run("apvit-eval", config, f"--workdir={work}", "--config.total_steps=4")
  assert evaluated.returncode == 0 and "wrote" in evaluated.stdout, evaluated.stderr[-2000:]
