"""Training losses: plain functions `(outputs, labels, weights) -> scalar`, their registry
`LOSSES`, and the one a run trains with (`LossChoice`, checked once by `choose`).

`LOSSES` is the one place a loss is registered: its `Loss` entry says which batch label it trains
on, which model heads it accepts and which `config.loss` keys it reads; `choose` reads nothing
else.

`weights` [B] (e.g. a batch's `valid` mask, where padded examples are False) weight each example's
loss; the result is their weighted mean, 0 when every weight is 0, and a padded example's labels
never reach the result (so zeros or NaNs there are harmless).
"""

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

LossFn = Callable[..., jax.Array]
Batch = dict[str, jax.Array]


def weighted_mean(per_example: jax.Array, weights: jax.Array | None) -> jax.Array:
  """sum(w * loss) / sum(w); examples of weight 0 are dropped even if their loss is NaN."""
  if weights is None:
    return jnp.mean(per_example)
  weights = jnp.asarray(weights, jnp.float32).reshape(per_example.shape)
  per_example = jnp.where(weights > 0, per_example, 0.0)
  return jnp.sum(weights * per_example) / jnp.maximum(jnp.sum(weights), 1e-12)


def _drop_padded_labels(labels: jax.Array, weights: jax.Array | None) -> jax.Array:
  """Labels with those of weight-0 examples set to 0, so a NaN there cannot reach a gradient
  (0 * NaN is NaN, even through `jnp.where`)."""
  if weights is None:
    return labels
  keep = jnp.asarray(weights).reshape(weights.shape + (1,) * (labels.ndim - 1)) > 0
  return jnp.where(keep, labels, jnp.zeros_like(labels))


