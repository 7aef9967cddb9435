"""`mst-train --config configs/koniq.py --workdir DIR`: train (or resume) a MUSIQ model.

Run the same command on every host of a TPU pod or GPU cluster; each host feeds its own devices.
Config values can be overridden on the command line, e.g. `--config.model.grid_size=15` or
`--config=configs/koniq.py:runlocal` for the small CPU variant.
"""

import logging as python_logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import tensorflow as tf

from mst import sharding

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Training config file (configs/*.py), optionally with ':variant'.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, summaries and config.json go; a run "
                    "started again with the same workdir resumes from its latest checkpoint.")
flags.mark_flags_as_required(["config", "workdir"])


# Libraries whose INFO lines drown the run's own (orbax logs every checkpoint file it touches).
_CHATTY = ("/orbax/", "/tensorflow_datasets/", "/etils/", "/jax/_src/")


def _quiet_libraries(record) -> bool:
  return (record.levelno >= python_logging.WARNING
          or not any(part in record.pathname for part in _CHATTY))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # ABSLHandler hands records straight to its python_handler, so the filter goes there.
  logging.get_absl_handler().python_handler.addFilter(_quiet_libraries)
  # TensorFlow only feeds data: keep it off accelerators and their memory.
  tf.config.set_visible_devices([], "GPU")
  sharding.initialize_distributed()
  from mst import train  # pylint: disable=g-import-not-at-top  # after distributed init
  logging.info("Process %d of %d", jax.process_index(), jax.process_count())
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
