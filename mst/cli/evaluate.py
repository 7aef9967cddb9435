"""`mst-eval`: evaluate a checkpoint (an mst workdir or an official .npz) on a dataset split."""

from __future__ import annotations

import sys
from typing import Sequence

from mst.cli import exits
from mst.cli import flags
from mst.models import musiq

DESCRIPTION = """\
Evaluate checkpoints on a dataset split. Every example is scored exactly once at native resolution
with all patches (no crops), on all devices of all hosts. Writes predictions.csv (one row per
image) and metrics.json (SRCC, PLCC, KRCC, RMSE, the logistic-fitted PLCC, with bootstrap 95%
confidence intervals) to the output directory and prints a table; with --runs, also the mean and
standard deviation over the runs. The dataset comes from the config (--config.dataset.data_dir=...
overrides it); the model and its preprocessing come from the checkpoint."""

EPILOG = """\
examples:
  mst-eval --config configs/koniq.py --checkpoint runs/koniq --split test
  mst-eval --config configs/koniq.py --checkpoint ~/musiq/koniq_ckpt.npz
  mst-eval --config configs/koniq.py --runs runs/koniq_seed0 runs/koniq_seed1 runs/koniq_seed2"""


def parse_args(argv: Sequence[str] | None):
  parser = flags.Parser("mst-eval", DESCRIPTION, EPILOG)
  flags.add_config(parser, "the dataset's config file")
  which = parser.add_mutually_exclusive_group(required=True)
  which.add_argument("--checkpoint", metavar="PATH",
                     help="an official .npz file or an mst-train workdir")
  which.add_argument("--runs", nargs="+", action="extend", metavar="WORKDIR",
                     help="mst-train workdirs of repeated runs to evaluate and aggregate "
                          "(mean, std)")
  parser.add_argument("--split", default="test", help="the split to evaluate (default: test)")
  parser.add_argument("--output-dir", metavar="DIR",
                      help="where predictions.csv and metrics.json go (default: "
                           "<workdir>/eval_<split>, or ./eval_<file name>_<split> for a file; "
                           "with --runs, each run's default, and runs_metrics.json here)")
  parser.add_argument("--dtype", choices=tuple(musiq.DTYPES), default="float32",
                      help="compute dtype (default float32)")
  flags.add_verbosity(parser)
  return flags.parse_with_config(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
  return exits.run("mst-eval", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
  args, config = parse_args(argv)
  flags.setup_logging(args.verbosity)
  # Imported after parsing, so --help and usage errors are instant.
  import jax  # pylint: disable=g-import-not-at-top
  from mst.runtime import compilation_cache  # pylint: disable=g-import-not-at-top
  from mst.runtime import sharding  # pylint: disable=g-import-not-at-top
  from mst.checkpoints import loader  # pylint: disable=g-import-not-at-top
  from mst.checkpoints import paths as checkpoint_paths  # pylint: disable=g-import-not-at-top
  from mst.checkpoints import workdir_lock  # pylint: disable=g-import-not-at-top
  from mst.config import resolve  # pylint: disable=g-import-not-at-top
  from mst.data import source  # pylint: disable=g-import-not-at-top
  from mst.data.datasets import custom  # pylint: disable=g-import-not-at-top
  from mst.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  from mst.evaluation import report  # pylint: disable=g-import-not-at-top

  compilation_cache.enable()
  sharding.initialize_distributed()
  checkpoints = [args.checkpoint] if args.checkpoint else args.runs
  # A URL that cannot be checked (no permission, an unknown scheme) is named here.
  with exits.exit_status(exits.USAGE, OSError):
    found = {path: checkpoint_paths.exists(path) for path in checkpoints}
    output_dirs = {path: (args.checkpoint and args.output_dir)
                         or report.default_output_dir(path, args.split) for path in checkpoints}
  outputs = [output_dirs[path] for path in checkpoints if found[path]]
  outputs += [args.output_dir] if args.runs and args.output_dir else []
  with exits.exit_status(exits.FAILED, workdir_lock.WorkdirError):  # now, not after an hour
    for output_dir in outputs:
      workdir_lock.check_writable(output_dir, "--output-dir")
  # Bad input stops here with a message that names it, not a traceback.
  with exits.exit_status(exits.USAGE, resolve.ConfigError, custom.LabelFileError):
    evaluation = resolve.evaluation(config, args.split, jax.device_count())
    if missing := [path for path in checkpoints if not found[path]]:
      raise resolve.ConfigError(f"no such checkpoint: {', '.join(missing)}")
    builder = source.build_dataset(evaluation.dataset)
  mesh = sharding.make_mesh()
  chief = jax.process_index() == 0
  per_run = []
  for path in checkpoints:
    with exits.exit_status(exits.USAGE, loader.CheckpointError):  # damaged, or not MUSIQ's
      scores, columns = evaluate.evaluate_checkpoint(
          evaluation.eval, path, args.split, builder, mesh, dtype=args.dtype,
          seed=evaluation.seed)
    output_dir = output_dirs[path]
    if chief:
      report.write_outputs(output_dir, scores, columns)
      print(f"{path}: {len(columns['name'])} images of {args.split}, written to {output_dir}")
      print(report.metrics_table(args.split, scores), flush=True)
    per_run.append(scores)
  if args.runs and chief:
    summary = report.aggregate(per_run)
    print(f"\n{len(args.runs)} runs, mean ± std:")
    print(report.aggregate_table(args.split, summary), flush=True)
    if args.output_dir:
      report.write_runs_summary(args.output_dir, args.runs, summary)
  return exits.OK


if __name__ == "__main__":
  sys.exit(main())
