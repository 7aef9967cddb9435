"""Test setup: 8 fake CPU devices before JAX initialises, and quiet TensorFlow.

Also the data several test files share: a tiny custom CSV dataset. Helpers are imported with
`from conftest import ...`; the fixtures are session-scoped, so each pytest process writes them
once.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
# Keep TensorFlow off the device memory JAX may use, and single-threaded enough for 2 cores.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

# pylint: disable=wrong-import-position  (JAX must see the flags above before it is imported)
import csv
import pathlib

import numpy as np
import pytest
from PIL import Image

# Four in six rows train, one validates, one tests: 16 / 4 / 4 of the default 24.
TRAIN_VALIDATION_TEST = ("train",) * 4 + ("validation", "test")


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


@pytest.fixture(scope="session")
def csv_dataset(tmp_path_factory):
  """The default `write_csv_dataset` (24 images, 16 / 4 / 4), shared by the tests that train."""
  return write_csv_dataset(tmp_path_factory.mktemp("csv_dataset"))
