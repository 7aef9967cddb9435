"""Spatial embedding ablation on AVA (paper: none 0.704/0.716, fixed-length 0.707/0.722,
HSE 0.726/0.738 SRCC/PLCC), plus the HSE grid size G (the paper model uses G = 10)."""

import ml_collections

from experiments.sweeps.base import Run

HSE_GRIDS = (5, 10, 15)
PAPER_HSE_GRID = 10


def runs(config: ml_collections.ConfigDict) -> list[Run]:
  del config  # absolute settings
  result = [
      Run("none", {"model.spatial_embedding": "none"}, "no spatial embedding", (0.704, 0.716)),
      Run("fixed", {"model.spatial_embedding": "fixed"}, "fixed length", (0.707, 0.722)),
  ]
  for grid in HSE_GRIDS:
    paper = (0.726, 0.738) if grid == PAPER_HSE_GRID else None
    result.append(Run(f"hse_g{grid}", {"model.spatial_embedding": "hse",
                                       "preprocess.grid_size": grid}, f"HSE, G={grid}", paper))
  return result
