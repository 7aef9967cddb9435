"""From an ml_collections config (`mst.config.defaults`) to the library's typed configs, and the
cross-key checks a config must pass before a run starts.

Library code reads configs through these helpers, never by importing `configs/`, so the library
works wherever the config files live.
"""

from collections.abc import Callable, Sequence
import dataclasses
from typing import Any

import ml_collections

from mst.config import defaults
from mst.data import augmentation
from mst.data import datasets
from mst.data import multiscale
from mst.data import preprocess
from mst.models import musiq
from mst.training import losses
from mst.training import optim

# Copied from `preprocess` or derived from it, so they cannot disagree with the data.
DERIVED_MODEL_FIELDS = ("patch_size", "grid_size", "num_scales")
SPLIT_KEYS = ("dataset.train_split", "dataset.eval_split", "dataset.test_split")


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


def augment_config(config: ml_collections.ConfigDict) -> augmentation.Augment:
  """Training-time augmentation of `config.augment` (Augment checks the ranges)."""
  augment = config.augment
  return augmentation.Augment(
      flip_prob=augment.flip_prob, crop=augment.crop, crop_area=tuple(augment.crop_area),
      crop_aspect=tuple(augment.crop_aspect), randaugment_layers=augment.randaugment_layers,
      randaugment_magnitude=augment.randaugment_magnitude, mixup_alpha=augment.mixup_alpha)


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key, the value and the fix."""


@dataclasses.dataclass(frozen=True)
class Rule:
  """A single key's requirement: `holds(value)` or a ConfigError saying `need` and `fix`."""
  key: str
  holds: Callable[[Any], bool]
  need: str
  fix: str


RULES = (
    Rule("preprocess.patch_size", lambda p: p >= 1, "P, a patch's side in pixels, must be >= 1",
         "32 (the paper's)"),
    Rule("preprocess.grid_size", lambda g: g >= 1,
         "G must be >= 1 (the spatial embedding is a G x G grid)", "10 (the paper's)"),
    Rule("preprocess.max_seq_len", lambda l: l >= 0,
         "l, the native-image tokens in training, must be >= 0", "512 (the paper's) or 0 (none)"),
    Rule("optim.learning_rate", lambda lr: lr > 0, "the peak learning rate must be > 0",
         "e.g. 2e-3 (KonIQ's)"),
    Rule("optim.warmup_steps", lambda n: n >= 0, "warm-up steps must be >= 0", "0 (none) or more"),
    Rule("optim.end_learning_rate_factor", lambda f: f >= 0, "the factor must be >= 0",
         "0 (decay to 0) or more"),
    Rule("dataset.mos_scale", lambda s: s > 0, "MOS is divided by it: it must be positive",
         "100 for 0-100 MOS, 1 for 1-5"),
    Rule("train.batch_size", lambda n: n >= 1, "must be >= 1", "e.g. 96"),
    Rule("eval.batch_size", lambda n: n >= 1, "must be >= 1", "e.g. 32"),
    Rule("optim.grad_accum_steps", lambda n: n >= 1, "must be >= 1", "1 (no accumulation)"),
    Rule("train.log_every_steps", lambda n: n >= 1, "must be >= 1", "e.g. 100"),
    Rule("train.eval_every_steps", lambda n: n >= 1, "must be >= 1", "e.g. 1000"),
    Rule("train.checkpoint_every_steps", lambda n: n >= 1, "must be >= 1", "e.g. 1000"),
)


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
  section, _, field = key.rpartition(".")
  return config[section][field] if section else config[field]


def _error(key: str, value: Any, problem: str, fix: str) -> ConfigError:
  return ConfigError(f"{key}={value!r}: {problem}; fix: {fix}")


def check_rules(config: ml_collections.ConfigDict, rules: Sequence[Rule] = RULES) -> None:
  """Raises a ConfigError for the first key of `rules` whose value does not hold."""
  for rule in rules:
    value = _get(config, rule.key)
    if not rule.holds(value):
      raise _error(rule.key, value, rule.need, f"set --config.{rule.key} to {rule.fix}")


