"""Collapse detection: a model that predicts (nearly) the same score for every image.

Trained from scratch with too large a learning rate, MUSIQ can settle on a constant predictor: the
first large updates of the patch embedding make every token alike, the output no longer depends on
the image, and the loss stays at the best constant's level. Nothing fails, so it goes unnoticed
until the test SRCC comes out near 0. Two signs show it during training, and `Monitor` logs a
warning with what to try for each:

- validation predictions with ~zero spread: std below SPREAD_RATIO of the labels' std;
- the training loss, after WARMUP_FRACTION of the steps, still within LOSS_TOLERANCE of the loss
  of the best constant predictor (the median label for L1, the mean for MSE), computed from the
  training labels.

The checks are plain functions of numbers (`prediction_spread_collapsed`, `loss_stuck`,
`constant_predictor_loss`); `Monitor` only holds what they need across a run and logs.
"""

from absl import logging
import numpy as np

SPREAD_RATIO = 0.05
LOSS_TOLERANCE = 0.03
WARMUP_FRACTION = 0.25
ADVICE = ("Try a lower optim.learning_rate (e.g. 3e-4 with AdamW) with a smaller learning rate "
          "for the patch embedding (optim.lr_multipliers), the from-scratch recipe "
          "--config=configs/custom.py:scratch, or a pre-trained start (init.checkpoint).")


def constant_predictor_loss(labels: np.ndarray, loss_name: str) -> float | None:
  """The training loss of the best constant prediction for `labels` (on the scale the loss sees):
  the mean absolute deviation from the median for "l1", the variance for "mse"; None for other
  losses or fewer than 2 labels."""
  labels = np.asarray(labels, np.float64).reshape(-1)
  if labels.size < 2 or not np.isfinite(labels).all():
    return None
  if loss_name == "l1":
    return float(np.mean(np.abs(labels - np.median(labels))))
  if loss_name == "mse":
    return float(np.var(labels))
  return None


def prediction_spread_collapsed(predictions: np.ndarray, targets: np.ndarray,
                                ratio: float = SPREAD_RATIO) -> bool:
  """Whether the predictions' std is below `ratio` x the targets' std (targets that vary, finite
  predictions: a NaN is the NaN guard's business, not this check's)."""
  predictions = np.asarray(predictions, np.float64).reshape(-1)
  targets = np.asarray(targets, np.float64).reshape(-1)
  if predictions.size < 2 or not np.isfinite(predictions).all():
    return False
  target_std = float(np.std(targets[np.isfinite(targets)]))
  return target_std > 0 and float(np.std(predictions)) < ratio * target_std


def loss_stuck(loss: float, constant_loss: float | None, step: int, total_steps: int,
               tolerance: float = LOSS_TOLERANCE,
               warmup_fraction: float = WARMUP_FRACTION) -> bool:
  """Whether, past `warmup_fraction` of the run, `loss` is no lower than (1 - tolerance) x the
  constant predictor's loss."""
  if constant_loss is None or constant_loss <= 0 or not np.isfinite(loss):
    return False
  return step >= warmup_fraction * total_steps and loss >= (1.0 - tolerance) * constant_loss


class Monitor:
  """Checks one run's logged training loss and its validation predictions; logs a warning the
  first time each sign shows (and at every evaluation whose predictions are flat)."""

  def __init__(self, constant_loss: float | None, total_steps: int, scores: bool = True):
    self.constant_loss = constant_loss
    self.total_steps = total_steps
    self.scores = scores  # False for a classifier, whose predictions are class ids
    self.warned_loss = False

  @classmethod
  def for_run(cls, loss_name: str, head: str, train_labels: np.ndarray | None,
              total_steps: int) -> "Monitor":
    """A monitor for a run training `loss_name` on a model with `head`, whose loss sees
    `train_labels` (None: no loss check)."""
    constant = (None if train_labels is None
                else constant_predictor_loss(train_labels, loss_name))
    return cls(constant, total_steps, scores=head != "classification")

  def check_loss(self, step: int, loss: float) -> bool:
    """Logs a warning if the training loss is stuck at the constant predictor's; returns whether
    it is."""
    stuck = loss_stuck(float(loss), self.constant_loss, step, self.total_steps)
    if stuck and not self.warned_loss:
      self.warned_loss = True
      logging.warning(
          "Possible collapse at step %d: the training loss %.4g is still at the level of a "
          "constant predictor (%.4g, predicting the median training label for every image); "
          "the model is not using the image. %s", step, float(loss), self.constant_loss, ADVICE)
    return stuck

  def check_predictions(self, step: int, predictions: np.ndarray, targets: np.ndarray) -> bool:
    """Logs a warning if the validation predictions hardly vary; returns whether they do not."""
    flat = self.scores and prediction_spread_collapsed(predictions, targets)
    if flat:
      logging.warning(
          "Collapse at step %d: the validation predictions are nearly constant (std %.3g against "
          "the labels' %.3g; mean %.4g), so the model scores every image alike. %s", step,
          float(np.std(predictions)), float(np.nanstd(targets)), float(np.mean(predictions)),
          ADVICE)
    return flat
