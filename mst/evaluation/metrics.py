"""Quality metrics on a whole split's gathered predictions (numpy / scipy, not per batch).

Rank and linear correlations are not averages over examples, so they are computed once on every
prediction of a split (`quality_metrics`), with bootstrap confidence intervals (`bootstrap_ci`)
for comparing runs. Degenerate inputs (fewer than 2 examples, a NaN or inf, constant predictions
or labels for a correlation) give NaN: no exception and no warning, since an untrained or
collapsed model predicting a constant is an ordinary event to log, not an error.
"""

import warnings
from typing import Any, Callable

import numpy as np
from scipy import optimize
from scipy import stats

MetricFn = Callable[[np.ndarray, np.ndarray], float]
# AVA: an image is "high quality" when its mean score is >= 5 (Murray et al.'s split with
# delta = 0); a prediction is right when it lands on the same side of 5 as the MOS.
AVA_THRESHOLD = 5.0


def _pair(pred, mos, *, min_count: int = 2, varying: bool = True
          ) -> tuple[np.ndarray, np.ndarray] | None:
  """pred and mos as float64 vectors, or None if a metric on them is undefined."""
  pred = np.asarray(pred, np.float64).reshape(-1)
  mos = np.asarray(mos, np.float64).reshape(-1)
  if pred.shape != mos.shape:
    raise ValueError(f"{pred.size} predictions for {mos.size} labels")
  if pred.size < min_count or not (np.isfinite(pred).all() and np.isfinite(mos).all()):
    return None
  if varying and (np.ptp(pred) == 0 or np.ptp(mos) == 0):
    return None
  return pred, mos


def srcc(pred, mos) -> float:
  """Spearman's rank correlation (SRCC)."""
  pair = _pair(pred, mos)
  return np.nan if pair is None else float(stats.spearmanr(*pair).statistic)


def plcc(pred, mos) -> float:
  """Pearson's linear correlation (PLCC) of the raw predictions."""
  pair = _pair(pred, mos)
  return np.nan if pair is None else float(stats.pearsonr(*pair).statistic)


def krcc(pred, mos) -> float:
  """Kendall's rank correlation (tau-b, which accounts for ties)."""
  pair = _pair(pred, mos)
  return np.nan if pair is None else float(stats.kendalltau(*pair).statistic)


def mse(pred, mos) -> float:
  """Mean squared error (AVA reports it on the 1-10 scale)."""
  pair = _pair(pred, mos, min_count=1, varying=False)
  return np.nan if pair is None else float(np.mean((pair[0] - pair[1]) ** 2))


def rmse(pred, mos) -> float:
  """Root mean squared error, on the MOS's own scale."""
  return float(np.sqrt(mse(pred, mos)))


def binary_accuracy(pred, mos, threshold: float = AVA_THRESHOLD) -> float:
  """AVA's binary accuracy: the fraction of images whose prediction and MOS are on the same side
  of `threshold` (high quality = score >= threshold)."""
  pair = _pair(pred, mos, min_count=1, varying=False)
  if pair is None:
    return np.nan
  return float(np.mean((pair[0] >= threshold) == (pair[1] >= threshold)))


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
  """The VQEG 4-parameter logistic: from b2 (x -> -inf) to b1 (x -> +inf), centred at b3 with
  scale |b4|."""
  with np.errstate(over="ignore"):
    return (b1 - b2) / (1.0 + np.exp(-(x - b3) / np.abs(b4))) + b2


def fit_logistic(pred, mos) -> Callable[[np.ndarray], np.ndarray] | None:
  """The least-squares 4-parameter logistic mapping predictions onto the MOS scale, or None if
  the inputs are degenerate or the fit fails.

  Predictions are standardised first, so the initial guess (the MOS range, centre 0, scale 1,
  oriented by the sign of the raw correlation) suits any prediction scale.
  """
  pair = _pair(pred, mos, min_count=4)
  if pair is None:
    return None
  pred, mos = pair
  centre, spread = pred.mean(), pred.std()
  x = (pred - centre) / spread
  low, high = mos.min(), mos.max()
  if np.corrcoef(x, mos)[0, 1] < 0:
    low, high = high, low
  try:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
      warnings.simplefilter("ignore")
      params, _ = optimize.curve_fit(logistic4, x, mos, p0=[high, low, 0.0, 1.0], maxfev=20_000)
  except (RuntimeError, ValueError, optimize.OptimizeWarning):
    return None
  if not np.isfinite(params).all() or params[3] == 0:
    return None
  return lambda p: logistic4((np.asarray(p, np.float64) - centre) / spread, *params)


