"""Fine-tuning on KonIQ-10k (paper: SRCC 0.916, PLCC 0.928 on the official test split).

The paper's setting: from the ImageNet pre-trained model (`init.checkpoint`, default
~/musiq/imagenet_pretrain.npz), SGD with momentum 0.9, cosine decay from 2e-3 over 30 epochs,
batch 96, random horizontal flips, L1 loss on the MOS on 0-100 (the scale koniq_ckpt.npz predicts
on: the `MOS` of koniq10k_distributions_sets.csv), l = 512, scales (224, 384, native). The test
metrics come from the parameters with the best validation SRCC (the official 1000-image
validation split); `--config.eval.select=last` takes the last step's instead.
"""

import ml_collections

from mst.config import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """KonIQ-10k fine-tuning; `arg` may be "runlocal"."""
  args = defaults.parse_arg(arg)
  config = defaults.get_config()
  config.dataset.name = "koniq10k"
  config.dataset.label = "mos"
  config.dataset.mos_scale = 1.0  # trained on the 0-100 MOS as it is, like the released model
  config.init.checkpoint = defaults.IMAGENET_CHECKPOINT
  config.optim.name = "sgd"
  config.optim.learning_rate = 2e-3
  config.optim.schedule = "cosine"
  # Regularisation, which the paper does not state for fine-tuning:
  config.model.dropout_rate = 0.0  # the released checkpoints' model config (official code)
  config.model.attention_dropout_rate = 0.0  # the released checkpoints' model config
  config.model.stochastic_depth = 0.0  # the official encoder's default
  config.optim.weight_decay = 0.0  # the paper decays weights in pre-training only
  config.optim.grad_clip_norm = 0.0  # off: neither the paper nor the official code clips
  config.loss.name = "l1"
  config.train.batch_size = 96
  config.train.num_epochs = 30.0
  if "runlocal" in args:
    defaults.runlocal(config)
  return config
