"""A folder made once per test session, shared by every pytest-xdist worker (the pattern pytest-xdist's
documentation gives for session fixtures): the first worker to ask makes it under a file lock, the others
wait for it and reuse it. For the uninterrupted reference runs that several fault tests compare against."""
import fcntl
import os
import pathlib
import shutil
from typing import Callable


def shared_folder(tmp_path_factory, name: str, make: Callable[[pathlib.Path], None]) -> pathlib.Path:
  """-> the folder `name`, filled by make(folder) once per session (again by the next worker to ask if
  make raised: a failure is not cached)."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent   # the session's folder, above each worker's own
  folder, done = root / name, root / f"{name}.done"
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)   # released when the file closes
    if not done.exists():
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir()
      make(folder)
      done.touch()
  return folder
