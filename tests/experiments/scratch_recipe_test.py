"""`configs/custom.py:scratch`, the from-scratch recipe for your own images, and the set that
experiments/scratch_recipe.py builds to measure it."""

import csv
import json
import os

import jax
import numpy as np
import pytest

from experiments import scratch_recipe
from mst.checkpoints import workdirs
from mst.config import defaults
from mst.configure import overrides
from mst.configure import resolve
from mst.training import trainer
from support.configs import tiny_run_config


def test_scratch_variant_loads_validates_and_needs_no_pretrained_file():
  config = overrides.load_config("configs/custom.py", "scratch")
  resolve.validate(config)
  assert set(config.keys()) == set(defaults.get_config().keys())
  assert config.init.checkpoint in ("", "none")  # from scratch, whatever the default says
  assert config.dataset.name == "custom" and config.dataset.mos_scale == 100.0
  # The measured recipe (docs/training.md, "Training on your own images from scratch").
  assert config.optim.name == "adamw" and config.optim.learning_rate == 3e-4
  assert tuple(config.optim.lr_multipliers) == (("^embedding/kernel$", 0.03),)
  assert config.init.head_bias_from_train_mean and config.model.patch_encoder == "conv"
  assert config.model.dropout_rate == 0.1 and config.augment.crop
  assert config.optim.weight_decay == 0.05
  both = overrides.load_config("configs/custom.py", "scratch,runlocal")
  assert both.train.num_steps <= 10 and both.init.checkpoint in ("", "none")


@pytest.mark.slow
def test_scratch_recipe_trains_from_scratch(csv_dataset, tmp_path_factory):
  config = tiny_run_config(
      csv_dataset, tmp_path_factory.getbasetemp() / "tfds", "scratch", train__batch_size=8,
      train__num_steps=2, optim__warmup_steps=1, train__eval_every_steps=2,
      train__checkpoint_every_steps=2, eval__batch_size=8, eval__bootstrap_samples=0)
  workdir = tmp_path_factory.mktemp("scratch")
  results = trainer.train_and_evaluate(resolve.run(config, jax.device_count()), str(workdir))
  assert np.isfinite(results["rmse"])
  assert json.load(open(workdir / "test_metrics.json"))["rmse"] == results["rmse"]
  params, _ = workdirs.load_params(str(workdir))
  # The head started at the mean training MOS (0-100 / 100) and moved.
  bias = float(np.asarray(params["head"]["bias"]).reshape(-1)[0])
  mean_mos = np.mean([100 * i / 23 for i in range(24) if i % 6 < 4]) / 100
  assert abs(bias - mean_mos) < 0.05 and bias != np.float32(mean_mos)


@pytest.mark.experiments
def test_built_set_is_split_by_photo_with_mos_falling_with_strength(tmp_path):
  path = scratch_recipe.write_set(str(tmp_path), images=34, seed=3)
  rows = list(csv.DictReader(open(path)))
  assert len(rows) == 34  # two crops of each of 17 photos
  photo_split = {}
  for row in rows:
    assert os.path.isfile(tmp_path / row["image"])
    photo = row["image"].split("/")[1].rsplit("_", 2)[0]
    assert photo_split.setdefault(photo, row["split"]) == row["split"]  # one split per photo
  assert sorted(set(photo_split.values())) == ["test", "train", "validation"]
  kinds = {row["kind"] for row in rows}
  assert len(kinds - {"pristine", "jpeg", "blur", "noise"}) >= 2  # not only the demo's kinds
  for row in rows:
    expected = scratch_recipe.PRISTINE_MOS - scratch_recipe.DROP.get(row["kind"], 0.0) * float(
        row["strength"])
    assert abs(float(row["mos"]) - expected) < 5 * scratch_recipe.LABEL_NOISE
  again = scratch_recipe.write_set(str(tmp_path / "again"), images=34, seed=3)
  assert open(again).read() == open(path).read()
