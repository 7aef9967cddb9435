"""Time the exported SavedModel (`mst-export`) against `mst-predict`'s scorer on the same images.

    python experiments/benchmark_export.py [--checkpoint koniq_ckpt.npz] [--count 8]
        [--size 512x384] [--repeats 3]

Without --checkpoint, the paper's architecture (D=384, 14 layers, 3 scales) with random weights is
written as an official-format .npz. The images are random JPEGs of one size. Reported, in seconds
per image (median of --repeats passes after one warm-up pass, which also compiles): `mst.load`'s
`score_files` (batch 1), the SavedModel's `serving_default` (one image a call) and `score_batch`
(all images in one call); and the largest score difference between them, which should be < 1e-4.
Both run in this process, on the CPU; TensorFlow decodes and preprocesses in both.
"""

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import mst  # pylint: disable=g-import-not-at-top
from mst.checkpoints import npz  # pylint: disable=g-import-not-at-top
from mst.scoring import export  # pylint: disable=g-import-not-at-top
from mst.models import musiq  # pylint: disable=g-import-not-at-top

PAPER = musiq.ModelConfig(patch_size=32, hidden_size=384, num_layers=14, num_heads=6,
                          mlp_dim=1152, grid_size=10, num_scales=3)


def timed(fn, repeats: int) -> tuple[float, object]:
  """(median seconds of `repeats` calls after a warm-up call, the last result)."""
  result = fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--checkpoint", help="a .npz or workdir (default: random paper model)")
  parser.add_argument("--count", type=int, default=8)
  parser.add_argument("--size", default="512x384", help="WIDTHxHEIGHT")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  width, height = (int(x) for x in args.size.split("x"))
  import jax  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    checkpoint = args.checkpoint
    if not checkpoint:
      checkpoint = str(tmp / "paper.npz")
      params = musiq.init_params(PAPER, jax.random.key(0))
      head = params["head"]
      head["kernel"] = jax.random.normal(jax.random.key(1), head["kernel"].shape)
      npz.export_official_npz(params, checkpoint)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(args.count):
      paths.append(str(tmp / f"{i}.jpg"))
      Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(paths[-1])
    images = [tf.io.read_file(path) for path in paths]

    start = time.perf_counter()
    export.export_saved_model(checkpoint, str(tmp / "saved"), platforms=("cpu",))
    export_s = time.perf_counter() - start
    model = tf.saved_model.load(str(tmp / "saved"))
    single, batch = model.signatures["serving_default"], model.signatures["score_batch"]
    scorer = mst.load(checkpoint)

    predict_s, rows = timed(lambda: scorer.score_files(paths), args.repeats)
    single_s, served = timed(lambda: [float(single(x)["output_0"]) for x in images], args.repeats)
    batch_s, batched = timed(lambda: batch(tf.stack(images))["output_0"].numpy(), args.repeats)
    scores = np.array([row["score"] for row in rows])
    n = args.count
    print(f"{n} images of {width}x{height}; export took {export_s:.1f} s")
    print(f"mst-predict (mst.load, batch 1):  {predict_s / n:.3f} s/image")
    print(f"SavedModel serving_default:       {single_s / n:.3f} s/image")
    print(f"SavedModel score_batch ({n}):      {batch_s / n:.3f} s/image")
    difference = max(np.abs(scores - served).max(), np.abs(scores - batched).max())
    print(f"largest score difference: {difference:.2e}")


if __name__ == "__main__":
  main()
