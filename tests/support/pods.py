"""A pod worker's home as experiments/pod.py's `setup` leaves it, for the tests that run pod run
scripts on this machine (pod_worker_test, sweep_test)."""

import pathlib
import shutil
import sys

from support import REPO



def install_pod_worker(home: pathlib.Path) -> None:
  """What setup leaves in `home` for the run script: ~/mst with experiments/pod_worker.py, and
  ~/mst-venv/bin/python3 (this Python, with mst's dependencies)."""
  (home / "mst" / "experiments").mkdir(parents=True)
  for name in ("__init__.py", "pod_worker.py"):
    shutil.copy(REPO / "experiments" / name, home / "mst" / "experiments" / name)
  (home / "mst-venv" / "bin").mkdir(parents=True)
  (home / "mst-venv" / "bin" / "python3").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
  (home / "mst-venv" / "bin" / "python3").chmod(0o755)
