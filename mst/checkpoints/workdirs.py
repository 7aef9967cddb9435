"""A training workdir on disk: orbax checkpoints of the train state, the best parameters and the
config.

    <workdir>/config.json        the run's config (what `mst-predict --checkpoint <workdir>` reads)
    <workdir>/checkpoints/<step> the latest `keep` train states (params, optimizer state, step)
    <workdir>/best/<step>        the parameters with the best validation metric so far

Saving is asynchronous (training goes on while files are written); `wait` before exiting, or
only a `*.orbax-checkpoint-tmp` folder would remain.
"""

import json
import os
from typing import Any

from absl import logging
import jax
import ml_collections
import orbax.checkpoint as ocp
import tensorflow as tf

CONFIG_FILE = "config.json"
BEST_METRICS = {"srcc": "max", "accuracy": "max"}


def absolute(workdir: str) -> str:
  """A local path made absolute; a URL (gs://bucket/run) as it is. Workdir files go through
  tf.io.gfile and orbax, which both write to cloud storage."""
  return workdir if "://" in workdir else os.path.abspath(os.path.expanduser(workdir))


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  tf.io.gfile.makedirs(workdir)
  with tf.io.gfile.GFile(os.path.join(workdir, CONFIG_FILE), "w") as f:
    f.write(config.to_json_best_effort(indent=2))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{workdir}: not an mst training workdir (no {CONFIG_FILE})")
  with tf.io.gfile.GFile(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def _best_metric(results: dict[str, float]) -> tuple[str, float] | None:
  for name in BEST_METRICS:
    if name in results:
      return name, float(results[name])
  return None


class TrainCheckpoints:
  """The periodic train-state checkpoints and the best parameters of one workdir."""

  def __init__(self, workdir: str, keep: int):
    self.workdir = workdir
    # Several processes: save synchronously. orbax 0.12.8's asynchronous multi-process save can
    # finalise before every process has written its array metadata ("ArrayMetadata Store contains
    # metadata from just one process"), seen once in four 2-process CPU runs.
    asynchronous = jax.process_count() == 1
    self.latest = ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=asynchronous))
    self.best = ocp.CheckpointManager(
        os.path.join(workdir, "best"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda m: m["value"], best_mode="max",
            enable_async_checkpointing=asynchronous))

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state: Any) -> None:
    self.latest.save(step, args=ocp.args.StandardSave(state))

  def restore_latest(self, abstract_state: Any, shardings: Any) -> Any | None:
    """The latest saved train state placed with `shardings`, or None in a fresh workdir."""
    step = self.latest.latest_step()
    if step is None:
      return None
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, shardings)
    return self.latest.restore(step, args=ocp.args.StandardRestore(target))

  def maybe_save_best(self, step: int, params: Any, results: dict[str, float]) -> bool:
    """Saves `params` if their validation metric beats every earlier evaluation's."""
    metric = _best_metric(results)
    if metric is None:
      return False
    name, value = metric
    best_step = self.best.best_step()
    if best_step is not None:
      previous = self.best.metrics(best_step)
      if previous and previous["value"] >= value:
        return False
    logging.info("New best %s %.4f at step %d", name, value, step)
    self.best.save(step, args=ocp.args.StandardSave(params),
                   metrics={"value": value, "name": name}, force=True)
    return True

  def restore_best(self, abstract_params: Any) -> Any | None:
    """The best parameters so far (placed like `abstract_params`), or None if there are none."""
    self.best.wait_until_finished()
    step = self.best.best_step()
    if step is None:
      return None
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)),
        abstract_params)
    return self.best.restore(step, args=ocp.args.StandardRestore(target))

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def load_params(workdir: str) -> tuple[Any, ml_collections.ConfigDict]:
  """(parameters, config) of a workdir, for prediction: the best parameters if there are any,
  else those of the latest train state. Parameters come back as host numpy arrays."""
  workdir = absolute(workdir)
  config = read_config(workdir)
  best = ocp.CheckpointManager(os.path.join(workdir, "best"),
                               options=ocp.CheckpointManagerOptions(read_only=True))
  step = best.latest_step()
  if step is not None:
    params = best.restore(step, args=ocp.args.StandardRestore())
  else:
    latest = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                                   options=ocp.CheckpointManagerOptions(read_only=True))
    step = latest.latest_step()
    if step is None:
      raise FileNotFoundError(f"{workdir}: no checkpoint saved yet")
    params = latest.restore(step, args=ocp.args.StandardRestore())["params"]
  return jax.device_get(params), config
