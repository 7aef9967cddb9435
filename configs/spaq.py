"""Fine-tuning on SPAQ (paper: SRCC 0.917, PLCC 0.921).

The paper's setting: SGD with momentum 0.9, cosine decay from 1e-4 over 30 epochs, batch 128,
random horizontal flips, L1 loss on the MOS (0-100, trained as MOS / 100), l = 512, scales
(224, 384, native), images resized so the shorter side is 512 (the `shorter_side_512` builder
config). SPAQ has no official split: the builder's seeded 80/20 train/test, so the test split is
also the one evaluated during training. The paper fine-tunes from the ImageNet pre-trained model:
set `--config.init.checkpoint=/path/to/imagenet_pretrain.npz`.
"""

import ml_collections

from mst.config import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """SPAQ fine-tuning; `arg` may be "runlocal"."""
  args = defaults.parse_arg(arg)
  config = defaults.get_config()
  config.dataset.name = "spaq/shorter_side_512"
  config.dataset.eval_split = "test"
  config.dataset.test_split = "test"
  config.dataset.label = "mos"
  config.dataset.mos_scale = 100.0
  config.optim.name = "sgd"
  config.optim.learning_rate = 1e-4
  config.optim.schedule = "cosine"
  config.loss.name = "l1"
  config.train.batch_size = 128
  config.train.num_epochs = 30.0
  if "runlocal" in args:
    defaults.runlocal(config)
  return config
