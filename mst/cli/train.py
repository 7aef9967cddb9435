"""`mst-train --config configs/koniq.py --workdir DIR`: train (or resume) a MUSIQ model."""

from __future__ import annotations

import sys
from typing import Sequence

from mst.runtime import host_memory
from mst.cli import exits
from mst.cli import flags

DESCRIPTION = """\
Train a MUSIQ model, or resume the run in --workdir from its latest checkpoint. Run the same
command on every host of a TPU pod or GPU cluster; each host feeds its own devices. The workdir
receives config.json, TensorBoard summaries, checkpoints, the best validation parameters and, at
the end, the test metrics (<split>_metrics.json, also printed as a table).

A workdir belongs to one run at a time (mst-train-<process>.lock names the owner); a lock left by
a killed run is taken over. On SIGTERM (preemption) every host saves a checkpoint at the same
step and the run exits with status 75; the same command resumes it."""

EPILOG = """\
exit status:
  0   finished: trained, evaluated, test metrics written
  1   failed: the message says why (workdir in use or unwritable, a checkpoint that cannot be
      saved or restored, a NaN loss, ...); fix what it names, then rerun to resume
  2   bad command line or config
  75  preempted (SIGTERM): a checkpoint was saved; run the same command again to resume

examples:
  mst-train --config configs/demo.py --workdir /tmp/mst_demo
  mst-train --config configs/koniq.py:runlocal --workdir /tmp/koniq_cpu
  mst-train --config configs/koniq.py --workdir runs/koniq \\
      --config.dataset.manual_dir ~/downloads/koniq \\
      --config.init.checkpoint imagenet_pretrain.npz"""


def parse_args(argv: Sequence[str] | None):
  parser = flags.Parser("mst-train", DESCRIPTION, EPILOG)
  flags.add_config(parser, "the training config file")
  parser.add_argument("--workdir", required=True, metavar="DIR",
                      help="where checkpoints, summaries and config.json go (a local path or "
                           "gs://...); started again with the same workdir, a run resumes")
  # A run's log is its record (resumed from, preempted at, evaluated): mst's own lines by default;
  # the libraries' INFO lines stay hidden.
  flags.add_verbosity(parser, default="info")
  return flags.parse_with_config(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
  return exits.run("mst-train", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
  host_memory.keep_freed_memory()  # before JAX and TensorFlow start their threads
  args, config = parse_args(argv)
  flags.setup_logging(args.verbosity)
  # Imported after parsing, so --help is instant, and after the cluster is joined.
  import jax  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  from mst.runtime import compilation_cache  # pylint: disable=g-import-not-at-top
  from mst.runtime import sharding  # pylint: disable=g-import-not-at-top
  from mst.configure import resolve  # pylint: disable=g-import-not-at-top
  from mst.training import trainer  # pylint: disable=g-import-not-at-top

  tf.config.set_visible_devices([], "GPU")  # TensorFlow only feeds data: keep it off accelerators
  compilation_cache.enable()
  sharding.initialize_distributed()
  logging.info("Process %d of %d", jax.process_index(), jax.process_count())
  # Bad input stops here, before anything is written, with a message that names it.
  with exits.exit_status(exits.USAGE, ValueError):
    run = resolve.run(config, num_devices=jax.device_count())
  # mst's own errors (a label file, a missing or newer checkpoint, a preemption, a damaged save)
  # end the script with their kind's status in exits.run.
  trainer.train_and_evaluate(run, args.workdir)
  return exits.OK


if __name__ == "__main__":
  sys.exit(main())
