"""Evaluation results for people and files: markdown tables, `metrics.json`, `predictions.csv`,
and the mean and standard deviation over repeated runs. `mst-train`, `mst-eval` and the sweeps'
tables are all drawn by `markdown_table`.
"""

from __future__ import annotations

import csv
import os
from typing import Mapping, Sequence

import numpy as np

from mst.checkpoints import paths
from mst.runtime import safe_output

CI_SUFFIXES = ("_ci95_low", "_ci95_high")
# The correlations the cross-dataset table and report.html show, and what they mean.
CORRELATIONS = (("srcc", "SRCC"), ("plcc", "PLCC"), ("krcc", "KRCC"))
CORRELATION_CAPTION = (
    "SRCC, PLCC and KRCC of each checkpoint's predictions against each dataset's MOS, with "
    "bootstrap 95% confidence intervals in brackets. Every dataset's labels are oriented so that "
    "higher is better (LIVE and CSIQ: mos = a constant minus their DMOS), so a good model's "
    "correlations are positive on every dataset. Each image is scored once, at native "
    "resolution.")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """A markdown table; the first column left-aligned, the others right-aligned (numbers)."""
  lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
  return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def metrics_table(split: str, scores: Mapping[str, float]) -> str:
  """One metric a row, with its bootstrap 95% confidence interval where there is one."""
  rows = []
  for name, value in scores.items():
    if name.endswith(CI_SUFFIXES):
      continue
    text = f"{value:.4f}"
    if f"{name}_ci95_low" in scores:
      text += f" (95% CI {scores[f'{name}_ci95_low']:.4f} to {scores[f'{name}_ci95_high']:.4f})"
    rows.append((name, text))
  return markdown_table((f"{split} metric", "value"), rows)


def aggregate(per_run: Sequence[Mapping[str, float]]) -> dict[str, tuple[float, float]]:
  """Mean and (sample) standard deviation of each metric over the runs; NaN std for one run."""
  names = [n for n in per_run[0] if not n.endswith(CI_SUFFIXES)]
  out = {}
  for name in names:
    values = np.array([run[name] for run in per_run], float)
    std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    out[name] = (float(values.mean()), std)
  return out


def aggregate_table(split: str, summary: Mapping[str, tuple[float, float]]) -> str:
  rows = [(name, f"{mean:.4f} ± {std:.4f}") for name, (mean, std) in summary.items()]
  return markdown_table((f"{split} metric", "value"), rows)


def write_outputs(output_dir: str, scores: Mapping[str, float],
                  columns: Mapping[str, Sequence]) -> None:
  """`metrics.json` and `predictions.csv` (index, image, target, prediction) in `output_dir` (a
  local folder or a URL such as gs://bucket/run/eval_test). Written through `safe_output`: an
  undefined metric is null, a name a spreadsheet would run is neutralised, a non-UTF-8 one
  escaped."""
  gfile = _gfile()
  gfile.makedirs(output_dir)
  with gfile.GFile(os.path.join(output_dir, "metrics.json"), "w") as f:
    f.write(safe_output.json_dumps(dict(scores), indent=2))
  with gfile.GFile(os.path.join(output_dir, "predictions.csv"), "w") as f:
    writer = csv.writer(f)
    writer.writerow(["index", "image", "target", "prediction"])
    for index, row in enumerate(zip(columns["name"], columns["target"], columns["prediction"])):
      cells = [index, row[0], f"{row[1]:.6g}", f"{row[2]:.6g}"]
      writer.writerow([safe_output.csv_cell(cell) for cell in cells])


def write_runs_summary(output_dir: str, runs: Sequence[str], summary: Mapping) -> None:
  """`runs_metrics.json` in `output_dir`: the runs and their metrics' mean and std (null where
  undefined: the std of one run)."""
  gfile = _gfile()
  gfile.makedirs(output_dir)
  with gfile.GFile(os.path.join(output_dir, "runs_metrics.json"), "w") as f:
    f.write(safe_output.json_dumps({"runs": list(runs), "mean_std": summary}, indent=2))


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (writers only; tables need none)
  return tf.io.gfile


def default_output_dir(checkpoint: str, split: str) -> str:
  """<workdir>/eval_<split> for a workdir (local or a URL), ./eval_<file stem>_<split> for a
  file."""
  if paths.isdir(checkpoint):
    return os.path.join(checkpoint, f"eval_{split}")
  stem = os.path.splitext(os.path.basename(checkpoint))[0]
  return os.path.abspath(f"eval_{stem}_{split}")
