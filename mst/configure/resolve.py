"""From an ml_collections config (`mst.config.defaults`) to the library's typed values, once, at
the edge: `run` (what mst-train trains) and `evaluation` (what mst-eval needs of a config).

Building them is validation: each rule is checked once, here or in the typed value's own
constructor, and names the key, the value and the fix. Below this package nothing reads a
ConfigDict, and nothing here reads `configs/`, so the library works wherever config files live.
"""

from collections.abc import Callable, Sequence
import dataclasses
import json
from typing import Any

import ml_collections

from mst import errors
from mst.config import defaults
from mst.config import model as model_lib
from mst.data import augmentation
from mst.data import datasets
from mst.data import multiscale
from mst.data import source
from mst.evaluation import evaluate
from mst.models import musiq
from mst.training import losses
from mst.training import optim
from mst.training import run as run_lib

SPLIT_KEYS = ("dataset.train_split", "dataset.eval_split", "dataset.test_split")
# The typed model and preprocessing of a config: also what scoring a workdir reads.
DERIVED_MODEL_FIELDS = model_lib.DERIVED_MODEL_FIELDS
model_config = model_lib.model_config
preprocess_config = model_lib.preprocess_config


def augment_config(config: ml_collections.ConfigDict) -> augmentation.Augment:
  """Training-time augmentation of `config.augment` (Augment checks the ranges)."""
  augment = config.augment
  return augmentation.Augment(
      flip_prob=augment.flip_prob, crop=augment.crop, crop_area=tuple(augment.crop_area),
      crop_aspect=tuple(augment.crop_aspect), randaugment_layers=augment.randaugment_layers,
      randaugment_magnitude=augment.randaugment_magnitude, mixup_alpha=augment.mixup_alpha)


