"""Training: `train_and_evaluate(run, workdir)`, what `mst-train` runs on every host.

In order: the mesh -> the data -> the model, optimizer and state (fresh, from a pre-trained file,
or resumed from the workdir) -> the jitted train step -> the loop with summaries, evaluations,
checkpoints and the NaN guard -> a final test evaluation. It takes a `Run`: the config, resolved
and checked once by `mst.configure.resolve.run`. Everything random derives from `run.seed`; the data
stream and the step RNG are functions of the step, so a run resumed from a checkpoint ends with
exactly the parameters of an uninterrupted one.
"""

import dataclasses
import functools
import math
import os
from typing import Any

from absl import logging
from clu import metric_writers
from clu import metrics as clu_metrics
from clu import parameter_overview
from clu import periodic_actions
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow as tf

from mst import errors
from mst.checkpoints import loader
from mst.checkpoints import workdir_lock
from mst.checkpoints import workdirs
from mst.evaluation import evaluate
from mst.evaluation import metrics
from mst.evaluation import report
from mst.models import musiq
from mst.runtime import devices
from mst.runtime import progress
from mst.runtime import safe_output
from mst.runtime import sharding
from mst.training import collapse
from mst.training import data as training_data
from mst.training import optim
from mst.training import preemption
from mst.training import run as run_lib
from mst.training import throughput
from mst.visualization import scatter


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output("loss")
  grad_norm: clu_metrics.Average.from_output("grad_norm")
  learning_rate: clu_metrics.LastValue.from_output("learning_rate")


class NonFiniteLossError(errors.RunFailed, FloatingPointError):
  """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, model: musiq.Musiq,
               tx: optax.GradientTransformation, loss_fn, schedule) -> tuple[TrainState, Any]:
  """One optimizer update; pure, so it can be jitted with the state donated."""
  rng = jax.random.fold_in(rng, state.step)

  def objective(params):
    logits = model.apply({"params": params}, batch, train=True, rngs={"dropout": rng})
    return loss_fn(logits, batch)

  loss, grads = jax.value_and_grad(objective)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = TrainMetrics.single_from_model_output(
      loss=loss, grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.step))
  return TrainState(state.step + 1, params, opt_state), metrics


def _initial_params(run: run_lib.Run, rng, train_builder) -> dict:
  """Fresh parameters, overwritten by a pre-trained file's where the shapes agree."""
  params = jax.device_get(musiq.init_params(run.model, rng))
  if run.init.checkpoint:
    params = loader.merge_pretrained(params, run.init.checkpoint)
  if run.init.head_bias_from_train_mean:
    bias = training_data.head_bias(train_builder, run.dataset, run.model.head)
    if bias is not None:
      params["head"]["bias"] = np.broadcast_to(bias, params["head"]["bias"].shape).copy()
  return params


def _check_finite(losses_by_step: list[tuple[int, Any]], last_saved: int | None, workdir: str):
  """Raises with the first step whose loss is not finite."""
  for step, loss in losses_by_step:
    value = float(loss)
    if not math.isfinite(value):
      where = (f"the last good checkpoint is step {last_saved} in {workdir}/checkpoints"
               if last_saved is not None else "no checkpoint was saved yet")
      raise NonFiniteLossError(
          f"training loss is {value} at step {step}; stopping. {where}. Lower "
          "optim.learning_rate, set optim.grad_clip_norm, or check the labels.")


@dataclasses.dataclass
class Outputs:
  """Where a run's results go: its checkpoints, its summaries, its progress report, the
  throughput they report and its profiler trace."""
  manager: workdirs.TrainCheckpoints
  writer: metric_writers.MetricWriter
  report: periodic_actions.ReportProgress
  meter: throughput.Meter
  profile: throughput.ProfileWindow


def _meter(run: run_lib.Run, mesh) -> throughput.Meter:
  """The throughput meter, with the peak per device that MFU is measured against."""
  kind, count = mesh.devices.flat[0].device_kind, mesh.devices.size
  peak = devices.peak_per_device(run.loop.peak_tflops, kind)
  if peak:
    logging.info("train/mfu: against %g TFLOP/s per device x %d %r devices", peak, count, kind)
  else:
    logging.info("No train/mfu: the peak of a %r device is not known; set train.peak_tflops",
                 kind)
  return throughput.Meter(count, peak)


