"""A GPU host with its own JAX and no TensorFlow (mst installed with `pip install --no-deps`):
`mst-predict` and `mst.load` score a kept workdir and official-format `.npz` files there as they do
with TensorFlow installed, and never import it."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mst.cli import predict
from support import DATA
from support import REPLAY_TOLERANCE
from support.runs import OPTIMIZED_ENV

ABSENT = ("tensorflow", "tensorflow_datasets", "tensorboard", "clu")

# `sys.modules[name] = None` is what "not installed" looks like to both `import name`
# (ModuleNotFoundError) and `importlib.util.find_spec(name)` (None), which etils asks before it
# reaches for TensorFlow's file systems.
SCORE = r"""
import json, sys
for name in %r:
  sys.modules[name] = None
import mst
from mst.cli import predict
status = predict.main(["--checkpoint", sys.argv[1], "--quiet", *sys.argv[2:]])
api = [row["score"] for row in mst.load(sys.argv[1]).score_files(sys.argv[2:])]
print(json.dumps({"status": status, "api": api}))
""" % (ABSENT,)

pytestmark = pytest.mark.slow  # JAX in a subprocess


def _score_without_tensorflow(checkpoint, images, cache):
  run = subprocess.run([sys.executable, "-c", SCORE, str(checkpoint), *map(str, images)],
                       capture_output=True, text=True, check=False,
                       env={**os.environ, "MST_CACHE_DIR": str(cache), **OPTIMIZED_ENV})
  assert run.returncode == 0, run.stderr[-3000:]
  # No warning from a library that went looking for TensorFlow (the compilation cache's paths).
  assert "tensorflow" not in run.stderr.lower(), run.stderr[-3000:]
  *lines, summary = run.stdout.splitlines()
  result = json.loads(summary)
  assert result["status"] == 0
  return [json.loads(line)["score"] for line in lines], result["api"]


def test_the_kept_workdir_scores_as_the_release_did(tmp_path):
  with open(DATA / "compat_expected.json") as f:
    expected = json.load(f)
  workdir = shutil.copytree(DATA / "compat_workdir", tmp_path / "workdir")
  images = [DATA / name for name in expected["images"]]
  for _ in range(2):  # the second start reads the traced and compiled programs from the cache
    cli, api = _score_without_tensorflow(workdir, images, tmp_path / "cache")
    assert cli == pytest.approx(expected["scores"], abs=REPLAY_TOLERANCE)
    assert api == pytest.approx(expected["scores"], abs=REPLAY_TOLERANCE)


def test_an_npz_scores_jpegs_and_pngs_as_with_tensorflow(tmp_path, small_npz, capsys):
  rng = np.random.default_rng(5)
  images = []
  for name, shape in [("a.jpg", (70, 110, 3)), ("b.png", (90, 40, 3)), ("grey.png", (50, 50))]:
    Image.fromarray(rng.integers(0, 256, shape, np.uint8)).save(tmp_path / name)
    images.append(tmp_path / name)
  assert predict.main(["--checkpoint", str(small_npz), "--quiet", *map(str, images)]) == 0
  with_tensorflow = [json.loads(line)["score"] for line in capsys.readouterr().out.splitlines()]
  cli, api = _score_without_tensorflow(small_npz, images, tmp_path / "cache")
  assert cli == pytest.approx(with_tensorflow, abs=1e-5)
  assert api == pytest.approx(with_tensorflow, abs=1e-5)
