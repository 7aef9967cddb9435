"""`mst-eval`: evaluate checkpoints (mst workdirs or official .npz files) on a dataset split, or
on several datasets at once (`--datasets`, the cross-dataset table)."""

from __future__ import annotations

import os
import sys
from typing import Sequence

from mst.cli import exits
from mst.cli import flags
from mst.config import defaults

DESCRIPTION = """\
Evaluate checkpoints on a dataset split. Every example is scored exactly once at native resolution
with all patches (no crops), on all devices of all hosts. Writes predictions.csv (one row per
image), metrics.json (SRCC, PLCC, KRCC, RMSE, the logistic-fitted PLCC, with bootstrap 95%
confidence intervals) and report.html (one self-contained page: the metrics, prediction against
MOS with the fitted logistic curve, the errors, the images the model gets most wrong) to the
output directory and prints a table; with --runs, also the mean and standard deviation over the
runs.

Two ways to name the data:
  --config FILE     one dataset, from a config (--config.dataset.data_dir=... overrides it);
  --datasets LIST   several prepared datasets (no config needed), e.g. a checkpoint trained on
                    KonIQ-10k tested on the IQA papers' sets: one table, rows the checkpoints,
                    columns the datasets (cross_dataset.md and cross_dataset.json), and each
                    dataset's predictions.csv and metrics.json in <output dir>/<dataset>_<split>.
                    A split left out is `full` for livec, kadid10k, tid2013, live and csiq, else
                    `test`; spaq is read with its own preprocessing (spaq/shorter_side_512).
The model and its preprocessing always come from the checkpoint."""

EPILOG = """\
examples:
  mst-eval --config configs/koniq.py --checkpoint runs/koniq --split test
  mst-eval --config configs/koniq.py --checkpoint ~/musiq/koniq_ckpt.npz
  mst-eval --config configs/koniq.py --runs runs/koniq_seed0 runs/koniq_seed1 runs/koniq_seed2
  mst-eval --checkpoint ~/musiq/koniq_ckpt.npz --output-dir eval/ \\
      --datasets koniq10k:test,livec:full,spaq:test,kadid10k:full,tid2013:full,live:full,csiq:full
  mst-eval --runs runs/koniq_seed0 runs/koniq_seed1 --datasets livec,kadid10k --output-dir eval/"""

DEFAULTS = defaults.get_config()  # what --data-dir and the cross-dataset settings default to


def make_parser() -> flags.Parser:
  parser = flags.Parser("mst-eval", DESCRIPTION, EPILOG)
  flags.add_config(parser, "the dataset's config file (or --datasets)", required=False)
  which = parser.add_mutually_exclusive_group(required=True)
  which.add_argument("--checkpoint", metavar="PATH",
                     help="an official .npz file or an mst-train workdir")
  which.add_argument("--runs", nargs="+", action="extend", metavar="WORKDIR",
                     help="mst-train workdirs of repeated runs to evaluate and aggregate "
                          "(mean, std)")
  parser.add_argument("--split", default=None,
                      help="with --config: the split to evaluate (default: test)")
  parser.add_argument("--output-dir", metavar="DIR",
                      help="where the results go (default: <workdir>/eval_<split>, or "
                           "./eval_<file name>_<split> for a file, with split 'cross' for "
                           "--datasets; with --runs and --config, each run's default, and "
                           "runs_metrics.json and the runs' report.html here; with --runs and "
                           "--datasets: ./eval_cross, a folder per run inside)")
  flags.add_dtype(parser)
  cross = parser.add_argument_group("cross-dataset evaluation (instead of --config)")
  cross.add_argument("--datasets", metavar="NAME[:SPLIT],...",
                     help="the datasets to score, e.g. koniq10k:test,livec:full,kadid10k")
  cross.add_argument("--data-dir", default=DEFAULTS.dataset.data_dir,
                     help="where the prepared datasets are (default %(default)s)")
  cross.add_argument("--manual-dir", metavar="DIR",
                     help="a folder holding each dataset's original download in a subfolder "
                          "named after it (livec/, kadid10k/, ...): datasets not yet prepared "
                          "in --data-dir are prepared from there")
  cross.add_argument("--batch-size", type=flags.positive_int, default=None,
                     help=f"global evaluation batch (default: {DEFAULTS.eval.batch_size}, "
                          "rounded up to a multiple of the device count)")
  cross.add_argument("--bootstrap-samples", type=int, default=DEFAULTS.eval.bootstrap_samples,
                     help="resamples for the confidence intervals (default %(default)s; 0: none)")
  flags.add_verbosity(parser)
  return parser


