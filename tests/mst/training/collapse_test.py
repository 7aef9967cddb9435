"""Collapse detection (mst.training.collapse): the constant predictor's loss, flat predictions, a
loss stuck at the constant's level, the warnings, and a real run that collapses saying so."""

import logging

import jax
import numpy as np
import pytest

from mst.training import collapse
from mst.configure import resolve
from mst.training import trainer
from support.configs import tiny_run_config


def test_constant_predictor_loss_is_the_best_constants():
  labels = np.array([0.0, 1.0, 2.0, 3.0, 10.0])
  # L1: the median (2) is off by 2, 1, 0, 1, 8.
  assert collapse.constant_predictor_loss(labels, "l1") == pytest.approx(12 / 5)
  # MSE: the mean (3.2) gives the variance.
  assert collapse.constant_predictor_loss(labels, "mse") == pytest.approx(
      np.mean((labels - 3.2) ** 2))
  # No constant on a fine grid does better.
  grid = np.linspace(-1, 11, 1201)
  assert np.abs(labels[None] - grid[:, None]).mean(1).min() >= 12 / 5 - 1e-9
  assert np.square(labels[None] - grid[:, None]).mean(1).min() >= np.var(labels) - 1e-9
  assert collapse.constant_predictor_loss(labels, "emd") is None
  assert collapse.constant_predictor_loss(np.array([0.5]), "l1") is None


def test_flat_predictions_are_a_collapse_and_spread_ones_are_not():
  rng = np.random.default_rng(0)
  targets = rng.uniform(10, 90, 200)  # std ~23
  constant = np.full(200, 51.3) + rng.normal(0, 0.3, 200)
  assert collapse.prediction_spread_collapsed(constant, targets)
  # A weak but real model: its predictions spread a quarter as much as the labels.
  weak = 50 + 0.25 * (targets - 50) + rng.normal(0, 1, 200)
  assert not collapse.prediction_spread_collapsed(weak, targets)
  # The ratio is the threshold: 0.3 / 23 is below 0.05, not below 0.01.
  assert not collapse.prediction_spread_collapsed(constant, targets, ratio=0.01)
  assert not collapse.prediction_spread_collapsed(constant, np.full(200, 50.0))  # no label spread
  assert not collapse.prediction_spread_collapsed(np.full(200, np.nan), targets)


def test_loss_stuck_only_after_the_warm_up_and_near_the_constant():
  constant = 0.21
  assert collapse.loss_stuck(0.212, constant, step=300, total_steps=600)
  assert collapse.loss_stuck(0.205, constant, step=300, total_steps=600)  # within 3 %
  assert not collapse.loss_stuck(0.19, constant, step=300, total_steps=600)  # 10 % below: learning
  assert not collapse.loss_stuck(0.212, constant, step=100, total_steps=600)  # still warming up
  assert not collapse.loss_stuck(0.212, None, step=300, total_steps=600)
  assert not collapse.loss_stuck(float("nan"), constant, step=300, total_steps=600)


def test_monitor_warns_once_with_what_to_try(caplog):
  monitor = collapse.Monitor(constant_loss=0.2, total_steps=100)
  with caplog.at_level(logging.WARNING):
    assert not monitor.check_loss(10, 0.2)  # warm-up
    assert monitor.check_loss(30, 0.199)
    assert monitor.check_loss(40, 0.2)
    assert not monitor.check_loss(50, 0.1)
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1
  assert "step 30" in warnings[0] and "constant predictor" in warnings[0]
  assert "learning_rate" in warnings[0] and "configs/custom.py:scratch" in warnings[0]
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    assert monitor.check_predictions(60, np.full(8, 42.0), np.arange(8.0) * 10)
  assert "nearly constant" in caplog.records[-1].getMessage()
  classifier = collapse.Monitor(None, 100, scores=False)
  assert not classifier.check_predictions(60, np.zeros(8), np.arange(8.0))


def test_monitor_for_run_reads_the_loss_name_and_head():
  labels = np.array([0.1, 0.2, 0.9])
  assert collapse.Monitor.for_run("l1", "score", labels, 10).constant_loss == pytest.approx(
      0.8 / 3)
  assert collapse.Monitor.for_run("mse", "score", labels, 10).constant_loss == pytest.approx(
      np.var(labels))
  assert collapse.Monitor.for_run("l1", "score", None, 10).constant_loss is None
  assert not collapse.Monitor.for_run("cross_entropy", "classification", None, 10).scores


@pytest.mark.slow
def test_a_run_that_cannot_learn_warns_of_a_collapse(csv_dataset, tmp_path_factory, caplog):
  # A vanishing learning rate (0 is refused by the config checks) keeps the head at the mean
  # training MOS: the constant predictor.
  # The scratch recipe's model: the cheapest to compile of the shipped ones.
  config = tiny_run_config(
      csv_dataset, tmp_path_factory.getbasetemp() / "tfds", "scratch", optim__learning_rate=1e-12,
      optim__warmup_steps=0, train__batch_size=8, train__num_steps=2, train__eval_every_steps=2,
      train__checkpoint_every_steps=2, eval__batch_size=8, dataset__test_split="")
  with caplog.at_level(logging.WARNING):
    trainer.train_and_evaluate(resolve.run(config, jax.device_count()),
                               str(tmp_path_factory.mktemp("collapsed")))
  messages = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
  assert "Collapse at step 2" in messages and "nearly constant" in messages
  assert "Possible collapse" in messages  # the training loss too
  assert "configs/custom.py:scratch" in messages