def check_patch_fits(config: ml_collections.ConfigDict) -> None:
  """Every resized copy must hold at least one whole patch: L_k >= P."""
  pp = config.preprocess
  small = [length for length in pp.longer_side_lengths if length < pp.patch_size]
  if small:
    raise _error("preprocess.longer_side_lengths", tuple(pp.longer_side_lengths),
                 f"side(s) {small} cannot hold one preprocess.patch_size={pp.patch_size} patch",
                 f"drop them or make them >= {pp.patch_size}, or lower preprocess.patch_size")


def check_batch_sizes(config: ml_collections.ConfigDict, num_devices: int,
                      keys: Sequence[str] = ("train.batch_size", "eval.batch_size")) -> None:
  """Global batches are split evenly over all devices of all hosts (jax.device_count())."""
  for key in keys:
    value = _get(config, key)
    if value % num_devices:
      multiple = -(-value // num_devices) * num_devices
      raise _error(key, value, f"a global batch must split evenly over the {num_devices} "
                   "devices (jax.device_count())", f"use a multiple of {num_devices}, e.g. "
                   f"--config.{key}={multiple}")


def check_splits(dataset: str, splits: dict[str, str]) -> None:
  """The splits named by `splits` (config key -> split; '' = none) exist in `dataset`, by its
  builder's declared splits: nothing is prepared (tfds catalogue datasets are checked once
  prepared)."""
  declared = datasets.declared_splits(dataset)
  for key, value in splits.items():
    if declared is None or not value:
      continue
    # tfds split arithmetic: "train+validation", "train[:90%]".
    names = [part.split("[")[0].strip() for part in value.split("+")]
    if any(name not in declared for name in names):
      raise _error(key, value, f"dataset {dataset!r} has only the splits {list(declared)}",
                   "name one of them" + (" or ''" if key in SPLIT_KEYS[1:] else "")
                   + " (join several with '+')")


def validate_eval(config: ml_collections.ConfigDict, split: str, num_devices: int) -> None:
  """What mst-eval needs of a config before it builds the dataset: the split exists and the
  eval batch splits over the devices (the model comes from the checkpoint)."""
  check_rules(config, [rule for rule in RULES if rule.key == "eval.batch_size"])
  check_batch_sizes(config, num_devices, ["eval.batch_size"])
  check_splits(config.dataset.name, {"--split": split})


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises ValueError naming the keys of the first inconsistency: a value out of range (RULES,
  with the fix), a resized side smaller than a patch, a split the dataset lacks, a loss that does
  not suit the label or head (or mixup with hard class labels), an unknown optimizer or schedule;
  with `num_devices` (jax.device_count()), a global batch size that does not split over them.
  Also builds the model, preprocessing and augmentation configs, which check their own fields."""
  check_rules(config)
  check_patch_fits(config)
  check_splits(config.dataset.name, {key: _get(config, key) for key in SPLIT_KEYS})
  if num_devices is not None:
    check_batch_sizes(config, num_devices)
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
  if config.preprocess.max_seq_len == 0 and not config.preprocess.longer_side_lengths:
    raise ValueError("preprocess.max_seq_len=0 drops the native image and "
                     "preprocess.longer_side_lengths=() has no resized copy: no tokens are left")
  if config.train.num_steps <= 0 and config.train.num_epochs <= 0:
    raise ValueError("set train.num_steps > 0 or train.num_epochs > 0")
  check_model_selection(config)


def init_checkpoint(config: ml_collections.ConfigDict) -> str | None:
  """The pre-trained file or workdir training starts from, or None to train from scratch."""
  path = str(config.init.checkpoint).strip()
  return None if path.lower() in defaults.FROM_SCRATCH else path


def check_model_selection(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError if anything decided during training would look at the test split (an
  evaluation of it during training), or for an unknown `eval.select`."""
  spec, select = config.dataset, config.eval.select
  if select not in defaults.SELECT:
    raise ValueError(f"eval.select={select!r} is not one of {defaults.SELECT}")
  test_parts = set(spec.test_split.split("+")) - {""}
  if test_parts & set(spec.eval_split.split("+")):
    raise ValueError(
        f"dataset.eval_split={spec.eval_split!r} overlaps dataset.test_split="
        f"{spec.test_split!r}: evaluating the test split during training lets it choose the "
        "reported parameters. Evaluate a validation split, or set dataset.eval_split=''")
