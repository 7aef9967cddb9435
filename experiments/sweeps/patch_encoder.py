"""Patch encoder ablation on AVA (paper: linear 0.703/0.716, simple conv 0.717/0.731,
5-layer ResNet 0.726/0.738)."""

import ml_collections

from experiments.sweeps.base import Run


def runs(config: ml_collections.ConfigDict) -> list[Run]:
  del config  # absolute settings
  return [
      Run("linear", {"model.patch_encoder": "linear"}, "linear projection", (0.703, 0.716)),
      Run("conv", {"model.patch_encoder": "conv"}, "simple conv", (0.717, 0.731)),
      Run("resnet", {"model.patch_encoder": "resnet"}, "5-layer ResNet", (0.726, 0.738)),
  ]
