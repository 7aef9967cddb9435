"""Fine-tuning on SPAQ (paper: SRCC 0.917, PLCC 0.921).

The paper's setting: from the ImageNet pre-trained model (`init.checkpoint`, default
~/musiq/imagenet_pretrain.npz), SGD with momentum 0.9, cosine decay from 1e-4 over 30 epochs,
batch 128, random horizontal flips, L1 loss on the MOS on its 0-100 scale (the scale
spaq_ckpt.npz predicts on), l = 512, scales (224, 384, native), images resized so the shorter side
is 512 (the `shorter_side_512` builder config, stored losslessly).

SPAQ has no official split. The paper reports a random 80/20 train/test split; the builder's
`test` is a seeded 20%, and its `validation` a seeded 10% of the other 80%, so training here sees
72% of the images and the test metrics come from the parameters with the best validation SRCC.
For the paper's 80% (and no selection: the last step), pass
`--config.dataset.train_split=train+validation --config.dataset.eval_split=''
--config.eval.select=last`.
"""

import ml_collections

from mst.config import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """SPAQ fine-tuning; `arg` may be "runlocal"."""
  config = defaults.get_config()
  defaults.paper_finetune(config, dataset="spaq/shorter_side_512", learning_rate=1e-4,
                          batch_size=128, epochs=30)
  return defaults.apply_variants(config, arg)