def train_and_evaluate(run: run_lib.Run, workdir: str) -> dict[str, float]:
  """Trains (or resumes training) `run` in `workdir`; returns the final test metrics.

  Raises `errors.Preempted` after saving a checkpoint when SIGTERM asks the run to stop, and
  `workdir_lock.WorkdirError` when the workdir is another live run's or cannot be written.
  """
  workdir = workdirs.absolute(workdir)
  with workdir_lock.lock(workdir, jax.process_index()):
    return _train_and_evaluate_in(run, workdir)


def new_state(params, tx: optax.GradientTransformation) -> TrainState:
  """Step 0 of training `params` with `tx`."""
  return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))


def abstract_state(run: run_lib.Run, tx: optax.GradientTransformation) -> TrainState:
  """The shapes and dtypes of `run`'s train state (nothing allocated)."""
  params = jax.eval_shape(functools.partial(musiq.init_params, run.model), jax.random.key(0))
  return jax.eval_shape(functools.partial(new_state, tx=tx), params)


def state_shardings(abstract: TrainState, mesh) -> TrainState:
  """Where the train state lives: the step replicated, parameters and optimizer state as
  `sharding.param_shardings` places them (replicated: data parallelism)."""
  return TrainState(sharding.replicated(mesh), sharding.param_shardings(abstract.params, mesh),
                    sharding.param_shardings(abstract.opt_state, mesh))


def jit_train_step(run: run_lib.Run, model: musiq.Musiq, tx: optax.GradientTransformation,
                   schedule: optax.Schedule, state_sharding: TrainState, mesh):
  """The train step as training runs it: (state, global batch, rng) -> (state, metrics), one
  program over `mesh` with the batch split along its data axis, the state donated."""
  return jax.jit(
      functools.partial(train_step, model=model, tx=tx, schedule=schedule,
                        loss_fn=run.loss.batch_loss()),
      in_shardings=(state_sharding, sharding.data_sharding(mesh), sharding.replicated(mesh)),
      out_shardings=(state_sharding, sharding.replicated(mesh)), donate_argnums=0)


def _train_and_evaluate_in(run: run_lib.Run, workdir: str) -> dict[str, float]:
  """`train_and_evaluate` in a workdir this process holds."""
  mesh = sharding.make_mesh()
  is_chief = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
  if is_chief:
    workdirs.write_config(workdir, run.config)

  manager = workdirs.TrainCheckpoints(workdir, run.loop.keep_checkpoints)
  if run.init.checkpoint and manager.latest_step() is None:
    loader.require_pretrained(run.init.checkpoint)  # before preparing any data

  data = training_data.TrainingData(run, mesh)
  total_steps = data.total_steps
  model = musiq.Musiq(run.model)
  schedule = optim.make_schedule(run.optim, total_steps)
  tx = optim.make_optimizer(run.optim, total_steps)
  init_rng, step_rng = jax.random.split(jax.random.key(run.seed))
  make_state = functools.partial(new_state, tx=tx)
  abstract = abstract_state(run, tx)
  state_sharding = state_shardings(abstract, mesh)
  state = manager.restore_latest(abstract, state_sharding)
  if state is None:
    params = _initial_params(run, init_rng, data.builder)
    state = jax.jit(make_state, out_shardings=state_sharding)(params)
  if int(state.step) == 0:
    parameter_overview.log_parameter_overview(state.params)
  else:
    logging.info("Resuming from step %d in %s", int(state.step), workdir)

  jitted = jit_train_step(run, model, tx, schedule, state_sharding, mesh)
  out = Outputs(manager, writer,
                periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer),
                _meter(run, mesh), throughput.ProfileWindow(run.loop.profile_steps, workdir,
                                                            enabled=is_chief))
  flops = throughput.StepFlops(jitted, mesh.devices.size)

  def step_fn(state, batch):
    if out.meter.peak_tflops:  # else no MFU: nothing to count FLOPs for
      out.meter.add_flops(flops(state, batch, step_rng))
    return jitted(state, batch, step_rng)

  try:
    with preemption.PreemptionWatch() as preempted:
      state = _train_loop(run, state, step_fn, data, out, preempted)
  finally:
    out.profile.close()  # a run that failed within the profiled steps
    manager.wait()  # never leave a half-written checkpoint, even when stopping on an error
    writer.flush()
  final = _final_evaluation(run, data, model, out, state, total_steps)
  writer.flush()
  return final


