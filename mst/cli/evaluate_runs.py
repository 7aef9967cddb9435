"""What `mst-eval` does once its flags are parsed: score checkpoints on one dataset of a config
(`one_dataset`) or on several prepared datasets (`cross_dataset`), and write the results."""

from __future__ import annotations

import argparse
from collections.abc import Callable
import functools
import os

import jax
import ml_collections

from mst import errors
from mst.checkpoints import loader
from mst.checkpoints import paths as checkpoint_paths
from mst.checkpoints import workdir_lock
from mst.cli import exits
from mst.config import defaults
from mst.configure import resolve
from mst.data import source
from mst.evaluation import cross_dataset
from mst.evaluation import evaluate
from mst.evaluation import html_report
from mst.evaluation import report
from mst.runtime import sharding

def one_dataset(args: argparse.Namespace, config: ml_collections.ConfigDict) -> int:
  """`mst-eval --config`: each checkpoint on the config's dataset, split `args.split`."""
  checkpoints = [args.checkpoint] if args.checkpoint else args.runs
  found = _found(checkpoints)
  with exits.exit_status(exits.USAGE, OSError):
    output_dirs = {path: (args.checkpoint and args.output_dir)
                         or report.default_output_dir(path, args.split) for path in checkpoints}
  outputs = [output_dirs[path] for path in checkpoints if found[path]]
  _check_writable(outputs + ([args.output_dir] if args.runs and args.output_dir else []))
  # Bad input stops here with a message that names it, not a traceback.
  evaluation = resolve.evaluation(config, args.split, jax.device_count())
  _require_found(found)
  builder = source.build_dataset(evaluation.dataset)
  mesh = sharding.make_mesh()
  chief = jax.process_index() == 0
  label = f"{evaluation.dataset.name}:{args.split}"
  per_run, runs = [], []
  for path in checkpoints:
    scores, columns = evaluate.evaluate_checkpoint(
        evaluation.eval, path, args.split, builder, mesh, dtype=args.dtype, seed=evaluation.seed)
    per_run.append(scores)
    if not chief:
      continue
    output_dir = output_dirs[path]
    result = _dataset_result(label, scores, columns, builder, args.split,
                             functools.partial(html_report.visualizer, path))
    runs.append(html_report.RunResult(path, [result]))
    report.write_outputs(output_dir, scores, columns)
    html_report.write(os.path.join(output_dir, "report.html"), runs[-1:])
    print(f"{path}: {len(columns['name'])} images of {args.split}, written to {output_dir}")
    print(report.metrics_table(args.split, scores), flush=True)
  if args.runs and chief:
    summary = report.aggregate(per_run)
    print(f"\n{len(args.runs)} runs, mean ± std:")
    print(report.aggregate_table(args.split, summary), flush=True)
    if args.output_dir:
      report.write_runs_summary(args.output_dir, args.runs, summary)
      html_report.write(os.path.join(args.output_dir, "report.html"), runs)
  return exits.OK


def several_datasets(args: argparse.Namespace) -> int:
  """`mst-eval --datasets`: each checkpoint on each dataset, one table."""
  targets = cross_dataset.parse_targets(args.datasets)
  checkpoints = [args.checkpoint] if args.checkpoint else args.runs
  found = _found(checkpoints)
  with exits.exit_status(exits.USAGE, OSError):
    root = args.output_dir or (report.default_output_dir(args.checkpoint, "cross")
                               if args.checkpoint else os.path.abspath("eval_cross"))
  run_dirs = dict(zip(checkpoints, _run_folders(root, checkpoints, bool(args.runs))))
  _check_writable([root])
  settings = _settings(args, jax.device_count())
  with exits.exit_status(exits.USAGE, FileNotFoundError):
    _require_found(found)
    builders = {target.label: _build(target, args) for target in targets}
  mesh = sharding.make_mesh()
  chief = jax.process_index() == 0
  labels = [target.label for target in targets]
  results, counts, runs = {}, {}, []
  # One rollout model per checkpoint, made when its first dataset's worst images need it.
  visualizer = functools.cache(html_report.visualizer)
  for path in checkpoints:
    loaded = loader.load_for_inference(path, dtype=args.dtype)
    results[path], datasets = {}, []
    for target in targets:
      builder = builders[target.label]
      scores, columns = evaluate.evaluate_loaded(settings, loaded, target.split, builder, mesh,
                                                 name=path, warn_scale=False)
      results[path][target.label] = scores
      counts[target.label] = len(columns["name"])
      if chief:
        output_dir = os.path.join(run_dirs[path], target.folder)
        report.write_outputs(output_dir, scores, columns)
        datasets.append(_dataset_result(target.label, scores, columns, builder, target.split,
                                        functools.partial(visualizer, path)))
        print(f"{path} on {target.label}: {counts[target.label]} images, SRCC "
              f"{scores.get('srcc', float('nan')):.4f}, written to {output_dir}", flush=True)
    runs.append(html_report.RunResult(path, datasets))
  if chief:
    cross_dataset.write_table(root, results, labels, counts)
    html_report.write(os.path.join(root, "report.html"), runs, title="mst-eval: cross-dataset")
    print("\n" + cross_dataset.table(results, labels), flush=True)
    print(f"\nwritten to {root}: cross_dataset.md, cross_dataset.json, report.html")
  return exits.OK


