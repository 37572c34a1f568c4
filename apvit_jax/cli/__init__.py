"""The command-line programs: `train` (python train.py, or the installed apvit-train) and `evaluate`
(python eval.py, apvit-eval). Each module defines its absl flags and `main`; `start` runs one."""
from __future__ import annotations

import contextlib
import sys

from absl import app, flags

from apvit_jax.config_checks import ConfigError


def start(main, module_name: str) -> None:
  """absl's app.run(main) with the help of module `module_name` (its docstring as the usage text, its
  flags as the ones --helpshort lists), whether started as a script (python train.py) or as an installed
  console command (apvit-train), whose __main__ is a generated wrapper."""
  sys.modules["__main__"].__doc__ = sys.modules[module_name].__doc__
  for flag in flags.FLAGS.get_key_flags_for_module(module_name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main)


@contextlib.contextmanager
def config_errors_as_usage_errors():
  """A ConfigError (a field's value, or fields that do not fit together or with the data) ends the
  command with its one-line message on stderr, exit status 1, no traceback."""
  try:
    yield
  except ConfigError as e:
    sys.exit(f"config error: {e}")
