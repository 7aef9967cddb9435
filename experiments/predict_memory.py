"""Peak memory of `mst-predict` over many small images: it should not grow with their number.

    python experiments/predict_memory.py [--counts 100,10000] [--size 64]

Writes `count` random size x size PNGs to a temporary folder and scores them with `mst-predict`
(--output to a file) in a fresh process per count, reading that process's own peak RSS from
`os.wait4`. Prints one line per count. The model is a tiny random one (linear patch encoder, one
layer, native scale only) written as an official-format .npz: what is measured is the pipeline
around it (finding, reading, batching, ordering and writing), which is the same for any model.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from mst.checkpoints import npz  # pylint: disable=g-import-not-at-top
from mst.models import musiq  # pylint: disable=g-import-not-at-top

MODEL = musiq.ModelConfig(patch_size=32, hidden_size=32, num_layers=1, num_heads=4, mlp_dim=64,
                          grid_size=10, num_scales=1, patch_encoder="linear")


def write_images(folder: pathlib.Path, count: int, size: int) -> None:
  rng = np.random.default_rng(0)
  folder.mkdir(parents=True)
  for i in range(count):
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
        folder / f"{i:06d}.png")


def peak_rss_mb(argv: list[str]) -> tuple[float, float, int]:
  """(peak RSS in MB, seconds, exit status) of a command run as a child."""
  start = time.perf_counter()
  child = subprocess.Popen(argv, env=dict(os.environ, PYTHONPATH=str(REPO)),
                           stdout=subprocess.DEVNULL)
  _, status, usage = os.wait4(child.pid, 0)
  return usage.ru_maxrss / 1024, time.perf_counter() - start, os.waitstatus_to_exitcode(status)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--counts", default="100,10000")
  parser.add_argument("--size", type=int, default=64)
  args = parser.parse_args()
  import jax  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    params = musiq.init_params(MODEL, jax.random.key(0))
    npz.export_official_npz(params, tmp / "model.npz")
    for count in (int(c) for c in args.counts.split(",")):
      folder = tmp / f"images_{count}"
      write_images(folder, count, args.size)
      command = [sys.executable, "-m", "mst.cli.predict", "--quiet", "--checkpoint",
                 str(tmp / "model.npz"), "--output", str(tmp / f"scores_{count}.jsonl"),
                 str(folder)]
      rss, seconds, status = peak_rss_mb(command)
      lines = sum(1 for _ in open(tmp / f"scores_{count}.jsonl"))
      print(f"{count} images of {args.size}x{args.size}: peak RSS {rss:.0f} MB, {seconds:.0f} s, "
            f"{lines} lines, exit status {status}", flush=True)


if __name__ == "__main__":
  main()
