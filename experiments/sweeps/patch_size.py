"""Patch size P on AVA (paper: 16: 0.715/0.729, 32: 0.726/0.738, 48: 0.713/0.727,
64: 0.705/0.719). G stays at the config's value (10)."""

import ml_collections

from experiments.sweeps.base import Run

PAPER = {16: (0.715, 0.729), 32: (0.726, 0.738), 48: (0.713, 0.727), 64: (0.705, 0.719)}


def runs(config: ml_collections.ConfigDict) -> list[Run]:
  del config  # absolute settings
  return [Run(f"p{size}", {"preprocess.patch_size": size}, f"{size}", paper)
          for size, paper in PAPER.items()]