def _train_loop(run: run_lib.Run, state: TrainState, step_fn, data: training_data.TrainingData,
                out: Outputs, preempted: preemption.PreemptionWatch) -> TrainState:
  """Steps state.step + 1 .. total_steps with logging, evaluation and checkpoints; on
  preemption, a checkpoint of the step every host agreed on, then `errors.Preempted`."""
  manager, writer, loop = out.manager, out.writer, run.loop
  start_step, total_steps = int(state.step), data.total_steps
  train_metrics, recent_losses = None, []
  monitor = collapse.Monitor.for_run(run.loss.name, run.model.head,
                                     training_data.train_mos(data.builder, run.dataset),
                                     total_steps)
  evaluator = data.evaluator(run.dataset.eval_split, musiq.Musiq(run.model))
  batches = out.meter.timed(data.train_batches(start_step))
  bar = progress.Progress("train", total_steps, "steps", initial=start_step,
                          enabled=jax.process_index() == 0)
  out.meter.restart()
  for step in range(start_step + 1, total_steps + 1):
    out.profile.before(step)
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      state, metrics = step_fn(state, next(batches))
    out.profile.after(step, state)
    train_metrics = metrics if train_metrics is None else train_metrics.merge(metrics)
    recent_losses.append((step, metrics.loss.total))
    out.report(step)
    bar.update()
    checkpoint_now = step % loop.checkpoint_every_steps == 0 or step == total_steps
    if step % loop.log_every_steps == 0 or checkpoint_now:
      _check_finite(recent_losses, manager.latest_step(), manager.workdir)
      scalars = train_metrics.compute()
      monitor.check_loss(step, scalars["loss"])
      _log_train(step, state, scalars, out, bar)
      train_metrics, recent_losses = None, []
    if evaluator and (step % loop.eval_every_steps == 0 or step == total_steps):
      with out.report.timed("eval"), out.meter.paused(state):
        predictions = evaluator.predictions(state.params)
        results = evaluator.scores(predictions)
      monitor.check_predictions(step, predictions.prediction, predictions.target)
      writer.write_scalars(step, {f"{run.dataset.eval_split}/{k}": v
                                  for k, v in results.items()})
      if run.model.head != "classification" and jax.process_index() == 0:
        _write_scatter(writer, step, run.dataset.eval_split, predictions)
      if run.eval.select == "best":
        with out.meter.paused(state):
          manager.maybe_save_best(step, state.params, results)
    stop = preempted.reached(step)  # asked on every step by every host: how they agree
    if checkpoint_now or stop:
      with out.meter.paused(state):
        manager.save(step, state)
    if stop:
      bar.close()
      raise preemption.preempted(step, manager.workdir)
  out.profile.close(state)
  bar.close()
  return state


def _write_scatter(writer: metric_writers.MetricWriter, step: int, split: str,
                   predictions: evaluate.Predictions) -> None:
  """Prediction against MOS with the logistic fit, as the image `<split>/prediction_vs_mos`."""
  fig = scatter.scatter_figure(predictions.prediction, predictions.target, f"{split}, step {step}",
                               **metrics.scatter_stats(predictions.prediction, predictions.target))
  writer.write_images(step, {f"{split}/prediction_vs_mos": scatter.to_rgb(fig)[None]})


def _log_train(step: int, state: TrainState, scalars: dict[str, Any], out: Outputs,
               bar: progress.Progress) -> None:
  """Writes the interval's training metrics and throughput, and shows them on the progress line.

  Blocks until the device has run the interval's steps first, so that the throughput is over the
  device's time (mst.training.throughput).
  """
  jax.block_until_ready(state)
  scalars = {**scalars, **out.meter.scalars()}
  out.writer.write_scalars(step, {f"train/{k}": v for k, v in scalars.items()})
  bar.notes["loss"] = float(scalars["loss"])
  bar.notes.update(throughput.log_line(scalars))


def _final_evaluation(run: run_lib.Run, data: training_data.TrainingData, model: musiq.Musiq,
                      out: Outputs, state: TrainState, step: int) -> dict[str, float]:
  """Test metrics of the parameters `eval.select` chose (the best validation evaluation's, or
  the last step's), printed and saved as JSON."""
  split = run.dataset.test_split
  evaluator = data.evaluator(split, model)
  if evaluator is None:
    return {}
  params = state.params
  if run.eval.select == "best":
    params = out.manager.restore_best(state.params) or state.params
  results = evaluator(params)
  out.writer.write_scalars(step, {f"{split}/{k}": v for k, v in results.items()})
  if jax.process_index() == 0:
    with tf.io.gfile.GFile(os.path.join(out.manager.workdir, f"{split}_metrics.json"), "w") as f:
      f.write(safe_output.json_dumps(results, indent=2))  # an undefined metric: null
    print(report.metrics_table(split, results), flush=True)
  return results
