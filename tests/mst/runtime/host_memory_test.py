"""mst.runtime.host_memory: a freed large buffer is reused, not faulted in again on the next
step."""

import os
import subprocess
import sys

import pytest

from support import REPO


SIZE = 216 << 20  # the demo train step's largest temporary buffer
# Five "steps" on a worker thread, each allocating, writing and freeing one large buffer (as XLA's
# CPU runtime does); prints the minor page faults they took.
STEPS = f"""
import ctypes, resource, runpy, sys, threading
from mst.runtime import host_memory
if sys.argv[1] == "keep":
  assert host_memory.keep_freed_memory()
elif sys.argv[1] != "default":  # a script that trains in its own process, run as a user runs it
  sys.argv = [sys.argv[1], "--help"]
  try:
    runpy.run_path(sys.argv[0], run_name="__main__")
  except SystemExit:
    pass
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def steps():
  for _ in range(5):
    buffer = libc.malloc({SIZE})
    ctypes.memset(buffer, 1, {SIZE})
    libc.free(buffer)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
worker = threading.Thread(target=steps)
worker.start()
worker.join()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode):
  done = subprocess.run([sys.executable, "-c", STEPS, mode],
                        env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                        timeout=120, check=True, cwd=REPO)
  return int(done.stdout.split()[-1])  # after what a script printed


def test_freed_buffers_are_reused_instead_of_faulted_in_every_step():
  pages = SIZE // os.sysconf("SC_PAGE_SIZE")
  assert _faults("default") > 4 * pages  # glibc maps and unmaps the buffer every step
  assert _faults("keep") < 2 * pages  # faulted in once, then reused


@pytest.mark.experiments
@pytest.mark.slow
@pytest.mark.parametrize("script", ["experiments/sweep.py", "experiments/scratch_recipe.py"])
def test_scripts_that_train_in_process_keep_freed_memory(script):
  # They set it before TensorFlow and JAX start threads, as mst-train does.
  assert _faults(script) < 2 * SIZE // os.sysconf("SC_PAGE_SIZE")
