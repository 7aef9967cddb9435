"""The persistent compilation cache: where it lives, and mst-predict processes sharing it."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mst.runtime import compilation_cache
from support import REPO



def test_cache_dir_follows_mst_cache_dir_then_xdg_then_home():
  home = os.path.expanduser("~")
  assert compilation_cache.cache_dir({}) == os.path.join(home, ".cache", "mst", "jax")
  assert compilation_cache.cache_dir({"XDG_CACHE_HOME": "/x"}) == "/x/mst/jax"
  assert compilation_cache.cache_dir({"XDG_CACHE_HOME": "/x", "MST_CACHE_DIR": "/m"}) == "/m/jax"
  assert compilation_cache.cache_dir({"MST_CACHE_DIR": "off"}) is None
  assert compilation_cache.cache_dir({"MST_CACHE_DIR": "OFF", "XDG_CACHE_HOME": "/x"}) is None


def _predict(cache, checkpoint, image):
  env = dict(os.environ, PYTHONPATH=str(REPO), MST_CACHE_DIR=str(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",  # cache every program, however quick
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  command = [sys.executable, "-m", "mst.cli.predict", "--quiet", "--checkpoint", checkpoint, image]
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _finish(process):
  stdout, stderr = process.communicate(timeout=600)
  assert process.returncode == 0, stderr[-3000:]
  return stdout


def _entries(cache: pathlib.Path) -> dict[str, bytes]:
  """Each cached program's name -> its last-read stamp (JAX rewrites it on every cache hit)."""
  folder = cache / "jax"
  return {path.name: (folder / path.name.replace("-cache", "-atime")).read_bytes()
          for path in folder.glob("*-cache")}


@pytest.mark.slow
def test_two_processes_fill_one_cache_and_a_third_compiles_nothing(tmp_path, small_npz):
  image = str(tmp_path / "photo.png")
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 90, 3), np.uint8)).save(image)
  cache = tmp_path / "cache"

  first = [_predict(cache, small_npz, image) for _ in range(2)]  # at once, into an empty cache
  outputs = [_finish(process) for process in first]
  filled = _entries(cache)
  third = _finish(_predict(cache, small_npz, image))

  assert '"score"' in outputs[0] and outputs[0] == outputs[1] == third
  assert filled, "the first runs wrote no compiled program"
  reread = _entries(cache)
  assert reread.keys() == filled.keys(), "the third run compiled a program the cache lacked"
  # Not every entry: a first start also compiles what tracing the parameter shapes needs, and a
  # later one reads those shapes from the traced cache instead.
  assert any(reread[name] != filled[name] for name in filled), "no cached program was read"
