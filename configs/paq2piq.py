"""Fine-tuning on PaQ-2-PiQ (paper: full-size test SRCC 0.646, PLCC 0.739).

The paper's setting: SGD with momentum 0.9, cosine decay from 2e-4 over 10 epochs, batch 128,
random horizontal flips, L1 loss on the MOS (0-100, trained as MOS / 100), l = 512, scales
(224, 384, native). Validation and test are the full-size sets. The paper fine-tunes from the
ImageNet pre-trained model: set `--config.init.checkpoint=/path/to/imagenet_pretrain.npz`.
"""

import ml_collections

from mst.config import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """PaQ-2-PiQ fine-tuning; `arg` may be "runlocal"."""
  args = defaults.parse_arg(arg)
  config = defaults.get_config()
  config.dataset.name = "paq2piq"
  config.dataset.label = "mos"
  config.dataset.mos_scale = 100.0
  config.optim.name = "sgd"
  config.optim.learning_rate = 2e-4
  config.optim.schedule = "cosine"
  config.loss.name = "l1"
  config.train.batch_size = 128
  config.train.num_epochs = 10.0
  if "runlocal" in args:
    defaults.runlocal(config)
  return config
