"""Images for tests: random pixels, small PNG, JPEG or BMP bytes, a truncated JPEG, and the tiny
learnable custom CSV dataset the training tests share (conftest's `csv_dataset`)."""

import csv
import io
import pathlib

import numpy as np
from PIL import Image

# Four in six rows train, one validates, one tests: 16 / 4 / 4 of the default 24.
TRAIN_VALIDATION_TEST = ("train",) * 4 + ("validation", "test")


def random_pixels(height, width, seed=0):
  """A height x width RGB image of uniform random uint8 pixels, distinct per seed."""
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def image_bytes(seed, fmt="PNG"):
  """An 8x8 image's file bytes (PNG, JPEG, BMP ...), distinct per seed."""
  out = io.BytesIO()
  Image.fromarray(random_pixels(8, 8, seed)).save(out, format=fmt)
  return out.getvalue()


def jpeg(seed, size=(24, 32), mode="RGB"):
  """A small JPEG of a gradient plus noise (distinct bytes per seed)."""
  h, w = size
  rng = np.random.default_rng(seed)
  ramp = np.add.outer(np.arange(h) * 4, np.arange(w) * 3)[..., None]
  ramp = ramp + rng.integers(0, 60, (h, w, 3))
  image = Image.fromarray(np.clip(ramp, 0, 255).astype(np.uint8)).convert(mode)
  out = io.BytesIO()
  image.save(out, format="JPEG", quality=90)
  return out.getvalue()


def truncated(seed):
  """The first half of `jpeg(seed)`: a file no decoder reads."""
  data = jpeg(seed)
  return data[:len(data) // 2]


def write_csv_dataset(root, count=24, seed=0, splits=TRAIN_VALIDATION_TEST, sizes=(40, 100)):
  """Writes a tiny dataset the `custom` builder reads; returns the path of its `labels.csv`.

  `count` PNGs `0.png`, `1.png`, ... whose height and width are drawn from [sizes[0], sizes[1])
  (varied, so several sequence-length buckets occur) and whose brightness rises with the row, as
  does the MOS (0 to 100), so the set is learnable. Row i goes to split `splits[i % len(splits)]`.
  """
  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  rows = [("image", "mos", "split")]
  for i in range(count):
    height, width = rng.integers(*sizes, 2)
    level = i / max(count - 1, 1)
    pixels = np.clip(rng.normal(255 * level, 30, (height, width, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(root / f"{i}.png")
    rows.append((f"{i}.png", 100 * level, splits[i % len(splits)]))
  with open(root / "labels.csv", "w", newline="") as f:
    csv.writer(f).writerows(rows)
  return root / "labels.csv"
