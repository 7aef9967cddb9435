"""Fine-tuning on your own images: a CSV (`image,mos[,split]`) and an image folder.

    mst-train --config=configs/custom.py --workdir=/tmp/mine \
        --config.dataset.csv=/data/mine/labels.csv --config.dataset.image_dir=/data/mine/images

Without a `split` column the builder makes a seeded 80/10/10 train/validation/test split
(`dataset.split_seed`). The optimisation is KonIQ-10k's (SGD, cosine from 2e-3, 30 epochs,
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
  args = defaults.parse_arg(arg, VARIANTS)
  config = defaults.get_config()
  config.dataset.name = "custom"
  config.dataset.csv = ""  # required: your labels CSV (the trainer stops if it is empty)
  config.dataset.image_dir = ""  # default: the CSV's folder
  config.dataset.label = "mos"
  # MOS on 0-100 is trained as MOS / 100; set 1 for a 1-5 or 1-10 scale.
  config.dataset.mos_scale = 100.0
  config.init.checkpoint = defaults.IMAGENET_CHECKPOINT
  config.init.head_bias_from_train_mean = True
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
  if "scratch" in args:
    scratch(config)
  if "runlocal" in args:
    defaults.runlocal(config)
  return config


def scratch(config: ml_collections.ConfigDict) -> None:
  """From scratch (no pre-trained file) on a CPU in minutes, for a few hundred to a few thousand
  images: the demo's small model with l = 48, a gentler AdamW (3e-4, the embedding kernel's rate
  x 0.03), which learned where the demo's optimisation collapsed, and regularisation against
  memorising a few hundred images (dropout 0.1, random crops, weight decay 0.05); chosen by
  measurement on two sets (experiments/scratch_recipe.py, README "Training on your own images
  from scratch")."""
  config.init.checkpoint = "none"  # from scratch, on purpose: no pre-trained file needed
  config.dataset.shuffle_buffer = 4096
  config.preprocess.longer_side_lengths = (64,)
  config.preprocess.max_seq_len = 48
  config.model.hidden_size = 64
  config.model.num_layers = 2
  config.model.num_heads = 4
  config.model.mlp_dim = 128
  config.model.patch_encoder = "conv"
  config.model.dropout_rate = 0.1
  # Distortions survive a crop; which photo it is, less so.
  config.augment.crop = True
  config.augment.crop_area = (0.25, 1.0)
  config.init.head_bias_from_train_mean = True
  config.optim.name = "adamw"
  config.optim.learning_rate = 3e-4
  config.optim.weight_decay = 0.05
  config.optim.schedule = "cosine"
  config.optim.warmup_steps = 20
  config.optim.lr_multipliers = (("^embedding/kernel$", 0.03),)
  config.loss.name = "l1"
  # Measured on 280 training images (README): 600 steps of batch 16 with the evaluations took
  # about 8 minutes on 2 CPU cores; raise num_steps for a few thousand images.
  config.train.batch_size = 16
  config.train.num_steps = 600
  config.train.log_every_steps = 50
  config.train.eval_every_steps = 100
  config.train.checkpoint_every_steps = 200
  config.eval.batch_size = 64
  config.eval.bootstrap_samples = 200
