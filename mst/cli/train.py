"""`mst-train --config configs/koniq.py --workdir DIR`: train (or resume) a MUSIQ model."""

from __future__ import annotations

import sys
from typing import Sequence

from mst import host_memory
from mst.cli import flags

DESCRIPTION = """\
Train a MUSIQ model, or resume the run in --workdir from its latest checkpoint. Run the same
command on every host of a TPU pod or GPU cluster; each host feeds its own devices. The workdir
receives config.json, TensorBoard summaries, checkpoints, the best validation parameters and, at
the end, the test metrics (<split>_metrics.json, also printed as a table)."""

EPILOG = """\
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
  flags.add_verbosity(parser)
  return flags.parse_with_config(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
  host_memory.keep_freed_memory()  # before JAX and TensorFlow start their threads
  args, config = parse_args(argv)
  flags.setup_logging(args.verbosity)
  # Imported after parsing, so --help is instant, and after the cluster is joined.
  import jax  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  from mst import compilation_cache  # pylint: disable=g-import-not-at-top
  from mst import sharding  # pylint: disable=g-import-not-at-top
  from mst.config import resolve  # pylint: disable=g-import-not-at-top
  from mst.data.datasets import custom  # pylint: disable=g-import-not-at-top
  from mst.training import trainer  # pylint: disable=g-import-not-at-top

  tf.config.set_visible_devices([], "GPU")  # TensorFlow only feeds data: keep it off accelerators
  compilation_cache.enable()
  sharding.initialize_distributed()
  logging.info("Process %d of %d", jax.process_index(), jax.process_count())
  try:  # Bad input stops here with a message that names it, not a traceback.
    resolve.validate(config, num_devices=jax.device_count())  # before anything is written
  except ValueError as e:
    return _fail(e)
  try:
    trainer.train_and_evaluate(config, args.workdir)
  except custom.LabelFileError as e:
    return _fail(e)
  return 0


def _fail(error: Exception) -> int:
  print(f"mst-train: error: {error}", file=sys.stderr)
  return 2