class ConfigError(errors.BadInput):
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
    Rule("preprocess.max_seq_len", lambda native: native >= 0,
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
    Rule("train.peak_tflops", lambda t: t >= 0, "a device's peak TFLOP/s must be >= 0",
         "0 (the device kind's, if known) or the chip's dense bf16 peak, e.g. 989"),
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
  prepared, by the same rule)."""
  try:
    source.check_splits(dataset, datasets.declared_splits(dataset), splits,
                        optional=SPLIT_KEYS[1:])
  except source.SplitError as e:
    raise ConfigError(str(e)) from None


def profile_steps(value: str) -> tuple[int, int] | None:
  """`train.profile_steps` ("first,last", or one step; "" = none) as (first, last) steps, with
  1 <= first <= last; a ConfigError otherwise."""
  text = str(value).strip()
  if not text:
    return None
  parts = [part.strip() for part in text.split(",")]
  fix = "set --config.train.profile_steps to 'first,last' steps, e.g. '20,25', or '' for none"
  if len(parts) > 2 or not all(part.isascii() and part.isdigit() for part in parts):
    raise _error("train.profile_steps", value, "not 'first,last' (two step numbers)", fix)
  first, last = int(parts[0]), int(parts[-1])
  if first < 1:
    raise _error("train.profile_steps", value, "steps count from 1", fix)
  if first > last:
    raise _error("train.profile_steps", value, f"the first step, {first}, comes after the last",
                 fix)
  return first, last


def loop_config(config: ml_collections.ConfigDict) -> run_lib.Loop:
  """The training loop of `config.train` (its keys' rules are in RULES)."""
  fields = {f.name: config.train[f.name] for f in dataclasses.fields(run_lib.Loop)}
  fields["profile_steps"] = profile_steps(config.train.profile_steps)
  return run_lib.Loop(**fields)


def section(cls: type, values: ml_collections.ConfigDict) -> Any:
  """`cls` (a typed section, which has no defaults of its own) built from the config section's
  keys of its field names."""
  return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """What mst-eval takes from a config: the dataset, the evaluation settings and the seed of the
  bootstrap intervals (the model and its preprocessing come from each checkpoint)."""
  dataset: source.DatasetSpec
  eval: evaluate.EvalSettings
  seed: int


def evaluation(config: ml_collections.ConfigDict, split: str, num_devices: int) -> Evaluation:
  """What mst-eval needs of a config, checked before it builds the dataset: the split exists and
  the eval batch splits over the devices."""
  check_rules(config, [rule for rule in RULES if rule.key == "eval.batch_size"])
  check_batch_sizes(config, num_devices, ["eval.batch_size"])
  check_splits(config.dataset.name, {"--split": split})
  return Evaluation(section(source.DatasetSpec, config.dataset),
                    section(evaluate.EvalSettings, config.eval), int(config.seed))


def validate_eval(config: ml_collections.ConfigDict, split: str, num_devices: int) -> None:
  """`evaluation`, for callers that only check."""
  evaluation(config, split, num_devices)


def run(config: ml_collections.ConfigDict, num_devices: int | None = None) -> run_lib.Run:
  """The typed, checked training run of `config`; ValueError (ConfigError for single keys) naming
  the keys of the first inconsistency: a value out of range (RULES, with the fix), a resized side
  smaller than a patch, a split the dataset lacks, a loss that does not suit the label or head (or
  mixup with hard class labels), an unknown optimizer or schedule, a layout the model cannot
  take, a run with no steps, a malformed train.profile_steps, model selection that looks at the
  test split; with `num_devices`
  (jax.device_count()), a global batch size that does not split over them. The model,
  preprocessing, augmentation and optimizer configs check their own fields as they are built."""
  check_rules(config)
  check_patch_fits(config)
  check_splits(config.dataset.name, {key: _get(config, key) for key in SPLIT_KEYS})
  if num_devices is not None:
    check_batch_sizes(config, num_devices)
  model = model_config(config)
  train_preprocess = preprocess_config(config, train=True)
  dataset = section(source.DatasetSpec, config.dataset)
  augment = augment_config(config)
  if augment.mixup_alpha > 0 and dataset.label == "label":
    raise ValueError(f"augment.mixup_alpha={augment.mixup_alpha} mixes labels into soft targets: "
                     "set dataset.label='dist' (the batch carries the mixed one-hot `dist`), not "
                     "'label'")
  loss = losses.choose(config.loss.name, dataset.label, model.head, config.loss.to_dict())
  optim_config = section(optim.OptimConfig, config.optim)
  layout = section(run_lib.Layout, config.data)
  check_layout(layout, model, train_preprocess)
  check_prepared(layout, augment)
  if config.preprocess.max_seq_len == 0 and not config.preprocess.longer_side_lengths:
    raise ValueError("preprocess.max_seq_len=0 drops the native image and "
                     "preprocess.longer_side_lengths=() has no resized copy: no tokens are left")
  if config.train.num_steps <= 0 and config.train.num_epochs <= 0:
    raise ValueError("set train.num_steps > 0 or train.num_epochs > 0")
  eval_settings = section(evaluate.EvalSettings, config.eval)
  check_model_selection(config)
  return run_lib.Run(
      seed=int(config.seed), dataset=dataset, model=model, train_preprocess=train_preprocess,
      eval_preprocess=preprocess_config(config, train=False), augment=augment, layout=layout,
      optim=optim_config, loss=loss, loop=loop_config(config),
      eval=eval_settings, init=run_lib.Init(init_checkpoint(config),
                                            bool(config.init.head_bias_from_train_mean)),
      config=json.loads(config.to_json_best_effort()))


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """`run`, for callers that only check."""
  run(config, num_devices)


def check_layout(layout: run_lib.Layout, model: musiq.ModelConfig,
                 pp: multiscale.MultiScaleConfig) -> None:
  """Packing needs a spatial embedding that does not embed the row position, and a packed row
  must hold the longest image."""
  if layout.packing and model.spatial_embedding == "fixed":
    raise ValueError("data.packing=True puts several images in a row, but "
                     "model.spatial_embedding='fixed' embeds the row position: use 'hse' or "
                     "'sinusoid', or data.packing=False")
  longest = pp.seq_len(1, 1) + 1  # every scale full, and CLS
  if layout.packed_length and layout.packed_length < longest:
    raise ValueError(f"data.packed_length={layout.packed_length} is shorter than the "
                     f"{longest} tokens an image can take (sum of m_k, l and the CLS token): "
                     "raise it, or 0 to choose it from the training images")


def check_prepared(layout: run_lib.Layout, augment: augmentation.Augment) -> None:
  """The prepared pipeline stores each image decoded and resized once: an augmentation that
  changes the image before it is resized (a random crop, RandAugment) needs the decoding one."""
  if not layout.prepared_dir:
    return
  changes = [f"augment.{key}={value!r}" for key, value, on in (
      ("crop", augment.crop, augment.crop),
      ("randaugment_layers", augment.randaugment_layers, augment.randaugment_layers > 0)) if on]
  if changes:
    raise _error("data.prepared_dir", layout.prepared_dir,
                 f"the prepared pipeline stores every image decoded and resized once, but "
                 f"{' and '.join(changes)} change(s) the image before it is resized, every epoch",
                 "set --config.data.prepared_dir='' (decode every image every epoch), or keep "
                 "the flip (and mixup) as the only augmentation")


def init_checkpoint(config: ml_collections.ConfigDict) -> str | None:
  """The pre-trained file or workdir training starts from, or None to train from scratch."""
  path = str(config.init.checkpoint).strip()
  return None if path.lower() in defaults.FROM_SCRATCH else path


def check_model_selection(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError if anything decided during training would look at the test split (an
  evaluation of it during training)."""
  spec = config.dataset
  test_parts = set(spec.test_split.split("+")) - {""}
  if test_parts & set(spec.eval_split.split("+")):
    raise ValueError(
        f"dataset.eval_split={spec.eval_split!r} overlaps dataset.test_split="
        f"{spec.test_split!r}: evaluating the test split during training lets it choose the "
        "reported parameters. Evaluate a validation split, or set dataset.eval_split=''")
