"""A training workdir on disk: orbax checkpoints of the train state, the best parameters and the
config.

    <workdir>/config.json        the run's config (what `mst-predict --checkpoint <workdir>` reads)
    <workdir>/checkpoints/<step> the latest `keep` train states (params, optimizer state, step)
    <workdir>/best/<step>        the parameters with the best validation metric so far

Saving is asynchronous (training goes on while files are written); `wait` before exiting, or
only a `*.orbax-checkpoint-tmp` folder would remain. A step's folder gets its final name (an atomic
rename) only once every file is written, so a run killed at any moment leaves the earlier steps
whole, and orbax ignores the unfinished folder. A step whose files were damaged later (truncated,
deleted) fails to restore: the run warns, moves it to `<workdir>/damaged_checkpoints/` and resumes
from the newest step that restores.
"""

from collections.abc import Mapping
import contextlib
import json
import os
import time
from typing import Any

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from mst import errors
from mst.config import schema

CONFIG_FILE = "config.json"
DAMAGED_DIR = "damaged_checkpoints"
BEST_METRICS = {"srcc": "max", "accuracy": "max"}


def absolute(workdir: str) -> str:
  """A local path made absolute; a URL (gs://bucket/run) as it is. Workdir files go through
  etils' epath and orbax, which both write to cloud storage (epath through TensorFlow's file
  systems where TensorFlow is installed; a host without it still reads local workdirs)."""
  return workdir if "://" in workdir else os.path.abspath(os.path.expanduser(workdir))


def write_config(workdir: str, config: ml_collections.ConfigDict | Mapping[str, Any]) -> None:
  """Writes `config` with its schema and mst versions (`schema.stamp`)."""
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  (epath.Path(workdir) / CONFIG_FILE).write_text(json.dumps(schema.stamp(config), indent=2))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The workdir's config in today's keys, whichever mst wrote it (`schema.upgrade`); raises
  `schema.NewerWorkdirError` for one written by a newer mst."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not epath.Path(path).exists():
    raise FileNotFoundError(f"{workdir}: not an mst training workdir (no {CONFIG_FILE})")
  return schema.upgrade(json.loads(epath.Path(path).read_text()), path)


class WorkdirCheckpointError(errors.RunFailed):
  """A checkpoint could not be saved, or no saved one can be restored; the message says what to
  do."""


# Files every finished step has; orbax restores some steps without them, but not every reader can
# (a restore without a target needs the tree's metadata).
STEP_METADATA = ("_CHECKPOINT_METADATA", "default/_METADATA")


def _missing_metadata(step_dir: str) -> FileNotFoundError | None:
  missing = [name for name in STEP_METADATA if not (epath.Path(step_dir) / name).exists()]
  return FileNotFoundError(f"missing {', '.join(missing)}") if missing else None


