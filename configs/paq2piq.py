"""Fine-tuning on PaQ-2-PiQ (paper: full-size test SRCC 0.646, PLCC 0.739).

The paper's setting: from the ImageNet pre-trained model (`init.checkpoint`, default
~/musiq/imagenet_pretrain.npz), SGD with momentum 0.9, cosine decay from 2e-4 over 10 epochs,
batch 128, random horizontal flips, L1 loss on the MOS on its 0-100 scale (the scale
paq2piq_ckpt.npz predicts on), l = 512, scales (224, 384, native). Validation and test are the
full-size sets; the test metrics come from the parameters with the best validation SRCC
(`--config.eval.select=last` takes the last step's).
"""

import ml_collections

from mst.config import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """PaQ-2-PiQ fine-tuning; `arg` may be "runlocal"."""
  config = defaults.get_config()
  defaults.paper_finetune(config, dataset="paq2piq", learning_rate=2e-4, batch_size=128, epochs=10)
  return defaults.apply_variants(config, arg)