def _scores(predictions: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Predictions [B] or [B, 1] and targets [B] as float32 [B], refusing silent broadcasting."""
  if predictions.ndim == 2 and predictions.shape[1] == 1:
    predictions = predictions[:, 0]
  if predictions.shape != targets.shape:
    raise ValueError(f"predictions {predictions.shape} do not match targets {targets.shape}")
  return predictions.astype(jnp.float32), targets.astype(jnp.float32)


def l1(predictions: jax.Array, mos: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Mean absolute error between predicted scores ([B] or [B, 1]) and MOS [B] (the paper's)."""
  predictions, mos = _scores(predictions, _drop_padded_labels(mos, weights))
  return weighted_mean(jnp.abs(predictions - mos), weights)


def mse(predictions: jax.Array, mos: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Mean squared error between predicted scores ([B] or [B, 1]) and MOS [B]."""
  predictions, mos = _scores(predictions, _drop_padded_labels(mos, weights))
  return weighted_mean(jnp.square(predictions - mos), weights)


def _normalize(dist: jax.Array) -> jax.Array:
  """Rows scaled to sum to 1 (vote counts work as well as frequencies); all-zero rows stay 0."""
  dist = dist.astype(jnp.float32)
  total = jnp.sum(dist, axis=-1, keepdims=True)
  return dist / jnp.where(total > 0, total, 1.0)


def _root(x: jax.Array, r: float) -> jax.Array:
  """x ** (1 / r) for x >= 0, with a zero (not NaN) gradient at x = 0."""
  positive = x > 0
  return jnp.where(positive, jnp.where(positive, x, 1.0) ** (1.0 / r), 0.0)


def emd(logits: jax.Array, dist: jax.Array, weights: jax.Array | None = None,
        r: float = 2.0) -> jax.Array:
  """Earth mover's distance between softmax(logits) and the label distribution [B, C], as NIMA
  defines it for ordered bins: per example (mean_c |CDF_p(c) - CDF_q(c)|^r)^(1/r)."""
  if logits.shape != dist.shape:
    raise ValueError(f"logits {logits.shape} do not match the distribution {dist.shape}")
  p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  q = _normalize(_drop_padded_labels(dist, weights))
  difference = jnp.cumsum(p, axis=-1) - jnp.cumsum(q, axis=-1)
  per_example = _root(jnp.mean(jnp.abs(difference) ** r, axis=-1), r)
  return weighted_mean(per_example, weights)


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  weights: jax.Array | None = None) -> jax.Array:
  """Softmax cross-entropy with integer labels [B] or soft label distributions [B, C] (mixup,
  score histograms; rows are normalised to sum to 1)."""
  logits = logits.astype(jnp.float32)
  labels = _drop_padded_labels(labels, weights)
  if labels.ndim == logits.ndim - 1:
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))
  elif labels.shape == logits.shape:
    per_example = optax.softmax_cross_entropy(logits, _normalize(labels))
  else:
    raise ValueError(f"labels {labels.shape} fit neither integer nor soft labels for logits "
                     f"{logits.shape}")
  return weighted_mean(per_example, weights)


def _no_options(loss_config: Mapping[str, Any]) -> dict[str, Any]:
  """For losses that read no `config.loss` key."""
  del loss_config
  return {}


def _emd_options(loss_config: Mapping[str, Any]) -> dict[str, Any]:
  """`r`, the EMD's norm, from `loss.emd_r`."""
  if loss_config["emd_r"] <= 0:
    raise ValueError(f"loss.emd_r must be positive, got {loss_config['emd_r']}")
  return {"r": float(loss_config["emd_r"])}


@dataclasses.dataclass(frozen=True)
class Loss:
  """A training loss and what it fits.

  Attributes:
    fn: `(outputs, labels, weights, **options) -> scalar`, one of the plain functions above.
    labels: the batch labels (`dataset.label`) it trains on.
    heads: the model heads (`model.head`) whose logits it understands.
    options: `config.loss` -> the keyword arguments of `fn` it sets (EMD's `r`); raises
      ValueError for values `fn` cannot take, so `validate` catches them before a run.
  """
  fn: LossFn
  labels: tuple[str, ...]
  heads: tuple[str, ...]
  options: Callable[[Mapping[str, Any]], dict[str, Any]] = _no_options

  def bind(self, loss_config: Mapping[str, Any]) -> LossFn:
    """`fn` with the options of `loss_config` set: `(outputs, labels, weights) -> scalar`."""
    return functools.partial(self.fn, **self.options(loss_config))


LOSSES: dict[str, Loss] = {
    "l1": Loss(l1, labels=("mos",), heads=("score",)),
    "mse": Loss(mse, labels=("mos",), heads=("score",)),
    "emd": Loss(emd, labels=("dist",), heads=("distribution",), options=_emd_options),
    "cross_entropy": Loss(cross_entropy, labels=("label", "dist"),
                          heads=("classification", "distribution")),
}


@dataclasses.dataclass(frozen=True)
class LossChoice:
  """The loss a run trains with: `LOSSES[name]` on the batch's `label`, with its options (the
  `config.loss` keys it reads, e.g. EMD's `r`) already checked."""
  name: str
  label: str
  options: tuple[tuple[str, Any], ...] = ()

  def batch_loss(self) -> Callable[[jax.Array, Batch], jax.Array]:
    """`loss_fn(logits, batch) -> scalar` on `batch[label]`, weighted by `batch["valid"]` when
    the batch has it. The MOS is expected already divided by `dataset.mos_scale` (the trainer's
    input side does that)."""
    fn = functools.partial(LOSSES[self.name].fn, **dict(self.options))
    label = self.label

    def loss_fn(logits: jax.Array, batch: Batch) -> jax.Array:
      if label not in batch:
        raise KeyError(f"the batch has no {label!r} label (dataset.label); it has {sorted(batch)}")
      return fn(logits, batch[label], batch.get("valid"))

    return loss_fn


def choose(name: str, label: str, head: str, loss_config: Mapping[str, Any]) -> LossChoice:
  """The loss `name` on `label` for a model with `head`; ValueError naming the keys when the loss
  is unknown, does not train on the label or head, or cannot take an option (loss.emd_r <= 0)."""
  if name not in LOSSES:
    raise ValueError(f"loss.name={name!r} is not one of {sorted(LOSSES)}")
  loss = LOSSES[name]
  if label not in loss.labels:
    raise ValueError(f"loss.name={name!r} trains on {loss.labels}, not dataset.label={label!r}")
  if head not in loss.heads:
    raise ValueError(f"loss.name={name!r} needs model.head in {loss.heads}, not {head!r}")
  return LossChoice(name, label, tuple(sorted(loss.options(loss_config).items())))
