"""From an ml_collections config (`mst.config.defaults`) to the library's typed configs, and the
cross-key checks a config must pass before a run starts.

Library code reads configs through these helpers, never by importing `configs/`, so the library
works wherever the config files live.
"""

import dataclasses

import ml_collections

from mst.data import augmentation
from mst.data import preprocess
from mst.models import musiq
from mst.training import losses
from mst.training import optim

# Copied from `preprocess` or derived from it, so they cannot disagree with the data.
DERIVED_MODEL_FIELDS = ("patch_size", "grid_size", "num_scales")


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
                      ) -> preprocess.MultiScaleConfig:
  """The multi-scale representation: l = `max_seq_len` native tokens for training (fixed shapes),
  all of them (-1) for evaluation, as the paper evaluates on the full native image.

  l = 0 means the model has no native scale (the paper's resized-only compositions such as
  "(224)"), so evaluation drops the native image too instead of showing the model a scale it
  never trained on.
  """
  pp = config.preprocess
  native = int(pp.max_seq_len)
  return preprocess.MultiScaleConfig(
      patch_size=pp.patch_size, grid_size=pp.grid_size,
      longer_side_lengths=tuple(int(x) for x in pp.longer_side_lengths),
      max_seq_len_from_original_res=native if train or native == 0 else -1)


def augment_config(config: ml_collections.ConfigDict) -> augmentation.Augment:
  """Training-time augmentation of `config.augment` (Augment checks the ranges)."""
  augment = config.augment
  return augmentation.Augment(
      flip_prob=augment.flip_prob, crop=augment.crop, crop_area=tuple(augment.crop_area),
      crop_aspect=tuple(augment.crop_aspect), randaugment_layers=augment.randaugment_layers,
      randaugment_magnitude=augment.randaugment_magnitude, mixup_alpha=augment.mixup_alpha)


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the keys of the first inconsistency: a loss that does not suit the
  label or head (or mixup with hard class labels), an unknown optimizer or schedule, or
  out-of-range numbers. Also builds the model, preprocessing and augmentation configs, which check
  their own fields."""
  model = model_config(config)
  preprocess_config(config, train=True)
  name, label = config.loss.name, config.dataset.label
  if name not in losses.LOSSES:
    raise ValueError(f"loss.name={name!r} is not one of {sorted(losses.LOSSES)}")
  loss = losses.LOSSES[name]
  if label not in loss.labels:
    raise ValueError(f"loss.name={name!r} trains on {loss.labels}, not dataset.label={label!r}")
  augment = augment_config(config)
  if augment.mixup_alpha > 0 and label == "label":
    raise ValueError(f"augment.mixup_alpha={augment.mixup_alpha} mixes labels into soft targets: "
                     "set dataset.label='dist' (the batch carries the mixed one-hot `dist`), not "
                     "'label'")
  if model.head not in loss.heads:
    raise ValueError(f"loss.name={name!r} needs model.head in {loss.heads}, not {model.head!r}")
  loss.options(config.loss)  # raises for values the loss cannot take (loss.emd_r <= 0)
  if config.optim.name not in optim.OPTIMIZERS:
    raise ValueError(f"optim.name={config.optim.name!r} is not one of {optim.OPTIMIZERS}")
  if config.optim.schedule not in optim.SCHEDULES:
    raise ValueError(f"optim.schedule={config.optim.schedule!r} is not one of {optim.SCHEDULES}")
  if config.optim.name == "adam" and config.optim.weight_decay:
    raise ValueError("optim.name='adam' has no weight decay: use 'adamw'")
  optim.parse_lr_multipliers(config.optim.lr_multipliers)
  if config.data.packing and model.spatial_embedding == "fixed":
    raise ValueError("data.packing=True puts several images in a row, but "
                     "model.spatial_embedding='fixed' embeds the row position: use 'hse' or "
                     "'sinusoid', or data.packing=False")
  longest = preprocess_config(config, train=True).seq_len(1, 1) + 1  # every scale full, and CLS
  if config.data.packed_length and config.data.packed_length < longest:
    raise ValueError(f"data.packed_length={config.data.packed_length} is shorter than the "
                     f"{longest} tokens an image can take (sum of m_k, l and the CLS token): "
                     "raise it, or 0 to choose it from the training images")
  if config.dataset.mos_scale <= 0:
    raise ValueError(f"dataset.mos_scale must be positive, got {config.dataset.mos_scale}")
  if config.preprocess.max_seq_len < 0:
    raise ValueError("preprocess.max_seq_len (l) must be >= 0 for training, got "
                     f"{config.preprocess.max_seq_len}")
  if config.preprocess.max_seq_len == 0 and not config.preprocess.longer_side_lengths:
    raise ValueError("preprocess.max_seq_len=0 drops the native image and "
                     "preprocess.longer_side_lengths=() has no resized copy: no tokens are left")
  positive = {"train.batch_size": config.train.batch_size,
              "eval.batch_size": config.eval.batch_size,
              "optim.grad_accum_steps": config.optim.grad_accum_steps,
              "train.log_every_steps": config.train.log_every_steps,
              "train.eval_every_steps": config.train.eval_every_steps,
              "train.checkpoint_every_steps": config.train.checkpoint_every_steps}
  for key, value in positive.items():
    if value < 1:
      raise ValueError(f"{key} must be >= 1, got {value}")
  if config.train.num_steps <= 0 and config.train.num_epochs <= 0:
    raise ValueError("set train.num_steps > 0 or train.num_epochs > 0")
