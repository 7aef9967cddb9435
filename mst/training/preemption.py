"""Preemption: a SIGTERM (how TPU VMs, Kubernetes and SLURM announce that a job will be stopped)
makes every host save a checkpoint at the same step and stop, so that rerunning the same command
resumes exactly.

With several processes, JAX's distributed runtime traps SIGTERM itself (its preemption service,
on unless `jax_enable_preemption_service` is off) and agrees with the other hosts on a step to
stop at: `multihost_utils.reached_preemption_sync_point(step)`, the same sync point orbax's
`CheckpointManager.reached_preemption` reads, becomes true on that step on every host. A single
process has no such service; a Python SIGTERM handler notes the signal and the next step is the
one to stop at.
"""

from __future__ import annotations

import signal

from absl import logging
import jax
from jax.experimental import multihost_utils

from mst import errors

def preempted(step: int, workdir: str) -> errors.Preempted:
  """The error a run raises once every host saved the checkpoint of `step` and stopped: mst-train
  exits 75 (EX_TEMPFAIL, "retry"), so a launcher can tell "rerun me" from a failure (1)."""
  return errors.Preempted(
      f"preempted: saved the checkpoint of step {step} in {workdir}/checkpoints and stopped. "
      "Run the same command again to resume from it.")


class PreemptionWatch:
  """While entered, `reached(step)` says whether every host should save at `step` and stop."""

  def __init__(self):
    self._multihost = jax.process_count() > 1
    self._signalled = False
    self._previous_handler = None

  def _on_sigterm(self, signum, frame):  # pylint: disable=unused-argument
    logging.warning("Received SIGTERM: saving a checkpoint at the next step, then stopping")
    self._signalled = True

  def __enter__(self) -> "PreemptionWatch":
    # Several processes: JAX's own handler must stay in place (replacing it would keep the other
    # hosts from hearing of the preemption).
    if not self._multihost:
      try:
        self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
      except ValueError:
        logging.warning("Not on the main thread: SIGTERM will not be turned into a checkpoint")
    return self

  def __exit__(self, *exc) -> None:
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)
      self._previous_handler = None

  def reached(self, step: int) -> bool:
    """Whether to save at `step` and stop; with several processes, call it on every step on
    every host (it is a point of agreement between them)."""
    if not self._multihost:
      return self._signalled
    try:
      return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # JAX's preemption service is off: SIGTERM then just ends the process
      return False
