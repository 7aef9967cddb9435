"""What several test files share: a tiny custom CSV dataset, the small model config, small
official-format .npz checkpoints, and reading a workdir's logged scalars.

Imported as `from helpers import ...` (tests/ is on the path); conftest.py holds the fixtures built
from them. Importing this module imports JAX, so conftest.py sets JAX's flags first.
"""

import csv
import dataclasses
import glob
import io
import os
import pathlib

import jax
import numpy as np
from PIL import Image

from mst.checkpoints import npz
from mst.models import musiq

# Four in six rows train, one validates, one tests: 16 / 4 / 4 of the default 24.
TRAIN_VALIDATION_TEST = ("train",) * 4 + ("validation", "test")

# Environment for the processes of end-to-end tests that mostly compile (a few steps of a tiny
# model): XLA skips most of its optimisation passes, a third less time per mst-train run. Only for
# runs compared with each other under the same setting, never with a reference's numbers (the
# parity tests run the optimised programs users run).
QUICK_COMPILE_ENV = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}

# Why the PyTorch cross-checks skip where torch is missing: PyPI's Linux torch for Python 3.12 and
# newer is a multi-GB CUDA build, so setup.py's test extra asks for the CPU wheel on 3.11 only.
NO_TORCH = "no torch: setup.py's [test] extra installs the CPU torch 2.13.0 on Python 3.11 only"


def image_bytes(seed, fmt="PNG"):
  """An 8x8 image's file bytes (PNG, JPEG, BMP ...), distinct per seed."""
  pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, format=fmt)
  return out.getvalue()


def write_files(root, files):
  """Writes {relative path: bytes or str} below `root` (a fake download); returns `root` as str."""
  for path, data in files.items():
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
      f.write(data if isinstance(data, bytes) else data.encode())
  return str(root)


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


def set_fields(config, **changes):
  """Sets `section__name=value` changes on an ml_collections config (keyword arguments cannot
  hold dots); returns the config."""
  for key, value in changes.items():
    section, name = key.split("__")
    setattr(config[section], name, value)
  return config


def logged_scalars(workdir, tag="train/loss") -> dict[int, float]:
  """step -> the value of `tag` in a workdir's TensorBoard event files (clu's writers)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only the tests that train)
  values = {}
  for path in glob.glob(os.path.join(str(workdir), "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return values


# The small model of the scoring and visualisation tests: patch 32 and grid 10 as the paper's, so
# the paper's preprocessing applies, but a 32-wide, 2-layer Transformer that compiles in seconds.
SMALL_MODEL = musiq.ModelConfig(patch_size=32, hidden_size=32, num_layers=2, num_heads=4,
                                mlp_dim=64, grid_size=10, num_scales=3)


def small_model_config(**changes):
  """SMALL_MODEL with `changes` (ModelConfig fields) applied."""
  return dataclasses.replace(SMALL_MODEL, **changes)


def scoring_params(config=SMALL_MODEL, seed=0):
  """Initialised params with a random head kernel: the zero-initialised head would score 0."""
  params = musiq.init_params(config, jax.random.key(seed))
  head = params["head"]
  head["kernel"] = jax.random.normal(jax.random.key(seed + 1), head["kernel"].shape)
  return params


def write_npz(path, config=SMALL_MODEL, seed=0):
  """Exports `scoring_params(config, seed)` as an official-format .npz; returns the path as str."""
  npz.export_official_npz(scoring_params(config, seed), path)
  return str(path)
