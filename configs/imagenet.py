"""Pre-training on ImageNet-1k (tfds `imagenet2012`): the start of the paper's fine-tuning runs.

The paper's setting: Adam (0.9, 0.999) with weight decay 0.1, cosine decay from 1e-3, batch 4096,
300 epochs, l = 512, random crops without resizing (varied sizes and aspect ratios), RandAugment and
mixup, 1000-way classification with cross-entropy. The paper does not give the warm-up length,
RandAugment's layers and magnitude, mixup's alpha, the clipping or the dropout: the values below
are the usual ViT / DeiT ones, and the official MUSIQ encoder's defaults for dropout and
stochastic depth. Weight decay is decoupled and multiplied by the learning rate (optax adamw, as
the original ViT code did) and applies to kernels only.
"""

import ml_collections

from mst.config import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """ImageNet pre-training; `arg` may be "runlocal"."""
  args = defaults.parse_arg(arg)
  config = defaults.get_config()
  config.dataset.name = "imagenet2012"  # prepared by tfds itself (not one of mst.data.datasets)
  # imagenet2012's test split has no labels, so `validation` is the held-out set: it is
  # evaluated during training for a curve, nothing is chosen on it (the last step is kept), and
  # there is no separate final test.
  config.dataset.eval_split = "validation"
  config.dataset.test_split = ""
  config.eval.select = "last"
  # Mixup makes soft targets: the pipeline one-hot encodes `label` and mixes it into `dist`
  # (evaluation still scores top-1 accuracy against `label`).
  config.dataset.label = "dist"
  config.dataset.mos_scale = 1.0
  config.augment.crop = True
  config.augment.randaugment_layers = 2
  config.augment.randaugment_magnitude = 15
  config.augment.mixup_alpha = 0.2
  config.model.num_classes = 1000
  config.model.head = "classification"
  config.optim.name = "adamw"
  config.optim.learning_rate = 1e-3
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.weight_decay = 0.1  # the paper's
  config.optim.schedule = "cosine"
  config.optim.warmup_steps = 10_000
  config.optim.grad_clip_norm = 1.0  # ViT's pre-training value; the paper and official code: none
  config.model.dropout_rate = 0.1  # the official encoder's default (the paper gives none)
  config.model.attention_dropout_rate = 0.1  # the official encoder block's default
  config.model.stochastic_depth = 0.0  # the official encoder's default
  config.loss.name = "cross_entropy"
  config.train.batch_size = 4096
  config.train.num_epochs = 300.0
  config.train.eval_every_steps = 5000
  config.train.checkpoint_every_steps = 5000
  config.eval.bootstrap_samples = 0  # classification: accuracy, no rank correlations
  if "runlocal" in args:
    defaults.runlocal(config)
  return config
