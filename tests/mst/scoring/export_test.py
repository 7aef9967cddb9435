"""`mst-export`: a SavedModel with the preprocessing inside, scored in a process without JAX or
mst, gives mst-predict's scores; the TF bucket rounding equals mst's."""

import json
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mst.checkpoints import loader
from mst.cli import export as export_cli
from mst.cli import predict
from mst.data import multiscale
from mst.scoring import export
from support.checkpoints import scoring_params
from support.checkpoints import small_model_config
from support.readme_code import code_blocks

# Runs in a fresh interpreter where importing jax, jaxlib, flax or mst fails, as if they were not
# installed (TensorFlow itself imports jax when it can, so blocking is the honest test).
SERVE = r"""
import importlib.abc, json, sys

class NotInstalled(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in ("jax", "jaxlib", "flax", "mst"):
      raise ImportError(f"{name} is not installed in this process")

sys.meta_path.insert(0, NotInstalled())
exec(open("readme_serve.py").read())  # docs/scoring.md's example: prints photo.jpg's score
import tensorflow as tf

model = tf.saved_model.load(sys.argv[1])
images = [open(path, "rb").read() for path in sys.argv[2:]]
single = [float(model.signatures["serving_default"](tf.constant(data))["output_0"])
          for data in images]
batch = model.signatures["score_batch"](tf.constant(images))
print(json.dumps({"single": single, "batch": batch["output_0"].numpy().tolist(),
                  "keys": sorted(batch), "mst_or_jax": sorted(
                      m for m in sys.modules if m.split(".")[0] in ("jax", "mst", "flax"))}))
"""


def test_bucket_length_in_tf_equals_mst():
  lengths = list(range(1, 300)) + [511, 512, 513, 1000, 1023, 1024, 1025, 11943, 65535,
                                   65536, 65537]
  got = [int(export.bucket_length(tf.constant(n, tf.int32))) for n in lengths]
  assert got == [multiscale.bucket_length(n) for n in lengths]


def _images(folder):
  rng = np.random.default_rng(0)
  rgb = lambda h, w: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  # 197 to 210 tokens (bucket 223) and, for a.png, 263 (bucket 319).
  images = {"photo.jpg": (rgb(45, 71), "JPEG"), "a.png": (rgb(200, 300), "PNG"),
            "c.bmp": (rgb(130, 33), "BMP"), "d.gif": (rgb(50, 50), "GIF"),
            "grey.png": (rgb(37, 53)[..., 0], "PNG")}
  for name, (pixels, kind) in images.items():
    Image.fromarray(pixels).save(folder / name, kind)
  return list(images)


@pytest.mark.slow
def test_readme_serve_commands_give_mst_predicts_scores_without_jax(tmp_path, monkeypatch,
                                                                    capsys, small_npz):
  (command,) = code_blocks("docs/scoring.md", "Serve it", "bash")
  (example,) = code_blocks("docs/scoring.md", "Serve it", "python")
  monkeypatch.chdir(tmp_path)
  shutil.copy(small_npz, "koniq_ckpt.npz")
  (tmp_path / "readme_serve.py").write_text(example)
  images = _images(tmp_path)
  argv = shlex.split(command)
  assert argv[0] == "mst-export"
  assert export_cli.main(argv[1:]) == 0
  assert "SavedModel written" in capsys.readouterr().out
  assert not [name for name in os.listdir("exported/koniq") if "partial" in name]

  predict.main(["--quiet", "--checkpoint", "koniq_ckpt.npz"] + images)
  expected = [json.loads(line)["score"] for line in capsys.readouterr().out.splitlines()]
  done = subprocess.run([sys.executable, "-c", SERVE, "exported/koniq/1"] + images,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=""))
  assert done.returncode == 0, done.stderr[-3000:]
  readme_score, served = done.stdout.splitlines()[-2:]
  served = json.loads(served)
  assert served["mst_or_jax"] == []
  assert served["keys"] == ["output_0"]
  assert float(readme_score) == pytest.approx(expected[0], abs=1e-4)
  np.testing.assert_allclose(served["single"], expected, atol=1e-4)
  np.testing.assert_allclose(served["batch"], expected, atol=1e-4)

  # A second export to the same folder needs --overwrite; given as a URL (gs://... for a serving
  # platform), the folder is written through TensorFlow's file systems.
  assert export_cli.main(argv[1:]) == 2
  assert "--overwrite" in capsys.readouterr().err
  (tmp_path / "exported" / "koniq" / "1" / "saved_model.pb").write_bytes(b"stale")
  output = argv.index("--output") + 1
  argv[output] = f"file://{tmp_path}/{argv[output]}"
  assert export_cli.main(argv[1:] + ["--overwrite"]) == 0
  assert os.listdir("exported/koniq") == ["1"]
  reloaded = tf.saved_model.load("exported/koniq/1")
  single = reloaded.signatures["serving_default"](tf.constant(open(images[0], "rb").read()))
  assert float(single["output_0"]) == pytest.approx(expected[0], abs=1e-4)


def test_distribution_head_and_one_trace_for_every_size():
  # A linear patch encoder on the native scale: the cheapest model to convert and compile.
  config = small_model_config(num_layers=1, num_classes=10, head="distribution",
                              patch_encoder="linear", num_scales=1)
  loaded = loader.Loaded(scoring_params(config), config, loader.preprocess_config_for(config))
  module = export.MusiqModule(loaded, platforms=("cpu",))
  rng = np.random.default_rng(1)
  for height, width in [(40, 40), (33, 129)]:  # two sizes, one traced function
    data = tf.io.encode_png(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    out = module.score(data)
    distribution = out["distribution"].numpy()
    assert distribution.shape == (10,) and distribution.sum() == pytest.approx(1, abs=1e-5)
    assert float(out["output_0"]) == pytest.approx(np.dot(np.arange(1, 11), distribution),
                                                   rel=1e-5)
  assert module.score.experimental_get_tracing_count() == 1


def test_classification_heads_are_refused():
  config = small_model_config(num_classes=5, head="classification")
  loaded = loader.Loaded({}, config, loader.preprocess_config_for(config))
  with pytest.raises(ValueError, match="classification head"):
    export.MusiqModule(loaded)
