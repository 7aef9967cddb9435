"""Cross-dataset evaluation: which datasets `mst-eval --datasets` scores, and its table.

IQA papers train on one dataset and test on others (KonIQ-10k -> LIVE Challenge, KADID-10k, ...).
`parse_targets` reads `koniq10k:test,livec:full,...` and checks each name and split against the
builders before anything is prepared or loaded; `table` and `table_json` lay out the results:
rows the checkpoints, columns the datasets, SRCC / PLCC / KRCC with their bootstrap intervals.
Correlations only need predictions in the labels' order, not on their scale, so one checkpoint
is compared on every set; every builder's `mos` is oriented so that higher is better (the DMOS
sets derive it from their DMOS), so a good model's correlations are positive everywhere.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Mapping, Sequence

from mst import errors
from mst.data import datasets
from mst.data import source
from mst.evaluation import report
from mst.runtime import safe_output

# Datasets scored with a builder config that applies their own preprocessing (the paper scores
# SPAQ with the shorter side resized to 512 px, as SPAQ's authors do).
OWN_PREPROCESSING = {"spaq": "spaq/shorter_side_512"}
NOT_CROSS = ("custom",)  # needs a CSV of its own: evaluate it with --config


class TargetError(errors.BadInput):
  """A `--datasets` entry that names no known dataset or split."""


@dataclasses.dataclass(frozen=True)
class Target:
  """One dataset split to score: `name` as the user wrote it (`spaq`), `builder_name` the builder
  (and config) that is read (`spaq/shorter_side_512`), and the split."""
  name: str
  builder_name: str
  split: str

  @property
  def label(self) -> str:
    """The table's column: `spaq:test`."""
    return f"{self.name}:{self.split}"

  @property
  def folder(self) -> str:
    """The output folder of this dataset's predictions.csv and metrics.json."""
    return f"{self.name.replace('/', '_')}_{self.split}"


def default_split(name: str) -> str:
  """`full` for the evaluation sets (the cross-dataset protocol), `test` for the others."""
  declared = datasets.declared_splits(name) or ()
  return "full" if "full" in declared else "test"


def parse_targets(text: str) -> list[Target]:
  """`"koniq10k:test,livec,spaq:test"` -> Targets; a split left out is `default_split`'s.

  Raises TargetError naming the entry: an unknown dataset, a split it lacks, a repeat."""
  targets = []
  for entry in (part.strip() for part in text.split(",")):
    if not entry:
      continue
    name, _, split = entry.partition(":")
    base = name.partition("/")[0]
    if base not in datasets.DATASETS or base in NOT_CROSS:
      known = sorted(set(datasets.DATASETS) - set(NOT_CROSS))
      hint = " (evaluate your own data with --config)" if base in NOT_CROSS else ""
      raise TargetError(f"--datasets: {entry!r}: unknown dataset {base!r}{hint}; known: "
                        f"{', '.join(known)}")
    split = split.strip() or default_split(name)
    try:
      source.check_splits(name, datasets.declared_splits(name), {f"--datasets {entry}": split})
    except source.SplitError as e:
      raise TargetError(str(e)) from None
    builder_name = name if "/" in name else OWN_PREPROCESSING.get(name, name)
    target = Target(name, builder_name, split)
    if target.label in [t.label for t in targets]:
      raise TargetError(f"--datasets: {target.label} is named twice")
    targets.append(target)
  if not targets:
    raise TargetError("--datasets names no dataset; e.g. --datasets koniq10k:test,livec:full")
  return targets


def _cell(scores: Mapping[str, float] | None, metric: str) -> str:
  if not scores or metric not in scores or not math.isfinite(scores[metric]):
    return "–"
  text = f"{scores[metric]:.3f}"
  low, high = (scores.get(f"{metric}{suffix}") for suffix in report.CI_SUFFIXES)
  if low is not None and math.isfinite(low) and math.isfinite(high):
    text += f" [{low:.3f}, {high:.3f}]"
  return text


def table(results: Mapping[str, Mapping[str, Mapping[str, float]]],
          labels: Sequence[str]) -> str:
  """Markdown: per checkpoint (`results` keys, in order) one row per metric, one column per
  dataset label (`labels`), then the caption."""
  header = ["checkpoint", "metric"] + list(labels)
  rows = []
  for checkpoint, by_dataset in results.items():
    for index, (metric, title) in enumerate(report.CORRELATIONS):
      rows.append([safe_output.printable(checkpoint) if index == 0 else "", title]
                  + [_cell(by_dataset.get(label), metric) for label in labels])
  return report.markdown_table(header, rows) + "\n\n" + report.CORRELATION_CAPTION


def table_json(results: Mapping[str, Mapping[str, Mapping[str, float]]],
               labels: Sequence[str], counts: Mapping[str, int]) -> dict:
  """The table as data: the caption, the datasets (with their image counts), the checkpoints and
  every metric of every pair (NaN written as null), ready for strict JSON."""
  return safe_output.finite({
      "caption": report.CORRELATION_CAPTION,
      "datasets": [{"dataset": label, "images": counts.get(label)} for label in labels],
      "checkpoints": list(results),
      "results": {checkpoint: {label: dict(scores) for label, scores in by_dataset.items()}
                  for checkpoint, by_dataset in results.items()},
  })


def write_table(output_dir: str, results: Mapping[str, Mapping[str, Mapping[str, float]]],
                labels: Sequence[str], counts: Mapping[str, int]) -> None:
  """`cross_dataset.md` and `cross_dataset.json` in `output_dir` (a folder or a URL)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (writing only)
  tf.io.gfile.makedirs(output_dir)
  with tf.io.gfile.GFile(os.path.join(output_dir, "cross_dataset.md"), "w") as f:
    f.write(table(results, labels) + "\n")
  with tf.io.gfile.GFile(os.path.join(output_dir, "cross_dataset.json"), "w") as f:
    f.write(safe_output.json_dumps(table_json(results, labels, counts), indent=2) + "\n")
