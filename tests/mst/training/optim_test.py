"""The optimizer: schedule values, learning-rate multipliers, the weight-decay mask, clipping and
gradient accumulation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mst.config import defaults
from mst.training import optim


def _cfg(**overrides) -> optim.OptimConfig:
  """The default `config.optim` with `overrides`, typed (building it checks it)."""
  return optim.OptimConfig(**{**defaults.get_config().optim.to_dict(), **overrides})


def _params():
  """A tree shaped like a MUSIQ model's, small."""
  rng = np.random.default_rng(0)
  leaf = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  return {
      "embedding": {"kernel": leaf(6, 4), "bias": leaf(4)},
      "Transformer": {
          "cls": leaf(1, 1, 4),
          "posembed_input": {"pos_embedding": leaf(1, 9, 4)},
          "encoderblock_0": {"SelfAttention_0": {"query": {"kernel": leaf(4, 2, 2),
                                                           "bias": leaf(2, 2)}},
                             "LayerNorm_0": {"scale": leaf(4), "bias": leaf(4)}},
      },
      "head": {"kernel": leaf(4, 1), "bias": leaf(1)},
  }


def _update(tx, grads, params, steps=1):
  state = tx.init(params)
  for _ in range(steps):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_schedule_values_at_key_steps():
  cosine = optim.make_schedule(_cfg(learning_rate=1.0, warmup_steps=10,
                                    end_learning_rate_factor=0.1), total_steps=110)
  assert cosine(0) == 0.0
  assert cosine(5) == pytest.approx(0.5)  # half way up the warm-up
  assert cosine(10) == pytest.approx(1.0)  # the peak, at the end of the warm-up
  assert cosine(60) == pytest.approx(0.55)  # half way down: (1 + 0.1) / 2
  assert cosine(110) == pytest.approx(0.1)  # the end factor
  linear = optim.make_schedule(_cfg(learning_rate=2.0, schedule="linear"), total_steps=100)
  assert [float(linear(s)) for s in (0, 50, 100)] == pytest.approx([2.0, 1.0, 0.0])
  constant = optim.make_schedule(_cfg(learning_rate=3.0, schedule="constant", warmup_steps=4),
                                 total_steps=100)
  assert [float(constant(s)) for s in (2, 4, 99)] == pytest.approx([1.5, 3.0, 3.0])


def test_schedule_rejects_bad_settings():
  with pytest.raises(ValueError, match="schedule"):
    optim.make_schedule(_cfg(schedule="step"), 100)
  with pytest.raises(ValueError, match="warmup_steps"):
    optim.make_schedule(_cfg(warmup_steps=100), 100)
  with pytest.raises(ValueError, match="adamw"):
    optim.make_optimizer(_cfg(name="adam", weight_decay=0.1), 100)
  with pytest.raises(ValueError, match="optim.name"):
    optim.make_optimizer(_cfg(name="lamb"), 100)


@pytest.mark.parametrize("name,weight_decay,steps", [("sgd", 0.0, 3), ("adamw", 0.0, 3),
                                                     ("sgd", 0.01, 1), ("adamw", 0.01, 1)])
def test_lr_multipliers_scale_exactly_the_matched_updates(name, weight_decay, steps):
  # Several steps compound exactly only while the gradient does not depend on the parameters:
  # with weight decay, compare one update.
  params = _params()
  grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.3, params)
  settings = dict(name=name, learning_rate=0.1, weight_decay=weight_decay, schedule="constant")
  multipliers = (("^embedding/kernel$", 0.03), ("kernel", 2.0),
                 ("^embedding/kernel$", 7.0))  # never applied: the first match wins
  plain = _update(optim.make_optimizer(_cfg(**settings), 10), grads, params, steps)
  scaled = _update(optim.make_optimizer(_cfg(lr_multipliers=multipliers, **settings), 10),
                   grads, params, steps)
  factors = {"embedding/kernel": 0.03, "head/kernel": 2.0,
             "Transformer/encoderblock_0/SelfAttention_0/query/kernel": 2.0}
  for (path, p0), p1, p2 in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                jax.tree.leaves(plain), jax.tree.leaves(scaled)):
    factor = factors.get(optim.path_name(path), 1.0)
    np.testing.assert_allclose(p2 - p0, factor * (p1 - p0), rtol=2e-5, atol=1e-7,
                               err_msg=optim.path_name(path))