def parse_args(argv: Sequence[str] | None):
  """(args, config); config is None with --datasets, which takes no config."""
  parser = make_parser()
  args, extra = parser.parse_known_args(argv)
  if args.datasets is None:
    if not args.config:
      parser.error("name the data: --config FILE (one dataset) or --datasets LIST")
    args, config = flags.parse_with_config(parser, argv)
    args.split = args.split or "test"
    return args, config
  if args.config or extra:
    parser.error("--datasets takes no --config: the datasets come from --datasets and "
                 "--data-dir, the model from the checkpoint")
  if args.split is not None:
    parser.error("--datasets names each dataset's split itself (livec:full); drop --split")
  if args.bootstrap_samples < 0:
    parser.error(f"--bootstrap-samples must be >= 0, got {args.bootstrap_samples}")
  return args, None


def main(argv: Sequence[str] | None = None) -> int:
  return exits.run("mst-eval", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
  args, config = parse_args(argv)
  flags.setup_logging(args.verbosity)
  # Imported after parsing, so --help and usage errors are instant.
  import jax  # pylint: disable=g-import-not-at-top
  from mst.runtime import compilation_cache  # pylint: disable=g-import-not-at-top
  from mst.runtime import sharding  # pylint: disable=g-import-not-at-top

  compilation_cache.enable()
  sharding.initialize_distributed()
  if config is None:
    return _across(args, jax.device_count(), jax.process_index() == 0)
  return _on_split(args, config, jax.device_count(), jax.process_index() == 0)


def _say(line: str) -> None:
  print(line, flush=True)


def _on_split(args, config, num_devices: int, chief: bool) -> int:
  """mst-eval --config: the config's dataset, split --split."""
  from mst.configure import resolve  # pylint: disable=g-import-not-at-top
  from mst.evaluation import report  # pylint: disable=g-import-not-at-top
  from mst.evaluation import runs  # pylint: disable=g-import-not-at-top

  checkpoints = [args.checkpoint] if args.checkpoint else args.runs
  with exits.exit_status(exits.USAGE, OSError):
    output_dirs = {path: (args.checkpoint and args.output_dir)
                   or report.default_output_dir(path, args.split) for path in checkpoints}
  evaluation = resolve.evaluation(config, args.split, num_devices)
  results = runs.on_split(
      checkpoints, evaluation.dataset, args.split, evaluation.eval, output_dirs=output_dirs,
      runs=bool(args.runs), summary_dir=args.runs and args.output_dir, dtype=args.dtype,
      seed=evaluation.seed, say=_say)
  if args.runs and chief:
    _say(f"\n{len(args.runs)} runs, mean ± std:")
    _say(report.aggregate_table(args.split, results.summary))
  return exits.OK


def _across(args, num_devices: int, chief: bool) -> int:
  """mst-eval --datasets: each checkpoint on each dataset, one table."""
  from mst.evaluation import cross_dataset  # pylint: disable=g-import-not-at-top
  from mst.evaluation import report  # pylint: disable=g-import-not-at-top
  from mst.evaluation import runs  # pylint: disable=g-import-not-at-top

  targets = cross_dataset.parse_targets(args.datasets)
  checkpoints = [args.checkpoint] if args.checkpoint else args.runs
  with exits.exit_status(exits.USAGE, OSError):
    root = args.output_dir or (report.default_output_dir(args.checkpoint, "cross")
                               if args.checkpoint else os.path.abspath("eval_cross"))
  results = runs.across(checkpoints, targets,
                        runs.settings(num_devices, args.batch_size, args.bootstrap_samples),
                        output_dir=root, data_dir=args.data_dir, manual_dir=args.manual_dir or "",
                        runs=bool(args.runs), dtype=args.dtype, say=_say)
  if chief:
    _say("\n" + cross_dataset.table(results, [target.label for target in targets]))
    _say(f"\nwritten to {root}: cross_dataset.md, cross_dataset.json, report.html")
  return exits.OK


if __name__ == "__main__":
  sys.exit(main())
