"""Checkpoints scored on datasets, with everything mst-eval writes: the library's entry point to
evaluation, which `mst-eval`, the sweeps and the experiments call.

`on_split` scores checkpoints on one split of one dataset (mst-eval --config); `across` scores
them on several prepared datasets, one table (mst-eval --datasets). Both check every checkpoint
exists and every output folder can be written before the first forward pass (not after an hour),
load each checkpoint once, and write, from process 0 of a multi-host run, each checkpoint's
predictions.csv, metrics.json and report.html. `say` gets the lines a person watching wants
(a checkpoint done, a table); results come back as values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import functools
import os

import jax

from mst import errors
from mst.checkpoints import loader
from mst.checkpoints import paths as checkpoint_paths
from mst.checkpoints import workdir_lock
from mst.config import defaults
from mst.data import source
from mst.evaluation import cross_dataset
from mst.evaluation import evaluate
from mst.evaluation import html_report
from mst.evaluation import report
from mst.runtime import sharding

Say = Callable[[str], None]
Scores = dict[str, float]


def _quiet(line: str) -> None:
  del line


@dataclasses.dataclass(frozen=True)
class SplitResults:
  """`on_split`'s scores: one dict of metrics per checkpoint, in order, and for repeated runs
  their mean and standard deviation (`summary`, else empty)."""
  per_checkpoint: list[Scores]
  summary: dict[str, tuple[float, float]]


def settings(num_devices: int, batch_size: int | None = None,
             bootstrap_samples: int | None = None) -> evaluate.EvalSettings:
  """config.eval's defaults, with `batch_size` (None: config.eval's, rounded up to a multiple of
  `num_devices`) and `bootstrap_samples` (None: config.eval's); BadInput if the batch does not
  split over the devices."""
  section = defaults.get_config().eval
  batch = batch_size or -(-section.batch_size // num_devices) * num_devices
  if batch % num_devices:
    raise errors.BadInput(f"--batch-size {batch} does not split over {num_devices} devices: "
                          "give a multiple of the device count")
  section.batch_size = batch
  if bootstrap_samples is not None:
    section.bootstrap_samples = bootstrap_samples
  return evaluate.EvalSettings(**section.to_dict())


def on_split(checkpoints: Sequence[str], dataset: source.DatasetSpec, split: str,
             settings: evaluate.EvalSettings, *, output_dirs: Mapping[str, str],
             runs: bool = False, summary_dir: str | None = None, dtype: str = "float32",
             seed: int = 0, say: Say = _quiet) -> SplitResults:
  """Each checkpoint scored on `split` of `dataset`, its files written to `output_dirs[path]`.
  With `runs` (the checkpoints are repeated runs of one config), also their mean and standard
  deviation, written with a report.html of them all to `summary_dir` when given.

  Raises errors.BadInput for a missing checkpoint, a dataset or split that cannot be read, or a
  checkpoint that is not MUSIQ's; errors.RunFailed for an output folder that cannot be written.
  """
  _check_inputs(checkpoints, lambda found: [output_dirs[path] for path in found] +
                ([summary_dir] if summary_dir else []))
  builder = source.build_dataset(dataset)
  mesh = sharding.make_mesh()
  chief = jax.process_index() == 0
  label = f"{dataset.name}:{split}"
  per_checkpoint, pages = [], []
  for path in checkpoints:
    scores, columns = evaluate.evaluate_checkpoint(settings, path, split, builder, mesh,
                                                   dtype=dtype, seed=seed)
    per_checkpoint.append(scores)
    if not chief:
      continue
    output_dir = output_dirs[path]
    result = _dataset_result(label, scores, columns, builder, split,
                             functools.partial(html_report.visualizer, path))
    pages.append(html_report.RunResult(path, [result]))
    report.write_outputs(output_dir, scores, columns)
    html_report.write(os.path.join(output_dir, "report.html"), pages[-1:])
    say(f"{path}: {len(columns['name'])} images of {split}, written to {output_dir}")
    say(report.metrics_table(split, scores))
  summary = report.aggregate(per_checkpoint) if runs else {}
  if runs and summary_dir and chief:
    report.write_runs_summary(summary_dir, list(checkpoints), summary)
    html_report.write(os.path.join(summary_dir, "report.html"), pages)
  return SplitResults(per_checkpoint, summary)


def across(checkpoints: Sequence[str], targets: Sequence[cross_dataset.Target],
           settings: evaluate.EvalSettings, *, output_dir: str, data_dir: str,
           manual_dir: str = "", runs: bool = False, dtype: str = "float32",
           say: Say = _quiet) -> dict[str, dict[str, Scores]]:
  """Each checkpoint scored on each target (a dataset and split), prepared in `data_dir` first
  from `manual_dir/<name>` where it is not yet; checkpoint -> dataset label -> metrics.

  Writes cross_dataset.md, cross_dataset.json and report.html to `output_dir`, and each
  checkpoint's `<dataset>_<split>/` folders there (with `runs`, in `output_dir/<run name>/`).
  Raises as `on_split` does, naming the `--datasets` entry of a dataset that cannot be
  prepared.
  """
  run_dirs = dict(zip(checkpoints, _run_folders(output_dir, checkpoints, runs)))
  _check_inputs(checkpoints, lambda found: [output_dir])
  builders = {target.label: _build(target, data_dir, manual_dir) for target in targets}
  mesh = sharding.make_mesh()
  chief = jax.process_index() == 0
  labels = [target.label for target in targets]
  results, counts, pages = {}, {}, []
  # One rollout model per checkpoint, made when its first dataset's worst images need it.
  visualizer = functools.cache(html_report.visualizer)
  for path in checkpoints:
    loaded = loader.load_for_inference(path, dtype=dtype)
    results[path], datasets = {}, []
    for target in targets:
      builder = builders[target.label]
      scores, columns = evaluate.evaluate_loaded(settings, loaded, target.split, builder, mesh,
                                                 name=path, warn_scale=False)
      results[path][target.label] = scores
      counts[target.label] = len(columns["name"])
      if chief:
        folder = os.path.join(run_dirs[path], target.folder)
        report.write_outputs(folder, scores, columns)
        datasets.append(_dataset_result(target.label, scores, columns, builder, target.split,
                                        functools.partial(visualizer, path)))
        say(f"{path} on {target.label}: {counts[target.label]} images, SRCC "
            f"{scores.get('srcc', float('nan')):.4f}, written to {folder}")
    pages.append(html_report.RunResult(path, datasets))
  if chief:
    cross_dataset.write_table(output_dir, results, labels, counts)
    html_report.write(os.path.join(output_dir, "report.html"), pages,
                      title="mst-eval: cross-dataset")
  return results


def _check_inputs(checkpoints: Sequence[str],
                  output_dirs: Callable[[list[str]], list[str]]) -> None:
  """The output folders of the checkpoints found (`output_dirs(found)`) writable (RunFailed),
  then every checkpoint there (BadInput): now, not after an hour of scoring."""
  try:
    found = {path: checkpoint_paths.exists(path) for path in checkpoints}
  except OSError as e:  # a URL that cannot be checked: no permission, an unknown scheme
    raise errors.BadInput(str(e)) from e
  for output_dir in output_dirs([path for path in checkpoints if found[path]]):
    workdir_lock.check_writable(output_dir, "--output-dir")
  if missing := [path for path, there in found.items() if not there]:
    raise errors.BadInput(f"no such checkpoint: {', '.join(missing)}")


def _run_folders(root: str, checkpoints: Sequence[str], runs: bool) -> list[str]:
  """Where each checkpoint's per-dataset folders go: `root` itself for one checkpoint; for
  runs, `root/<workdir name>` (`root/<i>_<name>` where names repeat)."""
  if not runs:
    return [root] * len(checkpoints)
  names = [os.path.basename(os.path.normpath(path)) or "run" for path in checkpoints]
  unique = len(set(names)) == len(names)
  return [os.path.join(root, name if unique else f"{i}_{name}") for i, name in enumerate(names)]


def _build(target: cross_dataset.Target, data_dir: str, manual_dir: str):
  """The prepared builder of `target`, prepared from `manual_dir/<name>` if it is not yet."""
  base = target.name.partition("/")[0]
  section = defaults.get_config().dataset
  section.update({"name": target.builder_name, "data_dir": data_dir,
                  "manual_dir": os.path.join(os.path.expanduser(manual_dir), base)
                  if manual_dir else ""})
  spec = source.DatasetSpec(**section.to_dict())
  try:
    return source.build_dataset(spec)
  except FileNotFoundError as e:
    raise errors.BadInput(f"--datasets {target.label}: {e}") from None


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
