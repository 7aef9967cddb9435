"""Fine-tuning on AVA (paper: accuracy 0.815, MSE 0.242, SRCC 0.726, PLCC 0.738).

The paper's setting: from the ImageNet pre-trained model (`init.checkpoint`, default
~/musiq/imagenet_pretrain.npz), SGD with momentum 0.9, cosine decay from 0.12 over 20 epochs,
batch 512, random horizontal flips, EMD loss (r = 2) on the 10-bin score distribution with a
distribution head (score = expected bin, 1..10, the scale ava_ckpt.npz predicts on), l = 512,
scales (224, 384, native); binary accuracy at threshold 5.

As in the paper, training uses every non-test image (the builder's `train` and `validation`
together), so there is no validation split to choose on: the test metrics are the last step's.
The `holdout` variant (`configs/ava.py:holdout`) trains on `train` alone and evaluates the 5%
`validation` hold-out during training, for a validation curve and best-on-validation selection.
"""

import ml_collections

from mst.config import defaults

VARIANTS = defaults.VARIANTS + ("holdout",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """AVA fine-tuning; `arg` may be "runlocal" and/or "holdout"."""
  config = defaults.get_config()
  defaults.paper_finetune(config, dataset="ava", learning_rate=0.12, batch_size=512, epochs=20)
  config.dataset.train_split = "train+validation"  # all non-test images, as the paper
  config.dataset.eval_split = ""
  config.eval.select = "last"
  config.dataset.label = "dist"  # EMD (r = 2, the default emd_r) on the 10-bin distribution
  config.loss.name = "emd"
  config.model.num_classes = 10
  config.model.head = "distribution"  # scores are expected bins 1..10 (mos_scale stays 1)
  config.eval.ava_metrics = True
  return defaults.apply_variants(config, arg, holdout=holdout)


def holdout(config: ml_collections.ConfigDict) -> None:
  """Trains on `train` alone and evaluates the 5% `validation` hold-out during training, for a
  validation curve and best-on-validation selection."""
  config.dataset.train_split = "train"
  config.dataset.eval_split = "validation"
  config.eval.select = "best"
