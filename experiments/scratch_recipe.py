"""Choosing `configs/custom.py:scratch` by measurement: build a user-like set, train candidates.

    python experiments/scratch_recipe.py build --out /tmp/scratch_set0 --seed 0
    python experiments/scratch_recipe.py run --csv /tmp/scratch_set0/labels.csv \
        --root /tmp/scratch_runs0 [--only scratch,demo] [--set train.num_steps=300 ...]
    python experiments/scratch_recipe.py curves --root /tmp/scratch_runs0

`build` writes what a user would bring to `configs/custom.py`: an image folder and a CSV
`image,mos,split`. The images are crops (128-224 px a side, any aspect ratio) of scikit-image's
photographs, each degraded by one of seven distortions at a random, continuous strength s in
[0, 1] (or kept pristine): JPEG quality, Gaussian blur, Gaussian noise, lower contrast, brighter or
darker, downscale then bicubic upscale, lower colour saturation (colour photos only). Only JPEG,
blur and noise are shared with the demo set, and at other strengths. The MOS (0-100) falls with
strength, by an amount that depends on the kind (saturation hurts least), plus label noise:
`90 - DROP[kind] * s + N(0, 3)`. Splits are by source photo, which photos go where drawn from the
seed, so each seed is a different set whose test photos are never seen in training.

`run` trains each candidate recipe (CANDIDATES: overrides of `configs/custom.py:scratch`) in its own
workdir, one after another in this process, like experiments/sweep.py. `curves` prints each
workdir's validation SRCC and training L1 over steps (read from its summaries, also while it runs)
and, once finished, its test metrics: the numbers behind docs/benchmarks.md, "Training from
scratch on a CPU: choosing the recipe".
"""

import argparse
import csv
import glob
import io
import json
import os
import pathlib
import sys
import time
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mst.runtime import host_memory  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":  # `run` trains in this process: mst-train's malloc settings, set
  host_memory.keep_freed_memory()  # before NumPy, TensorFlow and JAX start threads

import numpy as np  # pylint: disable=g-import-not-at-top
from PIL import Image  # pylint: disable=g-import-not-at-top
from PIL import ImageEnhance  # pylint: disable=g-import-not-at-top
from PIL import ImageFilter  # pylint: disable=g-import-not-at-top

from mst.data.datasets import demo  # pylint: disable=g-import-not-at-top

# Real photographs shipped with scikit-image; the two motorcycle views are one scene (one group).
PHOTO_GROUPS = (
    ("astronaut.png",), ("brick.png",), ("camera.png",), ("chelsea.png",), ("coffee.png",),
    ("coins.png",), ("grass.png",), ("gravel.png",), ("hubble_deep_field.jpg",), ("ihc.png",),
    ("motorcycle_left.png", "motorcycle_right.png"), ("page.png",), ("rocket.jpg",),
    ("text.png",), ("retina.jpg",), ("moon.png",))
HELD_OUT_GROUPS = 3  # photo groups in validation, and as many in test
PRISTINE_FRACTION = 0.125
LABEL_NOISE = 3.0
PRISTINE_MOS = 90.0
# The MOS lost at full strength (s = 1), per kind.
DROP = {"jpeg": 75.0, "blur": 75.0, "noise": 75.0, "downscale": 70.0, "contrast": 55.0,
        "brightness": 55.0, "saturation": 35.0}
MIN_SIDE, MAX_SIDE = 128, 224


def _jpeg(image: Image.Image, s: float, rng) -> Image.Image:
  buffer = io.BytesIO()
  image.save(buffer, "JPEG", quality=int(round(60 - 56 * s)))
  return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _blur(image: Image.Image, s: float, rng) -> Image.Image:
  return image.filter(ImageFilter.GaussianBlur(radius=0.4 + 3.6 * s))


def _noise(image: Image.Image, s: float, rng) -> Image.Image:
  pixels = np.asarray(image, np.float32)
  noisy = pixels + rng.normal(0.0, 3.0 + 37.0 * s, pixels.shape)
  return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _contrast(image: Image.Image, s: float, rng) -> Image.Image:
  return ImageEnhance.Contrast(image).enhance(1.0 - 0.8 * s)


def _brightness(image: Image.Image, s: float, rng) -> Image.Image:
  factor = 1.0 + 1.0 * s if rng.random() < 0.5 else 1.0 - 0.7 * s
  return ImageEnhance.Brightness(image).enhance(factor)


def _downscale(image: Image.Image, s: float, rng) -> Image.Image:
  factor = 1.5 + 4.5 * s
  small = image.resize((max(1, round(image.width / factor)), max(1, round(image.height / factor))),
                       Image.Resampling.BILINEAR)
  return small.resize(image.size, Image.Resampling.BICUBIC)


