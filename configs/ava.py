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
  args = defaults.parse_arg(arg, VARIANTS)
  config = defaults.get_config()
  config.dataset.name = "ava"
  config.dataset.train_split = "train+validation"  # all non-test images, as the paper
  config.dataset.eval_split = ""
  config.eval.select = "last"
  config.dataset.label = "dist"
  config.dataset.mos_scale = 1.0  # the distribution is trained; scores are expected bins 1..10
  config.model.num_classes = 10
  config.model.head = "distribution"
  config.init.checkpoint = defaults.IMAGENET_CHECKPOINT
  config.optim.name = "sgd"
  config.optim.learning_rate = 0.12
  config.optim.schedule = "cosine"
  # Regularisation, which the paper does not state for fine-tuning:
  config.model.dropout_rate = 0.0  # the released checkpoints' model config (official code)
  config.model.attention_dropout_rate = 0.0  # the released checkpoints' model config
  config.model.stochastic_depth = 0.0  # the official encoder's default
  config.optim.weight_decay = 0.0  # the paper decays weights in pre-training only
  config.optim.grad_clip_norm = 0.0  # off: neither the paper nor the official code clips
  config.loss.name = "emd"
  config.loss.emd_r = 2.0
  config.train.batch_size = 512
  config.train.num_epochs = 20.0
  config.eval.ava_metrics = True
  if "holdout" in args:
    config.dataset.train_split = "train"
    config.dataset.eval_split = "validation"
    config.eval.select = "best"
  if "runlocal" in args:
    defaults.runlocal(config)
  return config
