"""`report.html`: one self-contained page of an evaluation, for people to look at.

Per checkpoint and dataset: the metrics with their bootstrap intervals (one table, rows the
checkpoints, columns the datasets, and the mean ± std row for several runs), prediction against
MOS with the fitted 4-parameter logistic curve, the distribution of the errors, and the 12 images
the model gets most wrong (thumbnails, MOS against prediction, with the attention rollout over
them where the model gives one). Plots and images are embedded as data URIs: the file can be
mailed, archived or opened from a bucket, and it needs no network and no JavaScript.

A metric that is undefined (constant predictions, a NaN) reads "undefined", a note says why, and
the plots draw the images whose prediction and MOS are finite: the page renders whatever the
results. Names that are not UTF-8 are escaped (mst.runtime.safe_output.printable).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import io
import math
import numbers
import os
from typing import Mapping, Sequence

from absl import logging
from matplotlib import colormaps
from matplotlib import figure
import numpy as np
from PIL import Image

from mst.evaluation import metrics
from mst.evaluation import report
from mst.runtime import safe_output
from mst.visualization import scatter

WORST = 12
THUMBNAIL = 200  # px, the longer side


@dataclasses.dataclass(frozen=True)
class WorstImage:
  """One of the images a model gets most wrong; `rollout` a heat map over it (any size) or None."""
  name: str
  target: float
  prediction: float
  image: np.ndarray
  rollout: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class DatasetResult:
  """One checkpoint on one dataset split (`dataset`, e.g. "livec:full")."""
  dataset: str
  scores: Mapping[str, float]
  target: np.ndarray
  prediction: np.ndarray
  worst: Sequence[WorstImage] = ()


@dataclasses.dataclass(frozen=True)
class RunResult:
  """One checkpoint, as the user named it, and its results."""
  checkpoint: str
  datasets: Sequence[DatasetResult]


def mapped_predictions(target, prediction) -> np.ndarray:
  """The predictions on the MOS scale through the fitted logistic (as they are if it fails)."""
  prediction = np.asarray(prediction, np.float64)
  mapping = metrics.fit_logistic(prediction, target) if prediction.size >= 5 else None
  return prediction if mapping is None else np.asarray(mapping(prediction), np.float64)


def worst_indices(target, prediction, count: int = WORST) -> np.ndarray:
  """The `count` images with the largest |MOS - prediction| once the predictions are mapped onto
  the MOS scale by the fitted logistic (raw when the fit fails), worst first."""
  errors = np.abs(np.asarray(target, np.float64) - mapped_predictions(target, prediction))
  return np.argsort(-errors, kind="stable")[:count]


def worst_images(builder, split: str, indices: Sequence[int], target, prediction,
                 names: Sequence[str], visualizer=None) -> list[WorstImage]:
  """The images at `indices` of the split (in evaluation order), with the attention rollout of
  `visualizer` (`visualizer(checkpoint)`, made once per checkpoint) over each where it can be drawn
  (a failure there is logged, never fatal)."""
  from mst.data import pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)
  wanted = {int(i): position for position, i in enumerate(indices)}
  encoded = {}
  data = pipeline.feature(pipeline.read_split(builder, split, pipeline.Host()), "image")
  for index, image in enumerate(data.as_numpy_iterator()):
    if index in wanted:
      encoded[index] = image
      if len(encoded) == len(wanted):
        break
  out = []
  for index in wanted:
    image = np.asarray(Image.open(io.BytesIO(encoded[index])).convert("RGB"))
    out.append(WorstImage(names[index], float(target[index]), float(prediction[index]), image,
                          _rollout(visualizer, image, names[index])))
  return out


def visualizer(checkpoint: str | None):
  """The rollout visualizer of `checkpoint` for `worst_images`, or None (logged) where the model
  gives none."""
  if not checkpoint:
    return None
  try:
    from mst.visualization import rollout  # pylint: disable=g-import-not-at-top
    return rollout.Visualizer.from_checkpoint(checkpoint)
  except Exception as e:  # pylint: disable=broad-except  # the report goes on without it
    logging.warning("report.html: no attention rollout for %s: %s", checkpoint, e)
    return None


def _rollout(visualizer, image: np.ndarray, name: str) -> np.ndarray | None:
  """The rollout share per pixel of the largest scale (the native image where there is one)."""
  if visualizer is None:
    return None
  try:
    maps, _ = visualizer.attention_maps(image, name)
  except Exception as e:  # pylint: disable=broad-except  # e.g. too many tokens for the rollout
    logging.warning("report.html: no attention rollout for %s: %s", name, e)
    return None
  scale = max(maps, key=lambda m: m.image.shape[0] * m.image.shape[1])
  p = visualizer.pp_config.patch_size
  h, w = scale.image.shape[:2]
  grid = np.nan_to_num(scale.attention, nan=0.0)
  pixels = np.repeat(np.repeat(grid, p, axis=0), p, axis=1)
  return pixels[scale.pad_top:scale.pad_top + h, scale.pad_left:scale.pad_left + w]


# ---------------------------------------------------------------------------------------------
# The page.


def render(runs: Sequence[RunResult], title: str = "mst-eval report") -> str:
  """The whole page."""
  labels = list(dict.fromkeys(d.dataset for run in runs for d in run.datasets))
  checkpoints = ", ".join(run.checkpoint for run in runs)
  now = datetime.datetime.now(datetime.timezone.utc)
  parts = [f"<h1>{_text(title)}</h1>",
           f"<p class=meta>{now:%Y-%m-%d %H:%M} UTC · checkpoint{'s' if len(runs) != 1 else ''}: "
           f"{_text(checkpoints)} · datasets: {_text(', '.join(labels))}</p>",
           "<h2>Metrics</h2>", _metrics_table(runs, labels),
           f"<p class=caption>{report.CORRELATION_CAPTION}</p>"]
  for run in runs:
    for result in run.datasets:
      parts.append(_dataset_section(run.checkpoint, result))
  return PAGE.format(title=_text(title), style=STYLE, body="\n".join(parts))


def write(path: str, runs: Sequence[RunResult], title: str = "mst-eval report") -> None:
  """Writes `render(runs, title)` to `path` (a local file, replaced atomically, or a URL)."""
  page = render(runs, title)
  if "://" in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  (URLs only)
    with tf.io.gfile.GFile(path, "w") as f:
      f.write(page)
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  temporary = f"{path}.tmp-{os.getpid()}"
  with open(temporary, "w", encoding="utf-8") as f:
    f.write(page)
  os.replace(temporary, path)


def _text(value) -> str:
  return html.escape(safe_output.printable(str(value)))


def _finite(value) -> bool:
  return isinstance(value, numbers.Real) and math.isfinite(value)


def _number(value, spec: str) -> str:
  """`value` formatted, or "undefined" where it is missing, NaN or infinite."""
  return format(value, spec) if _finite(value) else "undefined"


def _cell(scores: Mapping[str, float] | None) -> str:
  if not scores:
    return "–"
  if "srcc" not in scores:
    return "<br>".join(f"{_text(k)} {_number(v, '.4f')}" for k, v in scores.items()
                       if not k.endswith(report.CI_SUFFIXES))
  lines = []
  for key, name in report.CORRELATIONS:
    if key not in scores:
      continue
    line = f"{name} <b>{_number(scores[key], '.3f')}</b>"
    low, high = (scores.get(f"{key}{suffix}") for suffix in report.CI_SUFFIXES)
    if _finite(low) and _finite(high):
      line += f" <span class=ci>[{low:.3f}, {high:.3f}]</span>"
    lines.append(line)
  return "<br>".join(lines)


def _metrics_table(runs: Sequence[RunResult], labels: Sequence[str]) -> str:
  header = "".join(f"<th>{_text(label)}</th>" for label in labels)
  rows = []
  for run in runs:
    by_label = {d.dataset: d.scores for d in run.datasets}
    cells = "".join(f"<td>{_cell(by_label.get(label))}</td>" for label in labels)
    rows.append(f"<tr><th class=run>{_text(run.checkpoint)}</th>{cells}</tr>")
  if len(runs) > 1:
    cells = []
    for label in labels:
      lines = []
      for key, name in report.CORRELATIONS:
        values = [d.scores[key] for run in runs for d in run.datasets
                  if d.dataset == label and key in d.scores]
        lines += _mean_std(name, values)
      cells.append(f"<td>{'<br>'.join(lines) or '–'}</td>")
    rows.append(f"<tr class=mean><th class=run>mean ± std of {len(runs)} runs</th>"
                f"{''.join(cells)}</tr>")
  return (f"<table class=metrics><tr><th>checkpoint</th>{header}</tr>\n" + "\n".join(rows)
          + "</table>")


def _mean_std(name: str, values: Sequence[float]) -> list[str]:
  """The mean ± std line of one correlation over the runs that define it (none for one run)."""
  if len(values) < 2:
    return []
  defined = [value for value in values if _finite(value)]
  if len(defined) < 2:
    return [f"{name} <b>undefined</b> (defined in {len(defined)} of {len(values)} runs)"]
  line = f"{name} <b>{np.mean(defined):.3f}</b> ± {np.std(defined, ddof=1):.3f}"
  return [line + (f" (of the {len(defined)} runs that define it)" if len(defined) < len(values)
                  else "")]


def _undefined_note(target: np.ndarray, prediction: np.ndarray) -> str:
  """Why metrics or plots are undefined, in words ("" when nothing is)."""
  finite = np.isfinite(target) & np.isfinite(prediction)
  notes = []
  if not finite.all():
    notes.append(f"{(~finite).sum()} of {finite.size} images have a prediction or MOS that is not "
                 "a finite number: the metrics over every image are undefined, and the plots "
                 "leave those images out.")
  if finite.sum() < 2:
    notes.append("Fewer than 2 images with a finite prediction and MOS: the correlations are "
                 "undefined.")
  for values, what in ((prediction[finite], "prediction"), (target[finite], "MOS")):
    if values.size > 1 and np.ptp(values) == 0:
      notes.append(f"Every {what} is {values[0]:.4g}: the correlations and the logistic fit are "
                   "undefined.")
  return "".join(f"<p class=undefined>{note}</p>" for note in notes)


def _dataset_section(checkpoint: str, result: DatasetResult) -> str:
  heading = (f"<h2>{_text(result.dataset)} <span class=run-name>{_text(checkpoint)}</span></h2>"
             f"<p>{len(result.target)} images. {_cell(result.scores)}</p>")
  if "srcc" not in result.scores:  # a classifier: its accuracy is the whole story
    return f"<section>{heading}</section>"
  target = np.asarray(result.target, np.float64).reshape(-1)
  prediction = np.asarray(result.prediction, np.float64).reshape(-1)
  heading += _undefined_note(target, prediction)
  finite = np.isfinite(target) & np.isfinite(prediction)
  target, prediction = target[finite], prediction[finite]
  if not target.size:
    return f"<section>{heading}<p class=undefined>No plots: no image to draw.</p></section>"
  plot = scatter.scatter_figure(prediction, target, result.dataset,
                                **metrics.scatter_stats(prediction, target))
  histogram = _error_histogram(result.dataset, target, prediction)
  plots = (f"<div class=plots>{_img(scatter.to_png(plot), 'image/png', 'prediction against MOS')}"
           f"{_img(histogram, 'image/png', 'distribution of errors')}</div>")
  worst = ""
  if result.worst:
    cards = "".join(_worst_card(item) for item in result.worst)
    worst = (f"<h3>The {len(result.worst)} images it gets most wrong</h3>"
             f"<p class=caption>By |MOS - prediction| once the predictions are mapped onto the MOS "
             f"scale by the logistic fit; beside each, where the model looks (attention rollout "
             f"from the CLS token).</p><div class=worst>{cards}</div>")
  return f"<section>{heading}{plots}{worst}</section>"


def _error_histogram(dataset: str, target: np.ndarray, prediction: np.ndarray) -> bytes:
  """The errors of the (finite) predictions, mapped by the logistic fit where it converges."""
  mapping = metrics.fit_logistic(prediction, target) if prediction.size >= 5 else None
  errors = target - (prediction if mapping is None else mapping(prediction))
  fig = figure.Figure(figsize=(5.0, 4.2), dpi=scatter.DPI, layout="constrained")
  ax = fig.add_subplot()
  ax.hist(errors, bins=min(40, max(5, errors.size // 5)), color="tab:gray")
  ax.axvline(0.0, color="tab:red", linewidth=1)
  ax.set_xlabel("MOS - prediction (on the MOS scale, after the logistic fit)" if mapping
                else "MOS - prediction (raw: no logistic fit)")
  ax.set_ylabel("images")
  ax.set_title(f"{dataset}: errors\nRMSE {np.sqrt(np.mean(errors ** 2)):.3g}, median "
               f"|error| {np.median(np.abs(errors)):.3g}", fontsize="medium")
  return scatter.to_png(fig)


def _worst_card(item: WorstImage) -> str:
  thumbnail = _thumbnail(item.image)
  images = _img(_jpeg(thumbnail), "image/jpeg", f"{item.name}")
  if item.rollout is not None and item.rollout.size:
    images += _img(_jpeg(_overlay(thumbnail, item.rollout)), "image/jpeg",
                   f"{item.name}: attention rollout")
  return (f"<figure>{images}<figcaption>{_text(item.name)}<br>MOS {_number(item.target, '.3g')} · "
          f"predicted {_number(item.prediction, '.3g')}</figcaption></figure>")


def _thumbnail(image: np.ndarray) -> Image.Image:
  """The image with its longer side THUMBNAIL px: shrunk smoothly, or enlarged pixel by pixel
  (a tiny image stays sharp and is not blown up)."""
  height, width = image.shape[:2]
  factor = THUMBNAIL / max(height, width)
  size = (max(1, round(width * factor)), max(1, round(height * factor)))
  smooth = Image.Resampling.LANCZOS if factor < 1 else Image.Resampling.NEAREST
  return Image.fromarray(image).resize(size, smooth)


def _overlay(thumbnail: Image.Image, heat: np.ndarray) -> Image.Image:
  """The thumbnail darkened where the rollout is low, coloured where it is high."""
  heat = np.asarray(heat, np.float64)
  heat = heat / heat.max() if heat.max() > 0 else heat
  resized = Image.fromarray((heat * 255).astype(np.uint8)).resize(thumbnail.size,
                                                                   Image.Resampling.BILINEAR)
  colours = colormaps["inferno"](np.asarray(resized) / 255.0)[..., :3]
  blended = 0.45 * np.asarray(thumbnail, np.float64) / 255.0 + 0.55 * colours
  return Image.fromarray((np.clip(blended, 0, 1) * 255).astype(np.uint8))


def _jpeg(image: Image.Image) -> bytes:
  out = io.BytesIO()
  image.convert("RGB").save(out, format="JPEG", quality=85)
  return out.getvalue()


def _img(data: bytes, mime: str, alt: str) -> str:
  return (f'<img src="data:{mime};base64,{base64.b64encode(data).decode()}" '
          f'alt="{_text(alt)}">')


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{style}</style></head>
<body>
{body}
</body></html>
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222;
       padding: 0 1em; }
h1 { margin-bottom: 0.2em; } .meta, .caption { color: #555; font-size: 0.9em; }
table.metrics { border-collapse: collapse; margin: 0.5em 0; }
table.metrics th, table.metrics td { border: 1px solid #ccc; padding: 0.4em 0.7em;
                                     vertical-align: top; text-align: right; }
table.metrics th.run { text-align: left; font-weight: normal; font-family: monospace; }
tr.mean { background: #f4f4f4; } .ci { color: #777; font-size: 0.85em; }
.undefined { color: #8a5a00; }
section { border-top: 1px solid #ddd; margin-top: 2em; }
.run-name { font-size: 0.6em; color: #666; font-family: monospace; font-weight: normal; }
.plots img { max-width: 49%; }
.worst { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 1em; }
figure { margin: 0; } figure img { max-width: 48%; margin-right: 2%; }
figcaption { font-size: 0.85em; color: #333; word-break: break-all; }
"""
