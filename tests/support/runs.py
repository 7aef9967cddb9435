"""What the end-to-end tests share about a run: the environment of mst-train subprocesses, the
fault-injection script, a free port for a coordinator, and reading what a run wrote (its logged
scalars, its final params)."""

import glob
import os
import pathlib
import socket

import flax.traverse_util

from mst.checkpoints import workdirs

# Subprocesses inherit the tests' JAX_DISABLE_MOST_OPTIMIZATIONS=1 (conftest.py): XLA skips most
# of its passes, a third less time per mst-train run. Those of a parity test, which compares with
# a reference's numbers, run the optimised programs users run, with this environment.
OPTIMIZED_ENV = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "0"}

# `python FAULT_INJECTION FLAGS...`: mst-train with the fault MST_FAULT names (see the script).
FAULT_INJECTION = str(pathlib.Path(__file__).with_name("fault_injection.py"))


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def logged_scalars(workdir, tag="train/loss") -> dict[int, float]:
  """step -> the value of `tag` in a workdir's TensorBoard event files (clu's writers)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only the tests that train)
  values = {}
  for path in glob.glob(os.path.join(str(workdir), "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return values


def workdir_params(workdir) -> dict:
  """The params a workdir scores with (its best checkpoint, else its latest), flattened:
  {"a/b": array}."""
  return flax.traverse_util.flatten_dict(workdirs.load_params(str(workdir))[0], sep="/")
