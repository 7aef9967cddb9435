"""Every config file: loads with each variant, adds no key that mst.config.defaults lacks, states
the paper's settings, builds valid model and preprocessing configs, and takes command-line
overrides."""

import dataclasses
import functools
import importlib.util
import itertools
import os

import jax
import ml_collections
import pytest

from mst.cli import train as train_cli
from mst.config import defaults
from mst.configure import overrides
from mst.configure import resolve
from mst.data import augmentation
from mst.data import multiscale
from mst.data import source
from mst.evaluation import evaluate
from mst.models import musiq
from mst.training import optim
from mst.training import run as run_lib
from support import REPO

CONFIG_DIR = str(REPO / "configs")
TASKS = ("koniq", "spaq", "ava", "paq2piq", "imagenet", "custom", "demo", "iqa")
ARGS = (None, "", "runlocal", " runlocal ,runlocal")


def _load(name: str, arg=None) -> ml_collections.ConfigDict:
  if name == "defaults":  # the base every config file builds on
    return defaults.get_config(arg)
  return overrides.load_config(os.path.join(CONFIG_DIR, f"{name}.py"), arg)


def _variants(name: str) -> tuple[str, ...]:
  """The variants a config file declares (`VARIANTS`), else the base's."""
  if name == "defaults":
    return defaults.VARIANTS
  path = os.path.join(CONFIG_DIR, f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"_variants_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return tuple(getattr(module, "VARIANTS", defaults.VARIANTS))


def _every_variant(name: str) -> list[str | None]:
  """None and every combination of the file's variants ("holdout", "holdout,runlocal", ...)."""
  names = _variants(name)
  return [None] + [",".join(c) for n in range(1, len(names) + 1)
                   for c in itertools.combinations(names, n)]


def _keys(config: ml_collections.ConfigDict, prefix: str = "") -> set[str]:
  keys = set()
  for key, value in config.items():
    keys.add(prefix + key)
    if isinstance(value, ml_collections.ConfigDict):
      keys |= _keys(value, f"{prefix}{key}.")
  return keys


def test_every_config_file_is_tested():
  files = {f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith(".py")}
  assert files == set(TASKS)


@pytest.mark.parametrize("name", ("defaults",) + TASKS)
@pytest.mark.parametrize("arg", ARGS)
def test_loads_adds_no_keys_and_validates(name, arg):
  config = _load(name, arg)
  assert _keys(config) == _keys(defaults.get_config())  # no typo adds a key
  for key in _keys(config):  # and no task changes a value's type (the command line relies on it)
    base = defaults.get_config()
    value, default = _get(config, key), _get(base, key)
    assert isinstance(value, type(default)) or (isinstance(default, float) and
                                                isinstance(value, int)), key
  resolve.validate(config)
  model = resolve.model_config(config)
  assert isinstance(model, musiq.ModelConfig)
  assert model.num_scales == len(config.preprocess.longer_side_lengths) + 1
  assert (model.patch_size, model.grid_size) == (config.preprocess.patch_size,
                                                 config.preprocess.grid_size)
  train_pp = resolve.preprocess_config(config, train=True)
  eval_pp = resolve.preprocess_config(config, train=False)
  assert isinstance(train_pp, multiscale.MultiScaleConfig)
  assert train_pp.max_seq_len_from_original_res == config.preprocess.max_seq_len
  assert eval_pp.max_seq_len_from_original_res == -1
  if arg and "runlocal" in arg:
    assert model.hidden_size <= 64 and model.num_layers <= 2
    assert config.train.num_steps <= 10 and config.train.batch_size <= 8


@pytest.mark.parametrize("name", TASKS)
def test_optimizer_builds_for_the_real_model(name):
  """The optimizer of each config initialises on its model's parameters (shapes only), so its
  learning-rate multiplier patterns match real parameter names."""
  config = _load(name)
  total_steps = config.optim.warmup_steps + 100
  tx = optim.make_optimizer(config.optim, total_steps)
  model = resolve.model_config(config)
  params = jax.eval_shape(functools.partial(musiq.init_params, model), jax.random.key(0))
  state = jax.eval_shape(tx.init, params)
  assert jax.tree.leaves(state)
  config.optim.lr_multipliers = (("^embeding/kernel$", 0.1),)
  with pytest.raises(ValueError, match="match no parameter"):
    jax.eval_shape(optim.make_optimizer(config.optim, total_steps).init, params)


def _get(config, dotted: str):
  for part in dotted.split("."):
    config = config[part]
  return config


# The typed values resolve builds from config sections. Those of the layers above mst.config
# (training, evaluation, and the dataset spec they share) have no defaults of their own: resolve
# fills every field. Those below it, which the library also builds without a config (the paper's
# model, preprocessing and augmentation), own their defaults, and the section takes them.
FILLED_BY_RESOLVE = {"dataset": source.DatasetSpec, "data": run_lib.Layout, "init": run_lib.Init,
                     "train": run_lib.Loop, "optim": optim.OptimConfig,
                     "eval": evaluate.EvalSettings}
OWN_DEFAULTS = {"model": musiq.ModelConfig, "preprocess": multiscale.MultiScaleConfig,
                "augment": augmentation.Augment}


def test_each_default_is_written_once():
  config = defaults.get_config()
  for name, cls in FILLED_BY_RESOLVE.items():
    for field in dataclasses.fields(cls):
      assert field.name in config[name], f"{cls.__name__}.{field.name} is no key of {name}"
      assert field.default is dataclasses.MISSING, f"{cls.__name__}.{field.name} has a default"
  for name, cls in OWN_DEFAULTS.items():
    typed = {f.name: f.default for f in dataclasses.fields(cls)}
    assert set(config[name]) & set(typed), name
    for key, value in config[name].items():
      if key not in typed:  # a key of the section alone, e.g. preprocess.max_seq_len
        continue
      none_is_zero = (name, key) == ("model", "representation_size")  # 0: no pre_logits layer
      expected = 0 if none_is_zero else typed[key]
      assert (value, type(value)) == (expected, type(expected)), f"{name}.{key}"
  # The model's section holds every field but those copied from preprocess.
  model_fields = {f.name for f in dataclasses.fields(musiq.ModelConfig)}
  assert set(config.model) == model_fields - set(resolve.DERIVED_MODEL_FIELDS)


def test_resolve_fills_every_typed_field_from_its_key():
  config = defaults.get_config()
  run = resolve.run(config)
  typed = {"dataset": run.dataset, "data": run.layout, "optim": run.optim, "eval": run.eval,
           "train": run.loop, "init": run.init}
  for name, value in typed.items():
    for field in dataclasses.fields(value):
      expected = {("init", "checkpoint"): None, ("train", "profile_steps"): None}.get(
          (name, field.name), config[name][field.name])
      assert getattr(value, field.name) == expected, f"{name}.{field.name}"
  config.model.unknown_field = 1
  with pytest.raises(ValueError, match="unknown_field"):
    resolve.model_config(config)


@pytest.mark.parametrize("name", ("defaults",) + TASKS)
def test_unknown_variant_raises_naming_valid_ones(name):
  with pytest.raises(ValueError, match=r"unknown config variant.*valid: \[.*'runlocal'"):
    _load(name, "runlocal,fast")


# name: (dataset, optimizer, peak lr, epochs, batch, loss, label, head, classes, mos_scale):
# every paper dataset trains on its published scale (0-100; AVA 1-10 through the distribution).
PAPER = {
    "paq2piq": ("paq2piq", "sgd", 2e-4, 10, 128, "l1", "mos", "score", 1, 1.0),
    "koniq": ("koniq10k", "sgd", 2e-3, 30, 96, "l1", "mos", "score", 1, 1.0),
    "spaq": ("spaq/shorter_side_512", "sgd", 1e-4, 30, 128, "l1", "mos", "score", 1, 1.0),
    "ava": ("ava", "sgd", 0.12, 20, 512, "emd", "dist", "distribution", 10, 1.0),
    "imagenet": ("imagenet2012", "adamw", 1e-3, 300, 4096, "cross_entropy", "dist",
                 "classification", 1000, 1.0),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_settings(name):
  config = _load(name)
  dataset, opt, lr, epochs, batch, loss, label, head, classes, scale = PAPER[name]
  assert config.dataset.name == dataset
  assert (config.optim.name, config.optim.learning_rate, config.optim.schedule) == (opt, lr,
                                                                                   "cosine")
  assert (config.train.num_epochs, config.train.num_steps, config.train.batch_size) == (
      epochs, -1, batch)
  assert (config.loss.name, config.dataset.label) == (loss, label)
  assert (config.model.head, config.model.num_classes) == (head, classes)
  assert config.dataset.mos_scale == scale
  assert config.preprocess.max_seq_len == 512
  assert tuple(config.preprocess.longer_side_lengths) == (224, 384)
  # Fine-tuning starts from the ImageNet pre-trained model; pre-training from scratch.
  assert config.init.checkpoint == (
      "none" if name == "imagenet" else defaults.IMAGENET_CHECKPOINT)
  # The paper's 27.1 M-parameter model.
  assert (config.model.hidden_size, config.model.num_layers, config.model.num_heads,
          config.model.mlp_dim, config.model.patch_encoder) == (384, 14, 6, 1152, "resnet")
  if name == "imagenet":
    assert (config.optim.b1, config.optim.b2, config.optim.weight_decay) == (0.9, 0.999, 0.1)
    assert config.optim.warmup_steps > 0 and config.augment.crop
    assert config.augment.randaugment_layers > 0 and config.augment.mixup_alpha > 0
  else:
    assert (config.optim.momentum, config.optim.nesterov, config.optim.warmup_steps) == (
        0.9, False, 0)
    assert config.augment.flip_prob == 0.5 and not config.augment.crop  # the flip alone
    assert config.augment.randaugment_layers == 0 and config.augment.mixup_alpha == 0
  if name == "ava":
    assert config.loss.emd_r == 2 and config.eval.ava_metrics
    # The paper trains on every non-test image: no validation, the last step's parameters.
    assert (config.dataset.train_split, config.dataset.eval_split, config.eval.select) == (
        "train+validation", "", "last")
    holdout = _load("ava", "holdout")
    assert (holdout.dataset.train_split, holdout.dataset.eval_split, holdout.eval.select) == (
        "train", "validation", "best")


@pytest.mark.parametrize("name", TASKS)
def test_no_config_looks_at_test_during_training(name):
  """In every variant, nothing evaluated or chosen during training is (part of) the test split,
  and the test split is not trained on."""
  for arg in _every_variant(name):
    config = _load(name, arg)
    spec = config.dataset
    test = set(spec.test_split.split("+")) - {""}
    assert not test & set(spec.eval_split.split("+")), (name, arg, "evaluates test")
    assert not test & set(spec.train_split.split("+")), (name, arg, "trains on test")
    assert "test" not in spec.eval_split and "test" not in spec.train_split, (name, arg)
    assert config.eval.select in ("best", "last"), (name, arg)
    if config.eval.select == "best":
      assert spec.eval_split, (name, arg, "selects with no validation split")
    resolve.validate(config)


def test_validate_refuses_selection_on_test():
  config = _load("koniq")
  config.dataset.eval_split = "test"
  with pytest.raises(ValueError, match="eval_split='test' overlaps dataset.test_split"):
    resolve.validate(config)
  config.dataset.eval_split = "validation+test"
  with pytest.raises(ValueError, match="overlaps"):
    resolve.validate(config)
  config.dataset.eval_split = ""  # no evaluation during training: nothing to choose on
  resolve.validate(config)
  config.eval.select = "first"
  with pytest.raises(ValueError, match="eval.select='first'"):
    resolve.validate(config)


# name[:arg]: (dropout, attention dropout, stochastic depth, weight decay, clipping). Fine-tuning
# (the paper states none): the released checkpoints' model config and the official encoder's
# defaults, weight decay in pre-training only, no clipping. ImageNet: the official encoder's
# dropout, the paper's weight decay, ViT's clipping. The CPU recipes: as measured.
REGULARISATION = {
    "paq2piq": (0.0, 0.0, 0.0, 0.0, 0.0),
    "koniq": (0.0, 0.0, 0.0, 0.0, 0.0),
    "spaq": (0.0, 0.0, 0.0, 0.0, 0.0),
    "ava": (0.0, 0.0, 0.0, 0.0, 0.0),
    "custom": (0.0, 0.0, 0.0, 0.0, 0.0),
    "imagenet": (0.1, 0.1, 0.0, 0.1, 1.0),
    "demo": (0.0, 0.0, 0.0, 0.01, 0.0),
    "custom:scratch": (0.1, 0.0, 0.0, 0.05, 0.0),
}


@pytest.mark.parametrize("name", sorted(REGULARISATION))
def test_regularisation(name):
  """Dropout, stochastic depth, weight decay and clipping of each config, where the paper states
  none for fine-tuning (docs/training.md gives the sources)."""
  config = _load(*name.split(":"))
  assert (config.model.dropout_rate, config.model.attention_dropout_rate,
          config.model.stochastic_depth, config.optim.weight_decay,
          config.optim.grad_clip_norm) == REGULARISATION[name]


@pytest.mark.parametrize("name", TASKS)
def test_runlocal_comes_last(name):
  """Whatever the order in `arg`, runlocal shrinks the config after the file's own variants."""
  for arg in _every_variant(name):
    if arg and "runlocal" in arg:
      for order in (arg, ",".join(reversed(arg.split(",")))):
        config = _load(name, order)
        assert config.model.hidden_size <= 64 and config.model.num_layers <= 2, (name, order)
        assert config.train.num_steps <= 10 and config.train.batch_size <= 8, (name, order)
        assert config.init.checkpoint == "none", (name, order)


def test_mixup_needs_soft_labels():
  config = _load("imagenet")
  config.dataset.label = "label"
  with pytest.raises(ValueError, match="mixup_alpha.*dataset.label='dist'"):
    resolve.validate(config)
  config.augment.mixup_alpha = 0.0  # without mixup, hard class labels are fine
  resolve.validate(config)
  config.augment.randaugment_magnitude = 40
  with pytest.raises(ValueError, match="randaugment_magnitude"):
    resolve.validate(config)


def test_demo_and_custom_settings():
  demo = _load("demo")
  assert (demo.dataset.name, demo.dataset.mos_scale, demo.loss.name) == ("demo", 100.0, "l1")
  # What learned on 2 CPU cores (see configs/demo.py): AdamW 1e-3, the embedding kernel's rate
  # x0.1, the head bias at the mean MOS, the cheap conv patch encoder.
  assert demo.optim.name == "adamw" and demo.optim.learning_rate == 1e-3
  assert tuple(demo.optim.lr_multipliers) == (("^embedding/kernel$", 0.1),)
  assert demo.init.head_bias_from_train_mean and demo.optim.warmup_steps == 20
  assert demo.model.hidden_size <= 128 and demo.model.num_layers <= 4
  assert demo.model.patch_encoder == "conv"
  assert demo.preprocess.max_seq_len == 16  # a 128 px crop has 4 x 4 native patches
  custom = _load("custom")
  assert custom.dataset.name == "custom" and custom.dataset.csv == ""
  assert custom.dataset.mos_scale == 100.0
  koniq = _load("koniq")  # custom fine-tunes with KonIQ-10k's row of the paper
  for section in ("optim", "train", "augment", "loss", "model", "preprocess"):
    assert custom[section].to_dict() == koniq[section].to_dict(), section
  assert custom.init.checkpoint == defaults.IMAGENET_CHECKPOINT  # like the paper's configs
  assert demo.init.checkpoint == "none"  # the demo learns from scratch, offline
  for name in TASKS:  # runlocal is from scratch by design: tiny models, offline tests
    assert _load(name, "runlocal").init.checkpoint == "none", name


def _parse(*args: str) -> ml_collections.ConfigDict:
  """The config mst-train would run with these command-line arguments."""
  return train_cli.parse_args(["--workdir", "unused", *args])[1]


def test_command_line_overrides(capsys):
  config = _parse(f"--config={CONFIG_DIR}/koniq.py:runlocal", "--config.model.num_layers=3",
                  "--config.preprocess.grid_size=15",
                  "--config.preprocess.longer_side_lengths=(224,)",
                  "--config.optim.lr_multipliers=(('^embedding/kernel$', 0.1),)")
  assert config.train.num_steps == defaults.get_config("runlocal").train.num_steps  # the variant
  assert config.model.num_layers == 3
  assert config.preprocess.longer_side_lengths == (224,)
  model = resolve.model_config(config)
  assert (model.grid_size, model.num_scales) == (15, 2)
  assert tuple(config.optim.lr_multipliers) == (("^embedding/kernel$", 0.1),)
  resolve.validate(config)

  config = _parse(f"--config={CONFIG_DIR}/ava.py", "--config.preprocess.longer_side_lengths=()")
  assert resolve.model_config(config).num_scales == 1  # the native image only
  assert resolve.preprocess_config(config, True).longer_side_lengths == ()

  # A misspelt key fails (and suggests the right one) instead of being ignored.
  with pytest.raises(SystemExit):
    _parse(f"--config={CONFIG_DIR}/koniq.py", "--config.optim.learning_rat=1")
  assert "did you mean optim.learning_rate?" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    _parse(f"--config={CONFIG_DIR}/koniq.py:runlokal")
  assert "unknown config variant" in capsys.readouterr().err


@pytest.mark.parametrize("key,value,match", [
    ("loss.name", "emd", "trains on"),
    ("model.head", "distribution", "num_classes|needs model.head"),
    ("optim.name", "lamb", "optim.name"),
    ("optim.schedule", "step", "optim.schedule"),
    ("dataset.mos_scale", 0.0, "mos_scale"),
    ("train.batch_size", 0, "train.batch_size"),
    ("optim.lr_multipliers", (("(unclosed", 1.0),), "bad regex"),
])
def test_validate_rejects_inconsistent_configs(key, value, match):
  config = _load("koniq")
  section, field = key.split(".")
  config[section][field] = value
  with pytest.raises(ValueError, match=match):
    resolve.validate(config)


@pytest.mark.parametrize("dataset, top", [("livec", 100), ("kadid10k", 5), ("tid2013", 9),
                                          ("live", 100), ("csiq", 1)])
def test_iqa_config_trains_on_the_named_set_with_its_mos_near_0_to_1(dataset, top):
  """The top of each set's published MOS scale (LIVE: 100 - DMOS, CSIQ: 1 - DMOS)."""
  for arg in (dataset, f"runlocal,{dataset}"):
    config = _load("iqa", arg)
    assert config.dataset.name == dataset and config.dataset.mos_scale == top
    assert config.dataset.eval_split == "" and config.eval.select == "last"
    resolve.validate(config)
  with pytest.raises(ValueError, match="name one dataset"):
    _load("iqa", f"{dataset},{'csiq' if dataset != 'csiq' else 'live'}")
