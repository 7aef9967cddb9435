"""The figures of `mst-visualize`: attention rollout panels over the image at each scale, and the
G x G mosaic of the hash-based spatial embedding's cosine similarities (the paper's figure 7).
Drawn with matplotlib's object API, never pyplot, so no display or global state is involved.
"""

from typing import Sequence

import matplotlib
from matplotlib import figure
import numpy as np

from mst.visualization.rollout import ScaleMap

PANEL_INCHES = 4.0  # the height of a panel
PANEL_WIDTHS = (2.8, 12.0)  # inches: room for the panel titles, and a cap for panoramas
DPI = 110


def draw_attention(maps: Sequence[ScaleMap], patch_size: int, title: str, path: str) -> None:
  """One panel per scale, side by side: the image with each patch's rollout share over it."""
  # Placed in inches: the layout engines misplace a two-line suptitle over fixed-aspect panels.
  # Panels of extreme aspect ratios keep a readable cell; the image is centred in it.
  gap, side, top, bottom, bar = 0.3, 0.2, 1.15, 0.95, 0.14
  widths = [float(np.clip(PANEL_INCHES * m.image.shape[1] / m.image.shape[0], *PANEL_WIDTHS))
            for m in maps]
  fig_w = sum(widths) + gap * (len(maps) - 1) + 2 * side
  fig_h = PANEL_INCHES + top + bottom
  fig = figure.Figure(figsize=(fig_w, fig_h), dpi=DPI)
  left = side
  for m, width in zip(maps, widths):
    ax = fig.add_axes((left / fig_w, bottom / fig_h, width / fig_w, PANEL_INCHES / fig_h))
    cax = fig.add_axes(((left + 0.1 * width) / fig_w, (bottom - 0.25 - bar) / fig_h,
                        0.8 * width / fig_w, bar / fig_h))
    left += width + gap
    h, w = m.image.shape[:2]
    count_h, count_w = m.attention.shape
    ax.imshow(m.image, extent=(0, w, h, 0), interpolation="antialiased")
    # Each patch covers its P x P block of the padded grid, shifted by the 'SAME' padding.
    extent = (-m.pad_left, count_w * patch_size - m.pad_left,
              count_h * patch_size - m.pad_top, -m.pad_top)
    heat = ax.imshow(np.ma.masked_invalid(m.attention * 100), extent=extent, cmap="inferno",
                     alpha=0.55, interpolation="nearest", vmin=0)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{m.label}\n{m.share:.0%} of the CLS attention, {count_h}x{count_w} patches",
                 fontsize=10)
    colorbar = fig.colorbar(heat, cax=cax, orientation="horizontal")
    colorbar.set_label("% of the CLS attention per patch", fontsize=8)
    colorbar.ax.tick_params(labelsize=8)
  kept = 1.0 - sum(m.share for m in maps)  # the rollout row sums to one; the rest stays on CLS
  fig.suptitle(f"{title}\nattention rollout from the CLS token, which keeps {kept:.0%} itself",
               y=1 - 0.1 / fig_h, va="top", fontsize=12)
  fig.savefig(path)


def hse_table(params: dict) -> np.ndarray | None:
  """The learned (G*G, D) HSE table, or None for models without one."""
  try:
    return np.asarray(params["Transformer"]["posembed_input"]["pos_embedding"])[0]
  except KeyError:
    return None


def hse_similarity(table: np.ndarray, grid_size: int) -> np.ndarray:
  """Cosine similarities [G, G, G, G]: [i, j] is the map of position (i, j) against all."""
  table = np.asarray(table, np.float64)
  unit = table / np.maximum(np.linalg.norm(table, axis=-1, keepdims=True), 1e-12)
  return (unit @ unit.T).reshape((grid_size,) * 4).astype(np.float32)


def hse_mosaic(similarity: np.ndarray, gap: int = 1) -> np.ndarray:
  """The G x G maps tiled into one image, position (i, j)'s map at tile (i, j); NaN gaps."""
  grid = similarity.shape[0]
  tile = grid + gap
  mosaic = np.full((grid * tile - gap,) * 2, np.nan, np.float32)
  for i in range(grid):
    for j in range(grid):
      mosaic[i * tile:i * tile + grid, j * tile:j * tile + grid] = similarity[i, j]
  return mosaic


def draw_hse(similarity: np.ndarray, path: str) -> None:
  grid = similarity.shape[0]
  fig = figure.Figure(figsize=(7.5, 7), dpi=DPI, layout="constrained")
  ax = fig.subplots()
  cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.3")  # dark gaps between the tiles
  image = ax.imshow(np.ma.masked_invalid(hse_mosaic(similarity)), cmap=cmap, vmin=-1, vmax=1,
                    interpolation="nearest")
  centres = np.arange(grid) * (grid + 1) + (grid - 1) / 2
  ax.set_xticks(centres, [str(j) for j in range(grid)])
  ax.set_yticks(centres, [str(i) for i in range(grid)])
  ax.tick_params(length=0)
  ax.set_xlabel("grid column j")
  ax.set_ylabel("grid row i")
  ax.set_title(f"HSE cosine similarity, {grid}x{grid} grid\n"
               "tile (i, j): position (i, j)'s embedding against every position")
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="cosine similarity")
  fig.savefig(path)