def _saturation(image: Image.Image, s: float, rng) -> Image.Image:
  return ImageEnhance.Color(image).enhance(1.0 - s)


DISTORTIONS = {"jpeg": _jpeg, "blur": _blur, "noise": _noise, "downscale": _downscale,
               "contrast": _contrast, "brightness": _brightness, "saturation": _saturation}


def is_colour(photo: Image.Image) -> bool:
  pixels = np.asarray(photo, np.float32)
  return float(np.abs(pixels - pixels.mean(axis=2, keepdims=True)).mean()) > 4.0


def split_of_groups(seed: int) -> dict[str, str]:
  """Photo file -> split: HELD_OUT_GROUPS random groups each for test and validation."""
  order = np.random.default_rng(seed).permutation(len(PHOTO_GROUPS))
  splits = {}
  for rank, group in enumerate(order):
    split = ("test" if rank < HELD_OUT_GROUPS else
             "validation" if rank < 2 * HELD_OUT_GROUPS else "train")
    for name in PHOTO_GROUPS[group]:
      splits[name] = split
  return splits


def crop(photo: Image.Image, rng) -> Image.Image:
  """A crop of MIN_SIDE-MAX_SIDE px a side from the photo at a random scale, mostly not flat."""
  best, best_flat = None, 2.0
  for _ in range(30):
    width, height = (int(rng.integers(MIN_SIDE, MAX_SIDE + 1)) for _ in range(2))
    scale = float(rng.uniform(min(1.0, max(width / photo.width, height / photo.height, 0.35)), 1.0))
    scaled = photo.resize((round(photo.width * scale), round(photo.height * scale)),
                          Image.Resampling.LANCZOS) if scale < 1.0 else photo
    width, height = min(width, scaled.width), min(height, scaled.height)
    left = int(rng.integers(0, scaled.width - width + 1))
    top = int(rng.integers(0, scaled.height - height + 1))
    candidate = scaled.crop((left, top, left + width, top + height))
    flat = demo.flat_fraction(candidate)
    if flat <= 0.3:
      return candidate
    if flat < best_flat:
      best, best_flat = candidate, flat
  return best


def write_set(directory: str, images: int = 480, seed: int = 0) -> str:
  """Writes about `images` images and `labels.csv` (image,mos,split,kind,strength) under
  `directory`; returns the CSV's path. Deterministic for a given seed."""
  image_dir = os.path.join(directory, "images")
  os.makedirs(image_dir, exist_ok=True)
  splits = split_of_groups(seed)
  per_photo = max(1, round(images / len(splits)))
  rows = []
  for name, split in sorted(splits.items()):
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    photo = demo.source_photo(name)
    kinds = [k for k in DISTORTIONS if k != "saturation" or is_colour(photo)]
    for index in range(per_photo):
      image = crop(photo, rng)
      if rng.random() < PRISTINE_FRACTION:
        kind, strength, mos = "pristine", 0.0, PRISTINE_MOS
      else:
        kind, strength = kinds[int(rng.integers(len(kinds)))], float(rng.uniform(0.0, 1.0))
        image = DISTORTIONS[kind](image, strength, rng)
        mos = PRISTINE_MOS - DROP[kind] * strength
      mos = float(np.clip(mos + rng.normal(0.0, LABEL_NOISE), 0.0, 100.0))
      file_name = f"{os.path.splitext(name)[0]}_{index:03d}_{kind}.png"
      image.save(os.path.join(image_dir, file_name), compress_level=1)
      rows.append((f"images/{file_name}", f"{mos:.2f}", split, kind, f"{strength:.3f}"))
  csv_path = os.path.join(directory, "labels.csv")
  with open(csv_path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["image", "mos", "split", "kind", "strength"])
    writer.writerows(rows)
  return csv_path


# Candidate recipes: overrides of configs/custom.py:scratch. "scratch" is the shipped recipe.
CANDIDATES = {
    "scratch": {},
    # The demo's optimisation (configs/demo.py), which the issue saw collapse.
    "demo": {"optim.learning_rate": 1e-3, "optim.lr_multipliers": (("^embedding/kernel$", 0.1),),
             "optim.warmup_steps": 20, "model.dropout_rate": 0.0, "augment.crop": False,
             "optim.weight_decay": 0.01},
    "lr1e-3": {"optim.learning_rate": 1e-3},
    "emb0.1": {"optim.lr_multipliers": (("^embedding/kernel$", 0.1),)},
    "lr1e-4": {"optim.learning_rate": 1e-4},
    "l64": {"preprocess.max_seq_len": 64},
    "d128": {"model.hidden_size": 128, "model.mlp_dim": 256},
    # The recipe shipped before, without the regularisation: it memorised set 1 (training L1 4,
    # test SRCC 0.03).
    "unregularised": {"model.dropout_rate": 0.0, "augment.crop": False,
                      "optim.weight_decay": 0.01},
}


