"""Finished sweep runs -> a markdown table laid out like the paper's tables.

A sweep root holds one workdir per run, named `<run>` or `<run>-seed<k>`; a workdir is finished
when mst-train has written its `<split>_metrics.json` (test, and any other split evaluated) next to
its `config.json`. Runs of the same setting (several seeds) become one row: mean ± sample standard
deviation. Roots may be local folders or gs:// URLs.

`MAIN_TABLE` is the paper's main results as runs: a root with workdirs `koniq`, `spaq`, `ava` and
`paq2piq` (each trained with its configs/ file, optionally `-seed<k>`) tabulates beside the
paper's numbers (`experiments/sweep.py collect --root R --name main`).
"""

import dataclasses
import json
import os
import re
import statistics
from typing import Any, Sequence

import numpy as np

from experiments.sweeps.base import Run
from mst.evaluation import report as eval_report

CONFIG_FILE = "config.json"
METRICS_SUFFIX = "_metrics.json"
COLUMNS = (("srcc", "SRCC"), ("plcc", "PLCC"))
SEED_SUFFIX = re.compile(r"-seed\d+$")
# The paper's main results (test SRCC, PLCC; the paper averages 10 runs) as runs whose workdir
# names are the config files' and whose one override is the dataset the config trains on.
MAIN_TABLE = (
    Run("koniq", {"dataset.name": "koniq10k"}, "KonIQ-10k", (0.916, 0.928)),
    Run("spaq", {"dataset.name": "spaq/shorter_side_512"}, "SPAQ", (0.917, 0.921)),
    Run("ava", {"dataset.name": "ava"}, "AVA", (0.726, 0.738)),
    Run("paq2piq", {"dataset.name": "paq2piq"}, "PaQ-2-PiQ (full-size test)", (0.646, 0.739)),
)


@dataclasses.dataclass(frozen=True)
class Finished:
  """One finished workdir: its name, setting (the name without a seed suffix), config and metrics
  by split."""
  name: str
  setting: str
  config: dict[str, Any]
  metrics: dict[str, dict[str, float]]


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  # only for gs:// roots
  return tf.io.gfile


def _listdir(path: str) -> list[str]:
  if "://" in path:
    return [name.rstrip("/") for name in _gfile().listdir(path)]
  return os.listdir(path)


def _exists(path: str) -> bool:
  return _gfile().exists(path) if "://" in path else os.path.exists(path)


def _read_json(path: str) -> Any:
  if "://" in path:
    with _gfile().GFile(path) as f:
      return json.load(f)
  with open(path) as f:
    return json.load(f)


def _read_metrics(path: str) -> dict[str, float]:
  """A `<split>_metrics.json`; an undefined metric, written as null, reads as NaN."""
  return {k: float("nan") if v is None else v for k, v in _read_json(path).items()}


def _join(root: str, name: str) -> str:
  return f"{root.rstrip('/')}/{name}" if "://" in root else os.path.join(root, name)


def find_runs(root: str) -> tuple[list[Finished], list[str]]:
  """The finished workdirs directly under `root` and the names of unfinished ones (a config
  but no metrics yet), both sorted by name."""
  finished, unfinished = [], []
  for name in sorted(_listdir(root)):
    workdir = _join(root, name)
    if not _exists(_join(workdir, CONFIG_FILE)):
      continue
    metrics = {file[:-len(METRICS_SUFFIX)]: _read_metrics(_join(workdir, file))
               for file in sorted(_listdir(workdir)) if file.endswith(METRICS_SUFFIX)}
    if not metrics:
      unfinished.append(name)
      continue
    finished.append(Finished(name, SEED_SUFFIX.sub("", name), _read_json(
        _join(workdir, CONFIG_FILE)), metrics))
  return finished, unfinished


def _config_value(config: dict[str, Any], key: str) -> Any:
  for part in key.split("."):
    config = config[part]
  return tuple(config) if isinstance(config, list) else config


