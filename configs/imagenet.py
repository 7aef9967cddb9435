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
  config = defaults.get_config()
  config.dataset.name = "imagenet2012"  # prepared by tfds itself (not one of mst.data.datasets)
  # imagenet2012's test split has no labels, so `validation` (the default eval_split) is the
  # held-out set: it is evaluated during training for a curve, nothing is chosen on it (the last
  # step is kept), and there is no separate final test.
  config.dataset.test_split = ""
  config.eval.select = "last"
  # Mixup makes soft targets: the pipeline one-hot encodes `label` and mixes it into `dist`
  # (evaluation still scores top-1 accuracy against `label`).
  config.dataset.label = "dist"
  config.augment.crop = True
  config.augment.randaugment_layers = 2
  config.augment.randaugment_magnitude = 15
  config.augment.mixup_alpha = 0.2
  config.model.num_classes = 1000
  config.model.head = "classification"
  config.optim.name = "adamw"  # b1, b2: the defaults, the paper's (0.9, 0.999)
  config.optim.learning_rate = 1e-3
  config.optim.weight_decay = 0.1  # the paper's
  config.optim.warmup_steps = 10_000
  config.optim.grad_clip_norm = 1.0  # ViT's pre-training value; the paper and official code: none
  # The official encoder's defaults (the paper gives none); stochastic depth stays 0, its default.
  config.model.dropout_rate = 0.1
  config.model.attention_dropout_rate = 0.1
  config.loss.name = "cross_entropy"
  config.train.batch_size = 4096
  config.train.num_epochs = 300
  config.train.eval_every_steps = 5000
  config.train.checkpoint_every_steps = 5000
  config.eval.bootstrap_samples = 0  # classification: accuracy, no rank correlations
  return defaults.apply_variants(config, arg)