def _found(checkpoints: list[str]) -> dict[str, bool]:
  # A URL that cannot be checked (no permission, an unknown scheme) is named here.
  with exits.exit_status(exits.USAGE, OSError):
    return {path: checkpoint_paths.exists(path) for path in checkpoints}


def _require_found(found: dict[str, bool]) -> None:
  if missing := [path for path, there in found.items() if not there]:
    raise resolve.ConfigError(f"no such checkpoint: {', '.join(missing)}")


def _check_writable(output_dirs: list[str]) -> None:
  for output_dir in output_dirs:  # now, not after an hour
    workdir_lock.check_writable(output_dir, "--output-dir")


def _run_folders(root: str, checkpoints: list[str], several: bool) -> list[str]:
  """Where each checkpoint's per-dataset folders go: `root` itself for one checkpoint; for
  --runs, `root/<workdir name>` (`root/<i>_<name>` where names repeat)."""
  if not several:
    return [root] * len(checkpoints)
  names = [os.path.basename(os.path.normpath(path)) or "run" for path in checkpoints]
  unique = len(set(names)) == len(names)
  return [os.path.join(root, name if unique else f"{i}_{name}") for i, name in enumerate(names)]


def _settings(args: argparse.Namespace, num_devices: int) -> evaluate.EvalSettings:
  """config.eval's defaults with the flags' batch (the default rounded up to a multiple of the
  devices) and bootstrap samples."""
  section = defaults.get_config().eval
  batch = args.batch_size or -(-section.batch_size // num_devices) * num_devices
  if batch % num_devices:
    raise errors.BadInput(f"--batch-size {batch} does not split over {num_devices} devices: "
                          "give a multiple of the device count")
  section.update({"batch_size": batch, "bootstrap_samples": args.bootstrap_samples})
  return resolve.section(evaluate.EvalSettings, section)


def _build(target: cross_dataset.Target, args: argparse.Namespace):
  """The prepared builder of `target`, prepared from `--manual-dir/<name>` if it is not yet."""
  base = target.name.partition("/")[0]
  manual_dir = os.path.join(os.path.expanduser(args.manual_dir), base) if args.manual_dir else ""
  section = defaults.get_config().dataset
  section.update({"name": target.builder_name, "data_dir": args.data_dir,
                  "manual_dir": manual_dir})
  spec = resolve.section(source.DatasetSpec, section)
  try:
    return source.build_dataset(spec)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"--datasets {target.label}: {e}") from None


def _dataset_result(label: str, scores: dict, columns: dict, builder, split: str,
                    visualizer: Callable[[], object]) -> html_report.DatasetResult:
  """One dataset's part of report.html, with the images the model gets most wrong and their
  rollout by `visualizer()` (regression heads; a classifier's page shows its accuracy only)."""
  worst = []
  if "srcc" in scores:
    indices = html_report.worst_indices(columns["target"], columns["prediction"])
    worst = html_report.worst_images(builder, split, indices, columns["target"],
                                     columns["prediction"], columns["name"], visualizer())
  return html_report.DatasetResult(label, scores, columns["target"], columns["prediction"], worst)
