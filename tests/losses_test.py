"""Losses: hand-computed values, the example weights (eval padding), and the config's choice."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mst.training import losses
from mst.config import overrides


def test_l1_and_mse_hand_computed():
  pred = jnp.array([[0.5], [0.2], [0.9]])  # a score head's [B, 1] output
  mos = jnp.array([0.7, 0.2, 0.3])
  assert losses.l1(pred, mos) == pytest.approx((0.2 + 0.0 + 0.6) / 3)
  assert losses.mse(pred, mos) == pytest.approx((0.04 + 0.0 + 0.36) / 3)
  assert losses.l1(pred[:, 0], mos) == pytest.approx((0.2 + 0.0 + 0.6) / 3)  # [B] works too


def test_weights_drop_padded_examples_even_when_nan():
  pred = jnp.array([0.5, 0.2, 0.9])
  mos = jnp.array([0.7, np.nan, 0.3])  # the padded example's label is garbage
  valid = jnp.array([True, False, True])
  assert losses.l1(pred, mos, valid) == pytest.approx((0.2 + 0.6) / 2)
  grads = jax.grad(lambda p: losses.mse(p, mos, valid))(pred)
  np.testing.assert_allclose(grads, [2 * -0.2 / 2, 0.0, 2 * 0.6 / 2], atol=1e-6)
  assert losses.l1(pred, mos, jnp.zeros(3, bool)) == 0.0  # all padding: 0, not NaN
  weighted = losses.l1(pred[::2], mos[::2], jnp.array([3.0, 1.0]))
  assert weighted == pytest.approx((3 * 0.2 + 0.6) / 4)


def test_shape_mismatch_raises():
  with pytest.raises(ValueError, match="do not match"):
    losses.l1(jnp.zeros((4, 2)), jnp.zeros(4))


def test_emd_hand_computed():
  # softmax(log q) = q. p = (0.5, 0.5, 0), q = (0, 0.5, 0.5): CDFs (.5, 1, 1) and (0, .5, 1),
  # differences (.5, .5, 0): r=2 -> sqrt((.25 + .25) / 3); r=1 -> 1/3.
  logits = jnp.log(jnp.array([[0.5, 0.5, 1e-30]]))
  dist = jnp.array([[0.0, 1.0, 1.0]])  # counts: normalised to (0, .5, .5)
  assert losses.emd(logits, dist) == pytest.approx(np.sqrt(0.5 / 3), rel=1e-5)
  assert losses.emd(logits, dist, r=1.0) == pytest.approx(1 / 3, rel=1e-5)
  # Identical distributions: 0, with a finite gradient (the root is guarded at 0).
  same = jnp.log(jnp.array([[0.2, 0.3, 0.5]]))
  assert losses.emd(same, jnp.array([[0.2, 0.3, 0.5]])) == pytest.approx(0.0, abs=1e-6)
  grad = jax.grad(lambda x: losses.emd(x, jnp.array([[0.2, 0.3, 0.5]])))(same)
  assert np.isfinite(grad).all()


def test_emd_weights_and_padding_rows():
  logits = jnp.zeros((2, 4))
  dist = jnp.array([[1.0, 0, 0, 0], [np.nan, 0, 0, 0]])  # the second row is eval padding
  valid = jnp.array([True, False])
  # Uniform p vs a point mass at bin 1: CDF differences (.75, .5, .25, 0).
  expected = np.sqrt((0.75 ** 2 + 0.5 ** 2 + 0.25 ** 2) / 4)
  assert losses.emd(logits, dist, valid) == pytest.approx(expected, rel=1e-5)
  grad = jax.grad(lambda x: losses.emd(x, dist, valid))(logits)
  assert np.isfinite(grad).all() and not grad[1].any()


def test_cross_entropy_integer_and_soft_labels():
  logits = jnp.log(jnp.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]]))
  labels = jnp.array([0, 2])
  expected = -(np.log(0.7) + np.log(0.5)) / 2
  assert losses.cross_entropy(logits, labels) == pytest.approx(expected, rel=1e-5)
  one_hot = jax.nn.one_hot(labels, 3)
  assert losses.cross_entropy(logits, one_hot) == pytest.approx(expected, rel=1e-5)
  mixed = jnp.array([[0.6, 0.4, 0.0], [0.0, 0.0, 1.0]])  # mixup: soft targets
  soft = -(0.6 * np.log(0.7) + 0.4 * np.log(0.2) + np.log(0.5)) / 2
  assert losses.cross_entropy(logits, mixed) == pytest.approx(soft, rel=1e-5)
  assert losses.cross_entropy(logits, labels, jnp.array([1.0, 0.0])) == pytest.approx(
      -np.log(0.7), rel=1e-5)


def test_for_config_picks_loss_label_and_weights():
  batch = {"mos": jnp.array([0.5, 0.1]), "dist": jnp.array([[0.0, 1.0], [1.0, 0.0]]),
           "label": jnp.array([1, 0]), "valid": jnp.array([True, False])}
  koniq = losses.for_config(overrides.load_config("configs/koniq.py", "runlocal"), "score")
  assert koniq(jnp.array([[0.9], [7.0]]), batch) == pytest.approx(0.4)  # l1, second masked
  config = overrides.load_config("configs/ava.py", "runlocal")
  config.loss.emd_r = 1.0
  ava = losses.for_config(config, "distribution")
  assert ava(jnp.zeros((2, 2)), batch) == pytest.approx(0.25)  # |CDF diff| (.5, 0), r=1
  imagenet = losses.for_config(overrides.load_config("configs/imagenet.py", "runlocal"), "classification")
  assert imagenet(jnp.zeros((2, 2)), batch) == pytest.approx(np.log(2))
  with pytest.raises(ValueError, match="trains on"):
    losses.for_config(overrides.load_config("configs/koniq.py"), "distribution")
  with pytest.raises(KeyError, match="no 'mos' label"):
    koniq(jnp.zeros((2, 1)), {"label": batch["label"]})
  assert set(losses.LOSSES) == set(losses.LOSS_LABELS) == set(losses.LOSS_HEADS)