def run(csv_path: str, root: str, only: list[str], sets: list[str]) -> None:
  """Trains each candidate in ROOT/<name>, skipping finished ones; prints wall time per run."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from mst.configure import overrides as overrides_lib  # pylint: disable=g-import-not-at-top
  from mst.configure import resolve  # pylint: disable=g-import-not-at-top
  from mst.training import trainer  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.INFO)  # the training loss and evaluations as they come
  for name in only or list(CANDIDATES):
    workdir = os.path.join(root, name)
    if os.path.exists(os.path.join(workdir, "test_metrics.json")):
      continue
    config = overrides_lib.load_config("configs/custom.py", "scratch")
    config.dataset.csv = csv_path
    config = overrides_lib.apply_overrides(config, CANDIDATES[name])
    for text in sets:
      config = overrides_lib.apply_overrides(
          config, dict([overrides_lib.parse_assignment(config, text)]))
    start = time.time()
    trainer.train_and_evaluate(resolve.run(config, jax.device_count()), workdir)
    with open(os.path.join(workdir, "wall_seconds.txt"), "w") as f:
      f.write(f"{time.time() - start:.0f}\n")
    print(f"{name}: {time.time() - start:.0f} s", flush=True)


def read_scalars(workdir: str) -> dict[str, list[tuple[int, float]]]:
  """tag -> [(step, value)] from a workdir's TensorBoard event files."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  scalars = {}
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        number = (float(tf.make_ndarray(value.tensor)) if value.HasField("tensor")
                  else value.simple_value)
        scalars.setdefault(value.tag, []).append((event.step, number))
  return {tag: sorted(points) for tag, points in scalars.items()}


def constant_l1(csv_path: str) -> float:
  """The training L1 (MOS units) of predicting the median training MOS for every image."""
  from mst.training import collapse  # pylint: disable=g-import-not-at-top
  with open(csv_path) as f:
    mos = [float(row["mos"]) for row in csv.DictReader(f) if row["split"] == "train"]
  return collapse.constant_predictor_loss(np.array(mos), "l1")


def curves(root: str) -> str:
  """A text table per workdir under `root` (finished or not): step, training L1 in MOS units
  (0-100), validation SRCC; test metrics and wall time when finished."""
  lines = []
  for workdir in sorted(glob.glob(os.path.join(root, "*", "config.json"))):
    workdir = os.path.dirname(workdir)
    scalars = read_scalars(workdir)
    summary = "unfinished"
    if os.path.exists(os.path.join(workdir, "test_metrics.json")):
      with open(os.path.join(workdir, "test_metrics.json")) as f:
        test = json.load(f)
      summary = f"test SRCC {test['srcc']:.3f} PLCC {test['plcc']:.3f}"
    if os.path.exists(os.path.join(workdir, "wall_seconds.txt")):
      with open(os.path.join(workdir, "wall_seconds.txt")) as f:
        summary += f", {f.read().strip()} s"
    with open(os.path.join(workdir, "config.json")) as f:
      constant = constant_l1(json.load(f)["dataset"]["csv"])
    lines.append(f"## {os.path.basename(workdir)}: {summary}; the constant (median) predictor's "
                 f"training L1 is {constant:.2f}")
    valid = dict(scalars.get("validation/srcc", []))
    for step, loss in scalars.get("train/loss", []):
      srcc = f"{valid[step]:.3f}" if step in valid else ""
      lines.append(f"{step:6d}  train L1 {100 * loss:6.2f}  validation SRCC {srcc}")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  build = commands.add_parser("build", help="write a labelled image set")
  build.add_argument("--out", required=True)
  build.add_argument("--images", type=int, default=480)
  build.add_argument("--seed", type=int, default=0)
  train = commands.add_parser("run", help="train candidate recipes on a set")
  train.add_argument("--csv", required=True)
  train.add_argument("--root", required=True)
  train.add_argument("--only", default="", help="comma-separated names of CANDIDATES")
  train.add_argument("--set", action="append", default=[], dest="sets",
                     help="KEY=VALUE for every candidate, e.g. train.num_steps=300")
  show = commands.add_parser("curves", help="print learning curves of finished runs")
  show.add_argument("--root", required=True)
  args = parser.parse_args(argv)
  if args.command == "build":
    print(write_set(args.out, args.images, args.seed))
  elif args.command == "run":
    run(os.path.abspath(args.csv), args.root, [n for n in args.only.split(",") if n], args.sets)
  else:
    print(curves(args.root))
  return 0


if __name__ == "__main__":
  sys.exit(main())
