"""`xla_call`: what an export carries is pinned to versions the supported TensorFlow reads, on
every supported JAX, and the op computes what JAX computes at every symbolic size."""

import re

import jax
import jax.numpy as jnp
from jaxlib.mlir.dialects import stablehlo
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.compiler.mlir.stablehlo import stablehlo as tf_stablehlo
from tensorflow.compiler.tf2xla.python import xla as tfxla

from mst.scoring import xla_call


def _masked_scores(params, batch):
  """Something of the model's shape: tokens through a matmul, masked, then a distribution."""
  hidden = jnp.tanh(batch["patches"] @ params["kernel"] + params["bias"])
  hidden = jnp.where(batch["mask"][..., None], hidden, 0.0)
  pooled = hidden.sum(1) / batch["mask"].sum(1, keepdims=True)
  return {"score": pooled.sum(-1), "distribution": jax.nn.softmax(pooled, -1)}


def _call():
  rng = np.random.default_rng(0)
  params = {"kernel": rng.normal(size=(6, 4)).astype(np.float32),
            "bias": rng.normal(size=(4,)).astype(np.float32)}
  example = {"patches": np.zeros((1, 1, 6), np.float32), "mask": np.ones((1, 1), bool)}
  spec = [None, {"patches": "(b, n, _)", "mask": "(b, n)"}]
  return params, xla_call.XlaCall(_masked_scores, (params, example), spec, ("cpu", "cuda", "tpu"))


def test_the_pinned_versions_are_ones_the_installed_tensorflow_reads():
  tf_version = tf_stablehlo.get_current_version()
  assert stablehlo.get_smaller_version(xla_call.stablehlo_target(), tf_version) == \
      xla_call.stablehlo_target()
  assert xla_call.CALLING_CONVENTION <= tfxla.call_module_maximum_supported_version()
  assert xla_call.CALLING_CONVENTION >= jax.export.minimum_supported_calling_convention_version


def test_the_module_is_written_at_the_pinned_versions_whatever_jax_picks():
  default = jax.config.jax_export_calling_convention_version
  _, call = _call()
  assert call.exported.calling_convention_version == xla_call.CALLING_CONVENTION
  # The portable artifact names the StableHLO version it was written for.
  assert set(re.findall(rb"StableHLO_v([0-9.]+[0-9])", call.module)) == \
      {xla_call.stablehlo_target().encode()}
  # JAX's own default is left as it was for the rest of the process.
  assert jax.config.jax_export_calling_convention_version == default


@pytest.mark.parametrize("batch_size, length", [(1, 3), (4, 17)])
def test_the_op_equals_jax_at_every_size(batch_size, length):
  params, call = _call()
  rng = np.random.default_rng(batch_size)
  batch = {"patches": rng.normal(size=(batch_size, length, 6)).astype(np.float32),
           "mask": np.arange(length)[None].repeat(batch_size, 0) < length - 1}
  expected = jax.jit(_masked_scores)(params, batch)
  fn = tf.function(lambda p, b: call(p, b), autograph=False)
  got = fn(tf.nest.map_structure(tf.constant, params), tf.nest.map_structure(tf.constant, batch))
  assert sorted(got) == ["distribution", "score"]
  for key in got:
    np.testing.assert_allclose(got[key].numpy(), expected[key], rtol=1e-6, atol=1e-6)


def test_a_wrong_number_of_arrays_is_a_clear_error():
  params, call = _call()
  with pytest.raises(TypeError, match="3 arrays given, the exported function takes 4"):
    call(params, {"mask": tf.ones((1, 1), tf.bool)})