def _on_every_host(ok: bool) -> bool:
  """Whether `ok` holds on every process (each may read different files of a checkpoint)."""
  if jax.process_count() == 1:
    return ok
  return bool(multihost_utils.process_allgather(np.array(ok)).all())


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
    """Starts saving `state` as `step`; an earlier save's failure (a full disk) surfaces here."""
    with _save_errors(self, f"the checkpoint of step {step}"):
      self.latest.save(step, args=ocp.args.StandardSave(state))

  def restore_latest(self, abstract_state: Any, shardings: Any) -> Any | None:
    """The newest train state that restores, placed with `shardings`; None in a fresh workdir.

    A newer step that fails to restore is damaged: it is named in a warning and moved aside, so
    the run resumes from the step before it and later saves that step afresh. If no step restores
    the run stops rather than starting again from step 0.
    """
    steps = sorted(self.latest.all_steps(), reverse=True)
    if not steps:
      return None
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, shardings)
    failures = []
    for step in steps:
      state, error = _try_restore(self.latest, step, ocp.args.StandardRestore(target))
      if _on_every_host(error is None):
        self._set_aside([s for s, _ in failures])
        return state
      logging.warning("Checkpoint step %d in %s is damaged and cannot be restored (%s: %s)",
                      step, self.latest.directory, type(error).__name__, error)
      failures.append((step, error))
    damage = "; ".join(f"step {s}: {type(e).__name__}: {str(e)[:300]}" for s, e in failures)
    raise WorkdirCheckpointError(
        f"no checkpoint in {self.latest.directory} can be restored ({damage}). If the config "
        f"changed since they were saved, run with the original one ({self.workdir}/{CONFIG_FILE}); "
        f"to start over from step 0, delete {self.latest.directory} or use a new --workdir.")

  def _set_aside(self, steps: list[int]) -> None:
    """Moves damaged steps to <workdir>/damaged_checkpoints/, out of orbax's sight."""
    if not steps:
      return
    if jax.process_index() == 0:
      aside = os.path.join(self.workdir, DAMAGED_DIR)
      epath.Path(aside).mkdir(parents=True, exist_ok=True)
      for step in steps:
        destination = os.path.join(aside, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        epath.Path(self.latest.directory, str(step)).rename(destination)
        logging.warning("Moved the damaged checkpoint step %d to %s; resuming from an earlier "
                        "step", step, destination)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("mst_damaged_checkpoints_moved")
    self.latest.reload()

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
    with _save_errors(self, f"the best parameters of step {step}"):
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
    """Blocks until every started save is on disk; a failed one raises `WorkdirCheckpointError`."""
    with _save_errors(self, "a checkpoint"):
      self.latest.wait_until_finished()
      self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


@contextlib.contextmanager
def _save_errors(manager: TrainCheckpoints, what: str):
  """Turns a failed save (a full disk, a lost permission) into a `WorkdirCheckpointError` that says
  the earlier checkpoints are whole and how to go on."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except  (whatever orbax's writers raise)
    directory = str(manager.latest.directory)
    complete = sorted(int(child.name) for child in epath.Path(directory).iterdir()
                      if child.name.isdigit())
    kept = (f"the checkpoints saved before (steps {', '.join(map(str, complete))}) are intact"
            if complete else "no earlier checkpoint exists")
    raise WorkdirCheckpointError(
        f"saving {what} in {directory} failed: {type(e).__name__}: {e}. Stopping; {kept}. Free "
        "space or fix the path, then run the same command again to resume.") from e


def load_params(workdir: str) -> tuple[Any, ml_collections.ConfigDict]:
  """(parameters, config) of a workdir, for prediction: the best parameters if there are any,
  else those of the latest train state. Parameters come back as host numpy arrays.

  Raises:
    FileNotFoundError: not a workdir, or nothing saved yet.
    WorkdirCheckpointError: the checkpoint to score is damaged (named, with what to do).
  """
  workdir = absolute(workdir)
  config = read_config(workdir)
  # Saved on other devices (a pod, another device count): place the arrays on one local device.
  restore = ocp.args.StandardRestore(
      fallback_sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
  best = ocp.CheckpointManager(os.path.join(workdir, "best"),
                               options=ocp.CheckpointManagerOptions(read_only=True))
  step = best.latest_step()
  if step is not None:
    params = _restore_to_score(best, step, restore, "the best parameters",
                               "move that folder aside to score the latest train state instead")
  else:
    latest = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                                   options=ocp.CheckpointManagerOptions(read_only=True))
    step = latest.latest_step()
    if step is None:
      raise FileNotFoundError(f"{workdir}: no checkpoint saved yet")
    params = _restore_to_score(latest, step, restore, "the latest train state",
                               "move that folder aside to score the step before it")["params"]
  return jax.device_get(params), config


def _restore_to_score(manager: ocp.CheckpointManager, step: int, restore: Any, what: str,
                      fix: str) -> Any:
  """`manager`'s `step`, or a `WorkdirCheckpointError` naming its folder and `fix`."""
  state, error = _try_restore(manager, step, restore)
  if error is None:
    return state
  folder = os.path.join(str(manager.directory), str(step))
  raise WorkdirCheckpointError(f"{what} in {folder} cannot be restored, the checkpoint is damaged "
                               f"({type(error).__name__}: {str(error)[:300]}); {fix}")


def _try_restore(manager: ocp.CheckpointManager, step: int, args: Any
                 ) -> tuple[Any, Exception | None]:
  """(`manager`'s `step`, None), or (None, why it cannot be restored: missing metadata, or what
  orbax raised)."""
  error = _missing_metadata(os.path.join(str(manager.directory), str(step)))
  if error is not None:
    return None, error
  try:
    return manager.restore(step, args=args), None
  except Exception as e:  # pylint: disable=broad-except  (orbax, tensorstore raise many kinds)
    return None, e
