"""Test setup: 8 fake CPU devices before JAX initialises, and quiet TensorFlow.

Also the session-scoped fixtures every folder shares (each pytest process writes them once): a tiny
custom CSV dataset and a small official-format .npz checkpoint.

Where a test goes: the folders mirror the code they test.
  mst/<subpackage>/<module>_test.py  unit tests of mst/<subpackage>/<module>.py (one file that
                                     covers several modules sits under the main one)
  configs/, experiments/             tests of the config files and of the tooling in experiments/
  system/                            end-to-end behaviour across the package: the paper's
                                     protocol, faults, hostile input, compatibility, the layout,
                                     multi-host and SLURM runs, the docs' commands and outputs
  support/                           what tests share (`from support import ...`): builders,
                                     fake downloads, writers, scripts; no test module imports
                                     another test module
  data/                              the compatibility fixture, never rewritten
pytest.ini puts tests/ on the path and imports test modules by their path (importlib), so files of
the same name in two folders do not collide.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
# Keep TensorFlow off the device memory JAX may use, and single-threaded enough for 2 cores.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# The console scripts run in-process here: no persistent compilation cache in the home folder.
os.environ.setdefault("MST_CACHE_DIR", "off")
# Tests compile hundreds of small programs that then run for milliseconds: XLA skips most of its
# optimisation passes (a quarter off the quick tier), here and in the mst-train subprocesses tests
# start, which inherit it. Runs are compared with each other under this one setting; the parity
# tests, which compare with a reference's numbers, compile the optimised programs users run
# (`optimized_programs` below, support.runs.OPTIMIZED_ENV for their subprocesses).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

# pylint: disable=wrong-import-position  (JAX must see the flags above before it is imported)
import jax
from jax.experimental.compilation_cache import compilation_cache
import pytest

from support.checkpoints import write_npz
from support.images import write_csv_dataset



@pytest.fixture(scope="session", autouse=True)
def shared_compilation_cache(tmp_path_factory):
  """One persistent compilation cache for this test session's pytest processes (both xdist
  workers): a program compiled once is loaded, not compiled again, when a later test builds the
  same one (a fresh `jax.jit` of the same model, the same model in another file). It roughly
  halves the time of the model and checkpoint tests.

  Fresh for each session, so no run reuses another's programs, and set in-process only: the
  subprocesses tests start keep the cache settings they choose.
  """
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # the session's folder, which holds each worker's
  jax.config.update("jax_compilation_cache_dir", str(root / "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
  # A size limit is what makes JAX lock the cache's files, so two workers can share it.
  jax.config.update("jax_compilation_cache_max_size", 2 << 30)
  compilation_cache.reset_cache()  # in case something compiled before this fixture


@pytest.fixture
def optimized_programs():
  """XLA's full optimisation for this test's compiles, as users run them: for tests that compare
  scores with a reference's (the release's, PyTorch's)."""
  before = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", False)
  yield
  jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture(scope="session")
def csv_dataset(tmp_path_factory):
  """The default `write_csv_dataset` (24 images, 16 / 4 / 4), shared by the tests that train."""
  return write_csv_dataset(tmp_path_factory.mktemp("csv_dataset"))


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory):
  """`write_npz` of SMALL_MODEL, seed 0: a scoring checkpoint for the CLI tests."""
  return write_npz(tmp_path_factory.mktemp("small_npz") / "small.npz")
