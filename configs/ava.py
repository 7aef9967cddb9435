"""Fine-tuning on AVA (paper: accuracy 0.815, MSE 0.242, SRCC 0.726, PLCC 0.738).

The paper's setting: SGD with momentum 0.9, cosine decay from 0.12 over 20 epochs, batch 512,
random horizontal flips, EMD loss (r = 2) on the 10-bin score distribution with a distribution
head (score = expected bin, 1..10), l = 512, scales (224, 384, native); binary accuracy at
threshold 5. The paper fine-tunes from the ImageNet pre-trained model: set
`--config.init.checkpoint=/path/to/imagenet_pretrain.npz`.
"""

import ml_collections

from mst.config import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """AVA fine-tuning; `arg` may be "runlocal"."""
  args = defaults.parse_arg(arg)
  config = defaults.get_config()
  config.dataset.name = "ava"
  config.dataset.label = "dist"
  config.dataset.mos_scale = 1.0  # the distribution is trained; scores are expected bins 1..10
  config.model.num_classes = 10
  config.model.head = "distribution"
  config.optim.name = "sgd"
  config.optim.learning_rate = 0.12
  config.optim.schedule = "cosine"
  config.loss.name = "emd"
  config.loss.emd_r = 2.0
  config.train.batch_size = 512
  config.train.num_epochs = 20.0
  config.eval.ava_metrics = True
  if "runlocal" in args:
    defaults.runlocal(config)
  return config
