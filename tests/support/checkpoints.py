"""The small model of the scoring, visualisation and checkpoint tests, its params and the
official-format .npz files written from them (conftest's `small_npz` is one)."""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

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


def random_params(config, seed=0, scale=0.1):
  """Noise (standard deviation `scale`) in every parameter of the model `config` describes, at
  the shapes its init gives (traced, nothing compiled): the real init's zero head, and the ResNet's
  zero-initialised gn3 scales, would hide a wrong mapping or mask."""
  shapes = jax.eval_shape(lambda key: musiq.init_params(config, key), jax.random.key(seed))
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda leaf: jnp.asarray(scale * rng.standard_normal(leaf.shape), leaf.dtype), shapes)


@functools.cache
def jitted_forward(config, train=False, mutable=()):
  """The model `config` describes, applied as one jitted program: (params, batch, dropout key or
  None) -> its output, with the state of the `mutable` collections when some are named. Op by op,
  each of the model's ops would compile on first use; cached, each config compiles once."""
  model = musiq.Musiq(config)

  def forward(params, batch, dropout=None):
    rngs = None if dropout is None else {"dropout": dropout}
    return model.apply({"params": params}, batch, train=train, rngs=rngs,
                       mutable=list(mutable) or False)
  return jax.jit(forward)


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
