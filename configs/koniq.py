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
  config = defaults.get_config()
  defaults.paper_finetune(config, dataset="koniq10k", learning_rate=2e-3, batch_size=96, epochs=30)
  return defaults.apply_variants(config, arg)
