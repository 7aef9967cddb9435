"""The IQA papers' protocol: train and test on 10 seeded 80/20 splits of one dataset (by reference
image for the synthetic sets) and report the median (`collect` adds the median and the spread).
Made for configs/iqa.py, whose variant names the dataset; any config of a dataset with
`dataset.split_seed` works (custom datasets without a split column, too)."""

import ml_collections

from experiments.sweeps.base import Run

NUM_SPLITS = 10


def runs(config: ml_collections.ConfigDict) -> list[Run]:
  del config  # absolute settings
  return [Run(f"split{seed}", {"dataset.split_seed": seed}, f"split seed {seed}")
          for seed in range(NUM_SPLITS)]
