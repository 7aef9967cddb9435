"""Fine-tuning on KonIQ-10k (paper: SRCC 0.916, PLCC 0.928 on the official test split).

The paper's setting: SGD with momentum 0.9, cosine decay from 2e-3 over 30 epochs, batch 96,
random horizontal flips, L1 loss on the MOS (1-5), l = 512, scales (224, 384, native). The paper
fine-tunes from the ImageNet pre-trained model: set
`--config.init.checkpoint=/path/to/imagenet_pretrain.npz` (the default trains from scratch).
"""

import ml_collections

from mst.config import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """KonIQ-10k fine-tuning; `arg` may be "runlocal"."""
  args = defaults.parse_arg(arg)
  config = defaults.get_config()
  config.dataset.name = "koniq10k"
  config.dataset.label = "mos"
  config.dataset.mos_scale = 1.0  # MOS is already on 1-5
  config.optim.name = "sgd"
  config.optim.learning_rate = 2e-3
  config.optim.schedule = "cosine"
  config.loss.name = "l1"
  config.train.batch_size = 96
  config.train.num_epochs = 30.0
  if "runlocal" in args:
    defaults.runlocal(config)
  return config