def test_lr_multiplier_pattern_matching_nothing_raises():
  tx = optim.make_optimizer(_cfg(lr_multipliers=(("^embedding/kernel$", 0.1),
                                                 ("^embeding/kernel$", 0.1))), 10)
  with pytest.raises(ValueError, match=r"\['\^embeding/kernel\$'\] match no parameter"):
    tx.init(_params())
  with pytest.raises(ValueError, match="pairs"):
    optim.parse_lr_multipliers((("a", 1.0, 2.0),))
  # A mapping works as well as pairs.
  assert optim.parse_lr_multipliers({"a.b": 2})[0][1] == 2.0


def test_weight_decay_applies_to_kernels_only():
  params = _params()
  mask = optim.decay_mask(params)
  decayed = {optim.path_name(p) for p, m in jax.tree_util.tree_flatten_with_path(mask)[0] if m}
  assert decayed == {"embedding/kernel", "head/kernel",
                     "Transformer/encoderblock_0/SelfAttention_0/query/kernel"}
  zeros = jax.tree.map(jnp.zeros_like, params)
  for name in ("adamw", "sgd"):
    after = _update(optim.make_optimizer(_cfg(name=name, learning_rate=0.5, weight_decay=0.1,
                                              momentum=0.0, schedule="constant"), 10),
                    zeros, params)
    for (path, p0), p1 in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                              jax.tree.leaves(after)):
      expected = p0 * (1 - 0.5 * 0.1) if optim.path_name(path) in decayed else p0
      np.testing.assert_allclose(p1, expected, rtol=1e-6, err_msg=f"{name} {path}")


def test_clipping_bounds_the_update():
  params = _params()
  grads = jax.tree.map(lambda p: jnp.full_like(p, 100.0), params)
  cfg = _cfg(learning_rate=1.0, momentum=0.0, schedule="constant", grad_clip_norm=1.0)
  after = _update(optim.make_optimizer(cfg, 10), grads, params)
  delta = jax.tree.map(lambda a, b: a - b, after, params)
  assert float(optax.tree.norm(delta)) == pytest.approx(1.0, rel=1e-5)
  cfg = dataclasses.replace(cfg, grad_clip_norm=0.0)
  unclipped = jax.tree.map(lambda a, b: a - b, _update(optim.make_optimizer(cfg, 10), grads,
                                                       params), params)
  assert float(optax.tree.norm(unclipped)) > 100.0


def test_accumulation_equals_one_big_batch_step():
  """k micro-batches then one update == one update on their union (SGD with momentum, cosine)."""
  rng = np.random.default_rng(3)
  data = jnp.asarray(rng.normal(size=(18, 3)), jnp.float32)
  params = {"w": {"kernel": jnp.zeros((1, 3))}}
  # 0.5 * mean ||w - x||^2: its gradient on a batch is w - mean(batch).
  loss = lambda p, x: 0.5 * jnp.mean(jnp.sum(jnp.square(p["w"]["kernel"] - x), axis=-1))
  k, updates = 3, 4
  common_cfg = dict(learning_rate=0.3, momentum=0.9, nesterov=True, schedule="cosine")
  big = optim.make_optimizer(_cfg(**common_cfg), total_steps=updates)
  small = optim.make_optimizer(_cfg(grad_accum_steps=k, **common_cfg), total_steps=updates * k)
  big_params, big_state = params, big.init(params)
  small_params, small_state = params, small.init(params)
  for u in range(updates):
    batch = data[(u % 3) * 6:(u % 3) * 6 + 6] * (u + 1)  # micro-batches of equal size
    grads = jax.grad(loss)(big_params, batch)
    delta, big_state = big.update(grads, big_state, big_params)
    big_params = optax.apply_updates(big_params, delta)
    for micro in jnp.split(batch, k):
      grads = jax.grad(loss)(small_params, micro)
      delta, small_state = small.update(grads, small_state, small_params)
      small_params = optax.apply_updates(small_params, delta)
    np.testing.assert_allclose(small_params["w"]["kernel"], big_params["w"]["kernel"],
                               rtol=1e-5, atol=1e-6, err_msg=f"update {u}")
  assert not np.allclose(big_params["w"]["kernel"], 0.0)
  # The schedule a trainer logs per step is the one the closing update applied.
  sched_small = optim.make_schedule(_cfg(grad_accum_steps=k, **common_cfg), updates * k)
  sched_big = optim.make_schedule(_cfg(**common_cfg), updates)
  assert [float(sched_small(s)) for s in (3, 4, 5)] == pytest.approx([float(sched_big(1))] * 3)