def check_overrides(finished: Sequence[Finished], runs: Sequence[Run]) -> None:
  """Raises ValueError when a workdir named after a run has a config that disagrees with the
  run's overrides (a root from another sweep or config)."""
  by_name = {run.name: run for run in runs}
  wrong = []
  for item in finished:
    run = by_name.get(item.setting)
    for key, value in (run.overrides if run else {}).items():
      got = _config_value(item.config, key)
      if got != (tuple(value) if isinstance(value, list) else value):
        wrong.append(f"{item.name}: {key}={got!r}, the sweep sets {value!r}")
  if wrong:
    raise ValueError("workdirs do not match the sweep: " + "; ".join(wrong))


def mean_std(values: Sequence[float]) -> str:
  """"0.726" for one value, "0.721 ± 0.004" (sample std) for several."""
  if len(values) == 1:
    return f"{values[0]:.3f}"
  return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _splits(finished: Sequence[Finished]) -> list[str]:
  names = {split for item in finished for split in item.metrics}
  return sorted(names, key=lambda split: (split != "test", split))


def markdown_table(finished: Sequence[Finished], setting_header: str = "Run",
                   runs: Sequence[Run] = ()) -> str:
  """Rows = settings (in the order of `runs`, then any others by name), columns = the number of
  runs, SRCC and PLCC per split, and the paper's numbers where `runs` carry them."""
  groups: dict[str, list[Finished]] = {}
  for item in finished:
    groups.setdefault(item.setting, []).append(item)
  by_name = {run.name: run for run in runs}
  order = [run.name for run in runs if run.name in groups]
  order += sorted(set(groups) - set(order))
  splits = _splits(finished)
  with_paper = any(by_name.get(name) and by_name[name].paper for name in order)
  header = [setting_header, "runs"]
  for split in splits:
    header += [title if splits == ["test"] else f"{split} {title}" for _, title in COLUMNS]
  if with_paper:
    header += [f"paper {title}" for _, title in COLUMNS]
  rows = []
  for name in order:
    run = by_name.get(name)
    cells = [run.label if run else name, str(len(groups[name]))]
    for split in splits:
      for key, _ in COLUMNS:
        values = [item.metrics[split][key] for item in groups[name]
                  if key in item.metrics.get(split, {})]
        cells.append(mean_std(values) if values else "–")
    if with_paper:
      cells += [f"{value:.3f}" for value in run.paper] if run and run.paper else ["–", "–"]
    rows.append(cells)
  return eval_report.markdown_table(header, rows)


def median_summary(finished: Sequence[Finished]) -> str:
  """The IQA papers' summary of repeated splits: per split and metric, the median over the runs,
  the interquartile range and the range (min to max)."""
  header = ["summary of runs", "runs", "median", "IQR", "min to max"]
  rows = []
  for split in _splits(finished):
    for key, title in COLUMNS:
      values = [item.metrics[split][key] for item in finished if key in item.metrics.get(split, {})]
      if not values:
        continue
      q1, median, q3 = np.percentile(values, [25, 50, 75])
      rows.append([f"{split} {title}", str(len(values)), f"{median:.3f}",
                   f"{q1:.3f} to {q3:.3f}", f"{min(values):.3f} to {max(values):.3f}"])
  return eval_report.markdown_table(header, rows)


def report(root: str, setting_header: str = "Run", runs: Sequence[Run] = (),
           median: bool = False) -> str:
  """The table of the finished runs under `root` (with `median`, then their median and spread),
  then notes on unfinished and missing runs."""
  finished, unfinished = find_runs(root)
  check_overrides(finished, runs)
  text = markdown_table(finished, setting_header, runs) if finished else "No finished runs."
  if median and finished:
    text += "\n\n" + median_summary(finished)
  found = {item.setting for item in finished} | {SEED_SUFFIX.sub("", n) for n in unfinished}
  missing = [run.name for run in runs if run.name not in found]
  if unfinished:
    text += f"\n\nUnfinished (no metrics yet): {', '.join(unfinished)}"
  if missing:
    text += f"\n\nNot started: {', '.join(missing)}"
  return text
