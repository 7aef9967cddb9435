"""`mst-train` with a fault injected at a named moment:
`python tests/support/fault_injection.py FLAGS...`.

The fault and multi-host tests run this as a subprocess (its path is support.runs.FAULT_INJECTION).
`MST_FAULT=<what>@<step>` (process `MST_FAULT_PROCESS`, default 0) picks the fault:

  sigterm@S    SIGTERM to this process on step S (a real signal, as a TPU VM or Kubernetes sends)
  writing@S    SIGKILL while step S's checkpoint is being written: its arrays are in the
               temporary folder, its tree metadata not yet
  finalize@S   SIGKILL while step S's checkpoint is finalised: its commit file is written, the
               temporary folder not yet renamed

The hooks wrap orbax's own functions, so each kill lands at the same point of the save every time.
"""

import os
import signal
import sys

import jax
from orbax.checkpoint._src.handlers import base_pytree_checkpoint_handler
from orbax.checkpoint._src.path import async_path

from mst.checkpoints import workdirs
from mst.cli import train
from mst.training import preemption

WHAT, _, STEP = os.environ.get("MST_FAULT", "none@0").partition("@")
STEP = int(STEP)


def _mine() -> bool:
  return jax.process_index() == int(os.environ.get("MST_FAULT_PROCESS", "0"))


def _die(where: str):
  print(f"fault injection: SIGKILL {where}", flush=True)
  os.kill(os.getpid(), signal.SIGKILL)


def _step_of(path) -> int | None:
  """The step of a checkpoint folder `<step>` or `<step>.orbax-checkpoint-tmp-...` under
  checkpoints/ (None for the best/ folder and anything else)."""
  path = str(path)
  if os.path.basename(os.path.dirname(path)) != "checkpoints":
    return None
  name = os.path.basename(path).split(".")[0]
  return int(name) if name.isdigit() else None


def _install():
  if WHAT == "sigterm":
    reached = preemption.PreemptionWatch.reached

    def reached_after_sigterm(self, step):
      if step == STEP and _mine():
        os.kill(os.getpid(), signal.SIGTERM)
      return reached(self, step)

    preemption.PreemptionWatch.reached = reached_after_sigterm

  elif WHAT == "writing":
    handler = base_pytree_checkpoint_handler.BasePyTreeCheckpointHandler
    write_metadata = handler._write_metadata_after_commits  # pylint: disable=protected-access

    save, saving = workdirs.TrainCheckpoints.save, []

    def save_noting_the_step(self, step, state):
      saving.append(step)
      return save(self, step, state)

    async def die_before_metadata(self, *args, **kwargs):
      if saving and saving[-1] == STEP:  # only checkpoints/ saves (no best/ without evaluation)
        _die(f"while writing step {STEP}")
      return await write_metadata(self, *args, **kwargs)

    workdirs.TrainCheckpoints.save = save_noting_the_step
    handler._write_metadata_after_commits = die_before_metadata  # pylint: disable=protected-access

  elif WHAT == "finalize":
    rename = async_path.rename

    async def die_before_rename(src, dst):
      if _step_of(dst) == STEP:
        _die(f"while finalising step {STEP}")
      return await rename(src, dst)

    async_path.rename = die_before_rename



if __name__ == "__main__":
  _install()
  sys.exit(train.main(sys.argv[1:]))
