"""The small model of the scoring, visualisation and checkpoint tests, its params and the
official-format .npz files written from them (conftest's `small_npz` is one)."""

import dataclasses
import os

import jax

from mst.checkpoints import npz
from mst.models import musiq

# Patch 32 and grid 10 as the paper's, so the paper's preprocessing applies, but a 32-wide, 2-layer
# Transformer that compiles in seconds.
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


class RunsOnUnpickle:
  """Unpickling this creates the folder `marker`: proof that a loader ran code from a file. Put in
  an object array, it is what a hostile .npz entry holds."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.mkdir, (self.marker,)