def scatter_stats(pred, mos) -> dict[str, Any]:
  """What the prediction-against-MOS plot (`mst.visualization.scatter`) shows besides the dots:
  SRCC, PLCC and the logistic fit (None with under 5 images, or when it fails)."""
  return {"srcc": srcc(pred, mos), "plcc": plcc(pred, mos),
          "curve": fit_logistic(pred, mos) if np.size(pred) >= 5 else None}


def plcc_logistic_with_status(pred, mos) -> tuple[float, bool]:
  """(PLCC after the logistic mapping, whether the fit succeeded). A failed fit falls back to the
  raw PLCC, so the value is always comparable; the flag says which it is. The value is negative
  when the fitted mapping is decreasing (predictions ordered against the MOS), as SRCC would be."""
  mapping = fit_logistic(pred, mos)
  if mapping is None:
    return plcc(pred, mos), False
  value = plcc(mapping(pred), mos)
  if np.isnan(value):  # the fitted curve is flat over the predictions
    return plcc(pred, mos), False
  # A decreasing fit would turn an anti-correlated model's PLCC positive; keep the sign honest.
  ends = mapping(np.array([np.min(pred), np.max(pred)]))
  return (value if ends[1] >= ends[0] else -value), True


def plcc_logistic(pred, mos) -> float:
  """PLCC after the standard 4-parameter logistic mapping (the VQEG protocol many IQA papers
  report), falling back to the raw PLCC if the fit fails."""
  return plcc_logistic_with_status(pred, mos)[0]


def quality_metrics(pred, mos, *, ava: bool = False) -> dict[str, float]:
  """srcc, plcc, krcc, rmse, plcc_logistic and logistic_fit_ok (1 or 0); with `ava`, also
  `accuracy` (binary, threshold 5) and `mse`. Predictions and MOS on the same (MOS) scale."""
  fitted, fit_ok = plcc_logistic_with_status(pred, mos)
  results = {"srcc": srcc(pred, mos), "plcc": plcc(pred, mos), "krcc": krcc(pred, mos),
             "rmse": rmse(pred, mos), "plcc_logistic": fitted, "logistic_fit_ok": float(fit_ok)}
  if ava:
    results["accuracy"] = binary_accuracy(pred, mos)
    results["mse"] = mse(pred, mos)
  return results


def bootstrap_ci(metric_fn: MetricFn, pred, mos, samples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
  """A percentile bootstrap confidence interval of `metric_fn(pred, mos)`.

  Resamples the examples with replacement `samples` times (seeded, so reruns agree); resamples
  where the metric is undefined (e.g. all-tied draws) are skipped. (NaN, NaN) when the metric is
  undefined on the data itself or on every resample.
  """
  if not 0.0 < level < 1.0:
    raise ValueError(f"level must be in (0, 1), got {level}")
  pred = np.asarray(pred, np.float64).reshape(-1)
  mos = np.asarray(mos, np.float64).reshape(-1)
  if samples < 1 or np.isnan(metric_fn(pred, mos)):
    return np.nan, np.nan
  rng = np.random.default_rng(seed)
  values = np.array([metric_fn(pred[i], mos[i])
                     for i in rng.integers(0, pred.size, (samples, pred.size))])
  values = values[np.isfinite(values)]
  if values.size == 0:
    return np.nan, np.nan
  tail = (1.0 - level) / 2.0 * 100.0
  low, high = np.percentile(values, [tail, 100.0 - tail])
  return float(low), float(high)
