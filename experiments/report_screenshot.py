"""docs/evaluation.md's picture of report.html: the top of a report as headless Chromium shows it.

    python experiments/report_screenshot.py --report /tmp/cross_demo/eval/report.html
    python experiments/report_screenshot.py            # a synthetic report, nothing trained

With --report, the page mst-eval wrote (docs/evaluation.md's comes from
experiments/cross_dataset_demo.py).
Without it, a report of two checkpoints on two datasets is built from synthetic scores: MOS on
0-100, predictions a noisy S-shaped function of it, and as the worst images crops of the demo's
test photos (scikit-image's) with the demo's distortions, their "rollout" a map of local detail.
It shows the layout, not any model. The screenshot is kept small: a 256-colour PNG.

Needs Chromium (`apt-get install chromium`).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mst.data.datasets import demo  # pylint: disable=g-import-not-at-top
from mst.evaluation import html_report  # pylint: disable=g-import-not-at-top
from mst.evaluation import metrics  # pylint: disable=g-import-not-at-top

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WIDTH = 1200  # px, the browser window
HEIGHT = 2000  # px, the top of the page only
BOOTSTRAP_SAMPLES = 200  # enough for a picture
DATASETS = (("koniq:test", 2015), ("livec:full", 1162))


def _scores(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
  scores = metrics.quality_metrics(prediction, target)
  for name in ("srcc", "plcc", "krcc"):
    low, high = metrics.bootstrap_ci(getattr(metrics, name), prediction, target,
                                     samples=BOOTSTRAP_SAMPLES)
    scores[f"{name}_ci95_low"], scores[f"{name}_ci95_high"] = low, high
  return scores


def _detail_map(image: np.ndarray, block: int = 16) -> np.ndarray:
  """Per block of pixels, the mean absolute difference of neighbouring grey levels."""
  grey = image.astype(np.float32).mean(axis=2)
  rows, cols = grey.shape[0] // block, grey.shape[1] // block
  tiles = grey[:rows * block, :cols * block].reshape(rows, block, cols, block).swapaxes(1, 2)
  return np.abs(np.diff(tiles, axis=3)).mean(axis=(2, 3))


def _worst(target, prediction, rng) -> list[html_report.WorstImage]:
  photos = [demo.source_photo(name) for name, split in demo.SOURCES.items() if split == "test"]
  out = []
  for rank, index in enumerate(html_report.worst_indices(target, prediction)):
    crop = demo.detailed_crop(photos[rank % len(photos)], rng, size=192)
    distortion = list(demo.DISTORTIONS)[rank % len(demo.DISTORTIONS)]
    image = np.asarray(demo.DISTORTIONS[distortion](crop, 1 + rank % 4, rng))
    out.append(html_report.WorstImage(f"{rank:05d}_{distortion}.jpg", float(target[index]),
                                      float(prediction[index]), image, _detail_map(image)))
  return out


def synthetic_runs(seed: int = 0) -> list[html_report.RunResult]:
  """Two checkpoints on DATASETS, with scores and worst images as mst-eval would give them."""
  runs = []
  for run in range(2):
    rng = np.random.default_rng(seed + run)
    results = []
    for dataset, count in DATASETS:
      target = np.clip(rng.normal(55, 18, count), 1, 99)
      prediction = 30 + 40 * np.tanh((target - 55) / 30) + rng.normal(0, 6 + 3 * run, count)
      results.append(html_report.DatasetResult(dataset, _scores(prediction, target), target,
                                               prediction, _worst(target, prediction, rng)))
    runs.append(html_report.RunResult(f"/tmp/koniq_runs/seed{run}", results))
  return runs


def browser() -> str:
  found = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
  if found is None:
    sys.exit("no Chromium on the PATH: apt-get install chromium")
  return found


def screenshot(page: str, png: str) -> None:
  """The top WIDTH x HEIGHT px of the page at `page` as a 256-colour PNG at `png`."""
  with tempfile.TemporaryDirectory() as tmp:
    raw = os.path.join(tmp, "screenshot.png")
    subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={raw}",
                    "--virtual-time-budget=10000", f"file://{os.path.abspath(page)}"],
                   check=True, capture_output=True, timeout=120)
    image = Image.open(raw).convert("RGB")
  os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
  image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
  parser.add_argument("--report", help="an mst-eval report.html (default: a synthetic one)")
  parser.add_argument("--out", default="docs/images/report.png", help="the screenshot")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    page = args.report
    if page is None:
      page = os.path.join(tmp, "report.html")
      html_report.write(page, synthetic_runs(args.seed), title="mst-eval: two KonIQ-10k runs")
    screenshot(page, args.out)
  print(f"{args.out}: {os.path.getsize(args.out) / 1024:.0f} KiB")


if __name__ == "__main__":
  main()
