"""Losses: hand-computed values, the example weights (eval padding), the config's choice and the
LOSSES registry."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mst.config import defaults
from mst.configure import overrides
from mst.configure import resolve
from mst.models import musiq
from mst.training import losses


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


def _batch_loss(config):
  """The batch loss of `config`'s resolved run (its loss, label and model head)."""
  return resolve.run(config).loss.batch_loss()


def test_the_run_picks_loss_label_and_weights():
  batch = {"mos": jnp.array([0.5, 0.1]), "dist": jnp.array([[0.0, 1.0], [1.0, 0.0]]),
           "label": jnp.array([1, 0]), "valid": jnp.array([True, False])}
  koniq = _batch_loss(overrides.load_config("configs/koniq.py", "runlocal"))
  assert koniq(jnp.array([[0.9], [7.0]]), batch) == pytest.approx(0.4)  # l1, second masked
  config = overrides.load_config("configs/ava.py", "runlocal")
  config.loss.emd_r = 1.0
  ava = _batch_loss(config)
  assert ava(jnp.zeros((2, 2)), batch) == pytest.approx(0.25)  # |CDF diff| (.5, 0), r=1
  imagenet = _batch_loss(overrides.load_config("configs/imagenet.py", "runlocal"))
  assert imagenet(jnp.zeros((2, 2)), batch) == pytest.approx(np.log(2))
  with pytest.raises(ValueError, match="needs model.head"):
    losses.choose("l1", "mos", "distribution", {})
  with pytest.raises(KeyError, match="no 'mos' label"):
    koniq(jnp.zeros((2, 1)), {"label": batch["label"]})


LABELS = sorted({label for loss in losses.LOSSES.values() for label in loss.labels})
CLASSES = {"score": 1, "distribution": 4, "classification": 4}


def _config(name, label, head):
  config = defaults.get_config("runlocal")
  config.loss.name, config.dataset.label, config.model.head = name, label, head
  config.model.num_classes = CLASSES[head]
  return config


def _batch():
  """Two examples, each label kind present (as the input pipeline makes them), one padded."""
  return {"mos": jnp.array([0.5, 0.1]), "dist": jnp.array([[0.0, 1.0, 2.0, 1.0], [1.0, 0, 0, 0]]),
          "label": jnp.array([3, 0]), "valid": jnp.array([True, False])}


def test_loss_entries_name_known_labels_and_heads():
  for loss in losses.LOSSES.values():
    assert isinstance(loss, losses.Loss) and loss.labels and loss.heads
    assert set(loss.heads) <= set(musiq.HEADS)
  assert set(LABELS) == {"mos", "dist", "label"}  # what the input pipeline puts in a batch


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_validate_and_choose_accept_exactly_the_entry_labels_and_heads(name):
  loss = losses.LOSSES[name]
  for label, head in itertools.product(LABELS, musiq.HEADS):
    config = _config(name, label, head)
    if label in loss.labels and head in loss.heads:
      resolve.validate(config)
      loss_fn = _batch_loss(config)
      value = loss_fn(jnp.ones((2, CLASSES[head])) / 3, _batch())
      assert value.shape == () and np.isfinite(value)
    else:
      message = "trains on" if label not in loss.labels else "needs model.head"
      with pytest.raises(ValueError, match=message):
        resolve.validate(config)
      with pytest.raises(ValueError, match=message):
        losses.choose(name, label, head, config.loss.to_dict())


def test_emd_reads_its_norm_from_the_config():
  config = _config("emd", "dist", "distribution")
  config.loss.emd_r = 1.0
  logits, batch = jnp.zeros((2, 4)), _batch()
  expected = losses.emd(logits, batch["dist"], batch["valid"], r=1.0)
  assert _batch_loss(config)(logits, batch) == pytest.approx(expected)
  assert expected != pytest.approx(losses.emd(logits, batch["dist"], batch["valid"]))
  config.loss.emd_r = 0.0
  with pytest.raises(ValueError, match="emd_r must be positive"):
    resolve.validate(config)
  resolve.validate(_config("l1", "mos", "score"))  # other losses never read emd_r


def _scaled_l1(predictions, mos, weights=None, scale=1.0):
  return scale * losses.l1(predictions, mos, weights)


def test_a_new_loss_is_one_registry_entry(monkeypatch):
  config = _config("scaled_l1", "mos", "score")
  with pytest.raises(ValueError, match="not one of"):
    resolve.validate(config)
  toy = losses.Loss(_scaled_l1, labels=("mos",), heads=("score",),
                    options=lambda loss_config: {"scale": 3.0})
  monkeypatch.setattr(losses, "LOSSES", {**losses.LOSSES, "scaled_l1": toy})
  resolve.validate(config)
  predictions, batch = jnp.array([[0.9], [7.0]]), _batch()
  assert _batch_loss(config)(predictions, batch) == pytest.approx(3 * 0.4)
  with pytest.raises(ValueError, match="needs model.head"):
    resolve.validate(_config("scaled_l1", "mos", "distribution"))


def test_loss_entries_are_frozen():
  with pytest.raises(dataclasses.FrozenInstanceError):
    losses.LOSSES["l1"].labels = ("dist",)
