"""The plot every IQA paper shows: prediction against MOS, one dot per image, with the fitted
4-parameter logistic curve that maps predictions onto the MOS scale. Training writes it to
TensorBoard at each validation, and report.html shows it; drawn with matplotlib's object API (no
pyplot, no display). It draws the numbers it is given (`mst.evaluation.metrics.scatter_stats`
computes them), so pictures stay below the evaluation that uses them.
"""

from __future__ import annotations

import io
from typing import Callable

from matplotlib import figure
import numpy as np
from PIL import Image

DPI = 100


def scatter_figure(prediction: np.ndarray, target: np.ndarray, title: str, *, srcc: float,
                   plcc: float, curve: Callable[[np.ndarray], np.ndarray] | None,
                   inches: tuple[float, float] = (5.0, 4.2)) -> figure.Figure:
  """Prediction (x) against MOS (y) with the logistic fit `curve` (None: no fit), `srcc` and
  `plcc` in the title. Many points stay fast: small markers, rasterised."""
  prediction = np.asarray(prediction, np.float64)
  target = np.asarray(target, np.float64)
  fig = figure.Figure(figsize=inches, dpi=DPI, layout="constrained")
  ax = fig.add_subplot()
  size = 12 if prediction.size < 500 else 6
  ax.scatter(prediction, target, s=size, alpha=0.6, linewidths=0, color="tab:blue",
             rasterized=True, label="images")
  if curve is not None:
    xs = np.linspace(prediction.min(), prediction.max(), 200)
    ax.plot(xs, curve(xs), color="tab:red", linewidth=1.5, label="4-parameter logistic fit")
    ax.legend(loc="best", fontsize="small")
  ax.set_xlabel("prediction")
  ax.set_ylabel("MOS")
  ax.set_title(f"{title}\nSRCC {srcc:.3f}, PLCC {plcc:.3f}, {prediction.size} images",
               fontsize="medium")
  ax.grid(alpha=0.3)
  return fig


def to_rgb(fig: figure.Figure) -> np.ndarray:
  """The figure as an (H, W, 3) uint8 array."""
  return np.asarray(Image.open(io.BytesIO(to_png(fig))).convert("RGB"))


def to_png(fig: figure.Figure) -> bytes:
  """The figure as PNG bytes."""
  out = io.BytesIO()
  fig.savefig(out, format="png", dpi=DPI)
  return out.getvalue()

