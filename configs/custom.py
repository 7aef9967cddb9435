"""Fine-tuning on your own images: a CSV (`image,mos[,split]`) and an image folder.

    mst-train --config=configs/custom.py --workdir=/tmp/mine \
        --config.dataset.csv=/data/mine/labels.csv --config.dataset.image_dir=/data/mine/images

`dataset.csv` is required (the trainer stops if it is empty); `dataset.image_dir` defaults to the
CSV's folder. Without a `split` column the builder makes a seeded 80/10/10 train/validation/test
split (`dataset.split_seed`). The optimisation is KonIQ-10k's (SGD, cosine from 2e-3, 30 epochs,
batch 96, L1): the closest paper setting for a few thousand photos. Like the paper's configs it
starts from the ImageNet pre-trained model (`init.checkpoint`, default
~/musiq/imagenet_pretrain.npz; a released IQA checkpoint such as koniq_ckpt.npz works too);
`--config.init.checkpoint=none` trains from scratch on purpose.
"""

import ml_collections

from mst.config import defaults

VARIANTS = defaults.VARIANTS + ("scratch",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Your own CSV and images; `arg` may be "scratch" (no pre-trained file: a small model from
  scratch on a CPU, see `scratch`) and/or "runlocal"."""
  config = defaults.get_config()
  # KonIQ-10k's row of the paper, on your data.
  defaults.paper_finetune(config, dataset="custom", learning_rate=2e-3, batch_size=96, epochs=30)
  # MOS on 0-100 is trained as MOS / 100; set 1 for a 1-5 or 1-10 scale.
  config.dataset.mos_scale = 100.0
  config.init.head_bias_from_train_mean = True
  return defaults.apply_variants(config, arg, scratch=scratch)


def scratch(config: ml_collections.ConfigDict) -> None:
  """From scratch (no pre-trained file) on a CPU in minutes, for a few hundred to a few thousand
  images: the demo's small model with l = 48, a gentler AdamW (3e-4, the embedding kernel's rate
  x 0.03), which learned where the demo's optimisation collapsed, and regularisation against
  memorising a few hundred images (dropout 0.1, random crops, weight decay 0.05); chosen by
  measurement on two sets (experiments/scratch_recipe.py; docs/training.md, "Training on your own
  images from scratch")."""
  # Measured on 280 training images (docs/benchmarks.md): 600 steps of batch 16 with the
  # evaluations took about 8 minutes on 2 CPU cores; raise num_steps for a few thousand images.
  defaults.cpu_from_scratch(config, max_seq_len=48, learning_rate=3e-4, embedding_lr_factor=0.03,
                            weight_decay=0.05, num_steps=600, eval_every_steps=100,
                            checkpoint_every_steps=200)
  config.model.dropout_rate = 0.1
  # Distortions survive a crop; which photo it is, less so.
  config.augment.crop = True
  config.augment.crop_area = (0.25, 1.0)
