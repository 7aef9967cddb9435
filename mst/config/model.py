"""The model and the multi-scale preprocessing a config describes, typed: what training builds and
what scoring a workdir (its config.json) reads. Imports no training or evaluation code, so the
checkpoint loader can use it.
"""

import dataclasses

import ml_collections

from mst.config import defaults
from mst.data import multiscale
from mst.models import musiq

DERIVED_MODEL_FIELDS = defaults.DERIVED_MODEL_FIELDS


def model_config(config: ml_collections.ConfigDict) -> musiq.ModelConfig:
  """The model of `config.model`, with P and G from `config.preprocess` and K + 1 scales.

  A key of `config.model` that ModelConfig lacks (or the reverse) is an error, so the config and
  the model cannot drift apart silently. `representation_size` 0 means no pre_logits layer.
  """
  fields = {f.name for f in dataclasses.fields(musiq.ModelConfig)} - set(DERIVED_MODEL_FIELDS)
  given = set(config.model.keys())
  if given != fields:
    raise ValueError("config.model keys differ from ModelConfig's: unknown "
                     f"{sorted(given - fields)}, missing {sorted(fields - given)}")
  kwargs = {name: config.model[name] for name in fields}
  kwargs["representation_size"] = kwargs["representation_size"] or None
  pp = config.preprocess
  return musiq.ModelConfig(patch_size=pp.patch_size, grid_size=pp.grid_size,
                           num_scales=len(pp.longer_side_lengths) + 1, **kwargs)


def preprocess_config(config: ml_collections.ConfigDict, train: bool
                      ) -> multiscale.MultiScaleConfig:
  """The multi-scale representation: l = `max_seq_len` native tokens for training (fixed shapes),
  all of them (-1) for evaluation, as the paper evaluates on the full native image.

  l = 0 means the model has no native scale (the paper's resized-only compositions such as
  "(224)"), so evaluation drops the native image too instead of showing the model a scale it
  never trained on.
  """
  pp = config.preprocess
  native = int(pp.max_seq_len)
  return multiscale.MultiScaleConfig(
      patch_size=pp.patch_size, grid_size=pp.grid_size,
      longer_side_lengths=tuple(int(x) for x in pp.longer_side_lengths),
      max_seq_len_from_original_res=native if train or native == 0 else -1)
