"""Scale embedding (SCE) on and off, on AVA (paper: with 0.726/0.738, without 0.717/0.729)."""

import ml_collections

from experiments.sweeps.base import Run


def runs(config: ml_collections.ConfigDict) -> list[Run]:
  del config  # absolute settings
  return [
      Run("sce", {"model.use_scale_embedding": True}, "with SCE", (0.726, 0.738)),
      Run("no_sce", {"model.use_scale_embedding": False}, "without SCE", (0.717, 0.729)),
  ]
