"""A learning-rate x batch-size grid around the config's own values (its paper setting).

Relative, so one grid serves every task config: AVA's 0.12 x 512 gives 0.06 ... 0.24 and
256 ... 1024. The other settings (epochs, schedule) stay; the number of steps follows the batch.
"""

import ml_collections

from experiments.sweeps.base import Run

LR_FACTORS = (0.5, 1.0, 2.0)
BATCH_FACTORS = (0.5, 1.0, 2.0)


def runs(config: ml_collections.ConfigDict) -> list[Run]:
  result = []
  for batch_factor in BATCH_FACTORS:
    batch = max(1, round(config.train.batch_size * batch_factor))
    for lr_factor in LR_FACTORS:
      lr = float(config.optim.learning_rate) * lr_factor
      result.append(Run(f"lr{lr:g}_b{batch}",
                        {"optim.learning_rate": lr, "train.batch_size": batch},
                        f"lr {lr:g}, batch {batch}"))
  return result
