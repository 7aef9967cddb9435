"""Quality metrics: hand-computed values, agreement with scipy, the logistic fit, degenerate
inputs and bootstrap intervals."""

import warnings

import numpy as np
import pytest
from scipy import stats

from mst.evaluation import metrics

PRED = np.array([1.0, 2.0, 3.0, 4.0])
MOS = np.array([1.0, 3.0, 2.0, 4.0])


def test_hand_computed_values():
  # Ranks differ by one swap: d = (0, 1, -1, 0), SRCC = 1 - 6 * 2 / (4 * 15) = 0.8.
  assert metrics.srcc(PRED, MOS) == pytest.approx(0.8)
  # 5 concordant, 1 discordant pair of 6: tau = 4 / 6.
  assert metrics.krcc(PRED, MOS) == pytest.approx(4 / 6)
  # Centred: (-1.5, -.5, .5, 1.5) . (-1.5, .5, -.5, 1.5) = 4 over sum of squares 5.
  assert metrics.plcc(PRED, MOS) == pytest.approx(0.8)
  assert metrics.mse(PRED, MOS) == pytest.approx(0.5)
  assert metrics.rmse(PRED, MOS) == pytest.approx(np.sqrt(0.5))


def test_binary_accuracy_threshold_convention():
  pred = np.array([5.0, 4.99, 6.0, 3.0])
  mos = np.array([5.5, 5.0, 4.0, 4.5])
  # Same side of 5 (high is >= 5): yes, no (4.99 low, 5.0 high), no, yes.
  assert metrics.binary_accuracy(pred, mos) == pytest.approx(0.5)
  assert metrics.binary_accuracy(pred, mos, threshold=4.0) == pytest.approx(0.75)


def test_agrees_with_scipy_on_random_data():
  rng = np.random.default_rng(0)
  mos = rng.uniform(1, 5, 200)
  pred = mos + rng.normal(0, 0.7, 200)
  pred[:20] = np.round(pred[:20])  # ties
  assert metrics.srcc(pred, mos) == pytest.approx(stats.spearmanr(pred, mos).statistic)
  assert metrics.plcc(pred, mos) == pytest.approx(stats.pearsonr(pred, mos).statistic)
  assert metrics.krcc(pred, mos) == pytest.approx(stats.kendalltau(pred, mos).statistic)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_logistic_fit_recovers_a_monotone_mapping(sign):
  rng = np.random.default_rng(1)
  pred = rng.uniform(-3, 3, 300) * 7 + 40  # an arbitrary prediction scale
  mos = metrics.logistic4(pred, 4.5, 1.2, 45.0, 3.0)
  if sign < 0:
    mos = 5.7 - mos  # a decreasing mapping
  assert abs(metrics.plcc(pred, mos)) < 0.95  # the raw PLCC sees the curvature
  value, ok = metrics.plcc_logistic_with_status(pred, mos)
  assert ok
  assert value == pytest.approx(sign, abs=1e-6)  # the sign follows the mapping's direction
  mapping = metrics.fit_logistic(pred, mos)
  np.testing.assert_allclose(mapping(pred), mos, atol=1e-4)


def test_logistic_fit_failure_falls_back_to_raw_plcc(monkeypatch):
  rng = np.random.default_rng(4)
  pred = rng.uniform(0, 1, 30)
  mos = pred ** 3 + rng.normal(0, 0.05, 30)

  def fail(*args, **kwargs):
    raise RuntimeError("Optimal parameters not found")

  monkeypatch.setattr(metrics.optimize, "curve_fit", fail)
  value, ok = metrics.plcc_logistic_with_status(pred, mos)
  assert not ok and value == pytest.approx(metrics.plcc(pred, mos))
  assert metrics.quality_metrics(pred, mos)["logistic_fit_ok"] == 0.0
  monkeypatch.undo()
  # Too few points to fit 4 parameters: the raw PLCC, flagged.
  value, ok = metrics.plcc_logistic_with_status(PRED[:3], MOS[:3])
  assert not ok and value == pytest.approx(metrics.plcc(PRED[:3], MOS[:3]))


@pytest.mark.parametrize("pred,mos", [
    (np.full(5, 3.0), np.arange(5.0)),  # constant predictions (a collapsed model)
    (np.arange(5.0), np.full(5, 2.0)),  # constant labels
    (np.array([1.0]), np.array([2.0])),  # one example
    (np.array([1.0, np.nan, 3.0]), np.array([1.0, 2.0, 3.0])),  # NaN
    (np.zeros(0), np.zeros(0)),  # nothing
])
def test_degenerate_inputs_give_nan_quietly(pred, mos):
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    results = metrics.quality_metrics(pred, mos, ava=True)
    low, high = metrics.bootstrap_ci(metrics.srcc, pred, mos, samples=20)
  for name in ("srcc", "plcc", "krcc", "plcc_logistic"):
    assert np.isnan(results[name]), name
  assert results["logistic_fit_ok"] == 0.0
  assert np.isnan(low) and np.isnan(high)


def test_quality_metrics_keys():
  results = metrics.quality_metrics(PRED, MOS)
  assert set(results) == {"srcc", "plcc", "krcc", "rmse", "plcc_logistic", "logistic_fit_ok"}
  # pred 4, 5, 6, 7 vs MOS 4, 6, 5, 4.9: the last is on the wrong side of 5.
  ava = metrics.quality_metrics(PRED + 3, np.array([4.0, 6.0, 5.0, 4.9]), ava=True)
  assert ava["accuracy"] == pytest.approx(0.75)
  assert ava["mse"] == pytest.approx((0 + 1 + 1 + 2.1 ** 2) / 4)


def test_mismatched_lengths_raise():
  with pytest.raises(ValueError, match="3 predictions for 4 labels"):
    metrics.srcc(PRED[:3], MOS)


def test_bootstrap_ci_contains_estimate_and_narrows_with_n():
  rng = np.random.default_rng(2)

  def sample(n):
    mos = rng.uniform(0, 100, n)
    return mos + rng.normal(0, 25, n), mos

  widths = []
  for n in (50, 800):
    pred, mos = sample(n)
    low, high = metrics.bootstrap_ci(metrics.srcc, pred, mos, samples=300, seed=0)
    assert low < metrics.srcc(pred, mos) < high
    widths.append(high - low)
  assert widths[1] < widths[0] / 2  # ~1/sqrt(n): 4x narrower expected
  pred, mos = sample(100)
  assert metrics.bootstrap_ci(metrics.plcc, pred, mos, samples=50, seed=3) == \
      metrics.bootstrap_ci(metrics.plcc, pred, mos, samples=50, seed=3)
  with pytest.raises(ValueError):
    metrics.bootstrap_ci(metrics.plcc, pred, mos, level=1.5)
