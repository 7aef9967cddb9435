"""Fine-tuning on your own images: a CSV (`image,mos[,split]`) and an image folder.

    mst-train --config=configs/custom.py --workdir=/tmp/mine \
        --config.dataset.csv=/data/mine/labels.csv --config.dataset.image_dir=/data/mine/images

Without a `split` column the builder makes a seeded 80/10/10 train/validation/test split
(`dataset.split_seed`). The optimisation is KonIQ-10k's (SGD, cosine from 2e-3, 30 epochs,
batch 96, L1): the closest paper setting for a few thousand photos. For small sets start from the
ImageNet pre-trained model (`--config.init.checkpoint=/path/to/imagenet_pretrain.npz`) or from a
released IQA checkpoint such as koniq_ckpt.npz.
"""

import ml_collections

from mst.config import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Your own CSV and images; `arg` may be "runlocal"."""
  args = defaults.parse_arg(arg)
  config = defaults.get_config()
  config.dataset.name = "custom"
  config.dataset.csv = ""  # required: your labels CSV (the trainer stops if it is empty)
  config.dataset.image_dir = ""  # default: the CSV's folder
  config.dataset.label = "mos"
  # MOS on 0-100 is trained as MOS / 100; set 1 for a 1-5 or 1-10 scale.
  config.dataset.mos_scale = 100.0
  config.init.head_bias_from_train_mean = True
  config.optim.name = "sgd"
  config.optim.learning_rate = 2e-3
  config.optim.schedule = "cosine"
  config.loss.name = "l1"
  config.train.batch_size = 96
  config.train.num_epochs = 30.0
  if "runlocal" in args:
    defaults.runlocal(config)
  return config
