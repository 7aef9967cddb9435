"""Ready for TPU and GPU without one: the train step, the evaluation step and the scoring forward
lowered (never compiled or run) for `tpu` and `cuda` on the 8 CPU devices, with the shardings
training uses, in float32 and bfloat16 (`mst.runtime.lowering`).

The steps are built from the pieces the trainer and the evaluator use (`trainer.train_step` and
`TrainState`, `optim`, the run's loss, `evaluate.predict_fn`, `inference.outputs`, the shardings
of `mst.runtime.sharding`), on abstract arguments: nothing the size of the model is allocated.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mst.configure import resolve
from mst.data import multiscale
from mst.data import packing
from mst.evaluation import evaluate
from mst.models import musiq
from mst.runtime import lowering
from mst.runtime import sharding
from mst.scoring import inference
from mst.training import optim
from mst.training import trainer
from support.configs import tiny_run_config

PLATFORMS = ("tpu", "cuda")
DTYPES = ("float32", "bfloat16")
DEVICES = 8
EVAL_IMAGE = (100, 140)  # height, width of the image an evaluation batch is padded for


@pytest.fixture(autouse=True)
def never_compile(monkeypatch):
  """Compiling for a TPU or GPU on this CPU would fail: lowering must not try."""
  def refuse(self, *args, **kwargs):
    raise AssertionError("lowering compiled a program")
  monkeypatch.setattr(jax.stages.Lowered, "compile", refuse)


@functools.lru_cache(maxsize=None)
def _run(dtype: str, chunked_on_cpu: bool = False):
  """The runlocal custom config (the paper's ResNet patch encoder, two resized scales, a 2-layer
  64-wide Transformer, batch 8) with dropout on, so the step draws random bits, in `dtype`.

  Off the CPU the model never takes its chunked CPU loops, but while tracing it sees this CPU's
  backend: `chunked_on_cpu=False` lowers what a TPU or GPU runs (mst.runtime.lowering)."""
  config = tiny_run_config("labels.csv",  # never read: nothing here touches the data
                           model__dtype=dtype, model__dropout_rate=0.1,
                           model__chunked_on_cpu=chunked_on_cpu)
  return resolve.run(config, DEVICES)


def _mesh():
  mesh = sharding.make_mesh()
  assert mesh.devices.size == DEVICES  # conftest's fake CPU devices
  return mesh


def _train_step(run, mesh):
  """The jitted train step and its abstract (state, batch, rng), built as the trainer builds
  them."""
  total_steps = run.loop.num_steps
  tx = optim.make_optimizer(run.optim, total_steps)
  state = trainer.abstract_state(run, tx)
  state_sharding = trainer.state_shardings(state, mesh)
  jitted = trainer.jit_train_step(run, musiq.Musiq(run.model), tx,
                                  optim.make_schedule(run.optim, total_steps), state_sharding,
                                  mesh)
  rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=sharding.replicated(mesh))
  return jitted, (lowering.abstract(state, state_sharding), _train_batch(run, mesh), rng)


def _train_batch(run, mesh):
  """A global training batch's shapes: every token real, laid out as the trainer's input does
  (`packing.padded_layout` adds each device's `real_patch_idx`)."""
  size, length = run.loop.batch_size, run.train_preprocess.seq_len(1, 1)
  tokens = {"patches": np.zeros((size, length, run.model.patch_size ** 2 * 3), np.float32),
            "spatial_idx": np.zeros((size, length), np.int32),
            "scale_idx": np.zeros((size, length), np.int32),
            "mask": np.ones((size, length), bool), "mos": np.zeros(size, np.float32)}
  return lowering.abstract(packing.padded_layout(tokens, DEVICES), sharding.data_sharding(mesh))


def _model_input(pp, size, height, width):
  """An evaluation or scoring batch's tokens: `size` images of height x width, padded to their
  sequence-length bucket."""
  length = multiscale.bucket_length(pp.seq_len(height, width))
  return {"patches": jax.ShapeDtypeStruct((size, length, pp.patch_size ** 2 * 3), jnp.float32),
          "spatial_idx": jax.ShapeDtypeStruct((size, length), jnp.int32),
          "scale_idx": jax.ShapeDtypeStruct((size, length), jnp.int32),
          "mask": jax.ShapeDtypeStruct((size, length), jnp.bool_)}


def _abstract_params(run, params_sharding=None):
  params = jax.eval_shape(functools.partial(musiq.init_params, run.model), jax.random.key(0))
  return lowering.abstract(params, params_sharding)


def _eval_step(run, mesh):
  """The evaluator's jitted prediction and its abstract (replicated params, sharded batch)."""
  jitted = evaluate.predict_step(musiq.Musiq(run.model), run.model.head, run.dataset.mos_scale,
                                 mesh)
  size = run.eval.batch_size
  batch = {**_model_input(run.eval_preprocess, size, *EVAL_IMAGE),
           "mos": jax.ShapeDtypeStruct((size,), jnp.float32),
           "index": jax.ShapeDtypeStruct((size,), jnp.int32),
           "valid": jax.ShapeDtypeStruct((size,), jnp.bool_)}
  batch = lowering.abstract(batch, sharding.data_sharding(mesh))
  return jitted, (_abstract_params(run, sharding.replicated(mesh)), batch)


def _scoring_forward(run):
  """mst-predict's forward (`inference.Predictor`): one device, a batch of 2 bucketed images."""
  model = musiq.Musiq(run.model)
  jitted = jax.jit(lambda params, batch: inference.outputs(
      model.apply({"params": params}, batch), run.model.head, run.dataset.mos_scale))
  return jitted, (_abstract_params(run), _model_input(run.eval_preprocess, 2, 300, 200))


def _check_dtypes(summary: lowering.Summary, dtype: str):
  """float32: no bfloat16 product at all. bfloat16: the products are bfloat16, none wholly
  float32 (in the train step a few of attention's gradient products take one float32 operand)."""
  total = sum(summary.dot_dtypes.values())
  assert total > 0
  if dtype == "float32":
    assert summary.dots_in("bf16") == 0, summary.dot_dtypes
  else:
    assert summary.dot_dtypes.get(("f32", "f32"), 0) == 0, summary.dot_dtypes
    assert summary.dot_dtypes.get(("bf16", "bf16"), 0) >= 0.75 * total, summary.dot_dtypes


def _float_dtypes(tree) -> set:
  """The dtypes of `tree`'s floating-point leaves (an optimizer's step counts are integers)."""
  return {leaf.dtype for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_train_step_lowers_data_parallel_for_the_platform(platform, dtype):
  mesh = _mesh()
  jitted, args = _train_step(_run(dtype), mesh)
  lowered = lowering.lower(jitted, *args, platform=platform)
  summary = lowering.summarize(lowered)
  text = lowered.as_text()
  assert summary.num_partitions == DEVICES
  # Every batch entry split over the data axis, every parameter and optimizer slot replicated.
  batch_args = len(args[1])
  assert text.count('sharding<@mesh, [{"data"}') == batch_args
  # The state's arguments are donated (updated in place) and replicated: no axis is split.
  donated = re.findall(r"sdy\.sharding<@mesh, \[([^\]]*)\]>, tf\.aliasing_output", text)
  assert len(donated) == len(jax.tree.leaves(args[0]))
  assert not [spec for spec in donated if '"data"' in spec]
  _check_dtypes(summary, dtype)
  # Attention and dropout lower to plain XLA ops on both (no cuDNN or threefry kernel calls).
  assert summary.custom_calls == ()
  # The updated parameters and optimizer state stay float32 whatever the compute dtype.
  new_state, _ = lowered.out_info
  assert _float_dtypes(new_state.params) == _float_dtypes(new_state.opt_state) == {
      np.dtype(np.float32)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_evaluation_step_lowers_data_parallel_for_the_platform(platform, dtype):
  mesh = _mesh()
  jitted, args = _eval_step(_run(dtype), mesh)
  lowered = lowering.lower(jitted, *args, platform=platform)
  summary = lowering.summarize(lowered)
  assert summary.num_partitions == DEVICES
  assert lowered.as_text().count('sharding<@mesh, [{"data"}') == len(args[1])
  _check_dtypes(summary, dtype)
  assert summary.custom_calls == () and summary.loops == 0
  # Predictions come back replicated on every device, in float32, for the host to gather.
  out = lowered.out_info
  assert out["prediction"].dtype == np.float32
  assert out["prediction"].shape == (_run(dtype).eval.batch_size,)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_scoring_forward_lowers_for_the_platform(platform, dtype):
  jitted, args = _scoring_forward(_run(dtype))
  lowered = lowering.lower(jitted, *args, platform=platform)
  summary = lowering.summarize(lowered)
  assert summary.num_partitions == 1
  _check_dtypes(summary, dtype)
  assert summary.custom_calls == () and summary.loops == 0
  assert lowered.out_info["score"].dtype == np.float32


def test_tracing_on_the_cpu_lowers_the_chunked_cpu_loops_unless_they_are_off():
  # Why the runs above set chunked_on_cpu=False: the model asks jax.default_backend() while
  # tracing, which is this CPU's, whatever platform the program is lowered for.
  def loops(run):
    jitted, args = _scoring_forward(run)
    return lowering.summarize(lowering.lower(jitted, *args, platform="tpu")).loops
  assert loops(_run("float32", chunked_on_cpu=True)) > 0
  assert loops(_run("float32")) == 0


def test_lower_names_the_platforms_it_knows():
  jitted = jax.jit(lambda x: x + 1)
  with pytest.raises(ValueError, match=r"platform='gpu' is not one of \('tpu', 'cuda'"):
    lowering.lower(jitted, jax.ShapeDtypeStruct((2,), jnp.float32), platform="gpu")
