"""Every config key mst reads, with its default: the base that each task config overrides.

A task config (`configs/koniq.py` ...) calls `get_config()` here and changes values; it never adds
keys (tests/configs/configs_test.py checks that), so a typo in a task config or on the command line
(`--config.optim.learning_rat=...`) fails instead of being ignored. The defaults are the paper's
fine-tuning setup (KonIQ-10k's numbers); a task config states only what differs: its row of the
paper (`paper_finetune`) or its recipe (`cpu_from_scratch`), then its own values.

`arg` (after the colon of `--config=configs/koniq.py:runlocal`) is a comma-separated list of
variants (`apply_variants`); `runlocal` makes everything small enough for a CPU (a tiny model, a
few steps).
"""

from collections.abc import Callable, Sequence
import dataclasses

import ml_collections

from mst.data import augment_config
from mst.data import multiscale

VARIANTS = ("runlocal",)
# Where the paper configs take the ImageNet pre-trained MUSIQ from (`config.init.checkpoint`): the
# released imagenet_pretrain.npz, see docs/training.md. "none" (or "") trains from scratch.
IMAGENET_CHECKPOINT = "~/musiq/imagenet_pretrain.npz"
FROM_SCRATCH = ("", "none")
# What the reported test metrics are computed with: the parameters of the best evaluation of
# `dataset.eval_split` ("best") or those of the last step ("last").
SELECT = ("best", "last")
# The ModelConfig fields that are no keys of `config.model`: copied from `preprocess` (P, G) or
# derived from it (the number of scales, len(longer_side_lengths) + 1).
DERIVED_MODEL_FIELDS = ("patch_size", "grid_size", "num_scales")


def _typed_defaults(cls: type, names: Sequence[str] | None = None, *,
                    exclude: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """A section of the defaults of `cls`'s fields (`names`, else all but `exclude`), in field
  order: a section that mirrors a typed value of the layers below takes its defaults from it, so
  each default is written once."""
  fields = {f.name: f.default for f in dataclasses.fields(cls)}
  section = ml_collections.ConfigDict()
  for name in names or [name for name in fields if name not in exclude]:
    section[name] = fields[name]
  return section


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The base config; `arg` may be "runlocal"."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # parameter init, data order, augmentation and dropout all derive from it

  # Where the examples come from and which label trains the model (mst.data.datasets and
  # mst.data.pipeline).
  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "koniq10k"  # a key of mst.data.datasets.DATASETS (optionally "name/config")
  config.dataset.data_dir = "~/tensorflow_datasets"  # prepared tfds data
  config.dataset.manual_dir = ""  # original downloads, needed once to prepare a dataset
  config.dataset.csv = ""  # custom only: the labels CSV
  config.dataset.image_dir = ""  # custom only: the images (default: the CSV's folder)
  # Seed of the split: custom's 80/10/10 when the CSV has none, and the 80/20 train/test of the
  # IQA evaluation sets (livec, kadid10k, tid2013, live, csiq).
  config.dataset.split_seed = 0
  config.dataset.train_split = "train"
  # Evaluated during training ("" = none); never the test split (resolve.validate refuses it).
  config.dataset.eval_split = "validation"
  config.dataset.test_split = "test"  # evaluated once, after training ("" = none)
  config.dataset.label = "mos"  # what the loss trains on: "mos", "dist" (bins) or "label" (class)
  # MOS is divided by this for training; predictions are multiplied back before metrics, so
  # metrics and predictions.csv are always on the dataset's published scale. 1 for the paper's
  # datasets (trained on 0-100 or 1-10, the scales the released checkpoints predict on).
  config.dataset.mos_scale = 1.0
  config.dataset.shuffle_buffer = 10_000

  # The multi-scale patch representation: P, G and the resized copies' longer sides L_k (() for
  # the native image only) default to mst.data.multiscale.MultiScaleConfig's, the paper's.
  config.preprocess = _typed_defaults(multiscale.MultiScaleConfig,
                                      ("patch_size", "grid_size", "longer_side_lengths"))
  config.preprocess.max_seq_len = 512  # l: native-image tokens at training time (eval keeps all)

  # How training batches are laid out (mst.data.packing). Training always encodes only the real
  # patches; packing also packs several images into each row, with attention kept within each
  # image, so small images (AVA, SPAQ) stop paying for the padding of rows sized for l.
  config.data = ml_collections.ConfigDict()
  config.data.packing = False
  config.data.packed_length = 0  # tokens per packed row; 0 = chosen from training image sizes
  # The prepared input pipeline (mst.data.prepared): a folder (local or gs://) where the training
  # split's decode and resizes are stored once per dataset and preprocessing, then read by every
  # run that shares them, about 4x less host CPU per image. Needs the flip as the only image
  # augmentation (mixup is fine). "" = decode and resize every image every epoch.
  config.data.prepared_dir = ""

  # Training-time augmentation: mst.data.augment_config.Augment's fields and defaults (the flip
  # alone, as fine-tuning uses).
  config.augment = _typed_defaults(augment_config.Augment)

  # The architecture: mst.models.config.ModelConfig's fields and defaults (the paper's model),
  # except patch_size and grid_size (copied from `preprocess`) and num_scales
  # (len(longer_side_lengths) + 1); representation_size 0 is ModelConfig's None (no pre_logits).
  # Imported here, not at the top: the model brings JAX and Flax (over a second), which a console
  # script's --help and usage errors should not wait for.
  from mst.models import musiq  # pylint: disable=g-import-not-at-top
  config.model = _typed_defaults(musiq.ModelConfig, exclude=DERIVED_MODEL_FIELDS)
  config.model.representation_size = 0

  # Where the parameters start.
  config.init = ml_collections.ConfigDict()
  # An official .npz or an mst workdir; "none" (or "") = from scratch. The paper configs set
  # IMAGENET_CHECKPOINT; a missing file stops training at start-up, saying where to get it.
  config.init.checkpoint = "none"
  # Set the head bias to the mean training label (MOS / mos_scale), so training starts from the
  # constant predictor instead of spending its first steps (and the embedding's) getting there.
  config.init.head_bias_from_train_mean = False

  # The optimizer (mst.training.optim).
  config.optim = ml_collections.ConfigDict()
  config.optim.name = "sgd"  # "sgd", "adam" or "adamw"
  config.optim.learning_rate = 2e-3  # the peak, reached after warm-up
  config.optim.momentum = 0.9  # sgd
  config.optim.nesterov = False  # sgd
  config.optim.b1 = 0.9  # adam, adamw
  config.optim.b2 = 0.999  # adam, adamw
  # adamw: decoupled; sgd: L2; kernels only (see mst.training.optim). The paper decays weights in
  # pre-training only.
  config.optim.weight_decay = 0.0
  config.optim.schedule = "cosine"  # "cosine", "linear" or "constant" after the warm-up
  config.optim.warmup_steps = 0  # training steps, linear from 0 to learning_rate
  config.optim.end_learning_rate_factor = 0.0  # the schedule ends at learning_rate * this
  # Clip the global gradient norm; 0 = off (neither the paper nor the official code clips).
  config.optim.grad_clip_norm = 0.0
  # k > 1: update every k steps with the mean gradient (effective batch k * train.batch_size).
  config.optim.grad_accum_steps = 1
  # (regex, multiplier) pairs on the '/'-joined parameter path, e.g.
  # (("^embedding/kernel$", 0.03),); the first matching pattern wins, a pattern that matches
  # nothing is an error. Pairs, not a dict: ConfigDict keys cannot contain the '.' regexes need.
  config.optim.lr_multipliers = ()

  # The loss (mst.training.losses); it must suit dataset.label and model.head.
  config.loss = ml_collections.ConfigDict()
  # A key of mst.training.losses.LOSSES; its entry names the dataset.label and model.head it fits.
  config.loss.name = "l1"
  config.loss.emd_r = 2.0  # the EMD's norm (read by LOSSES["emd"].options)

  # The training loop.
  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 96  # global, per training step
  config.train.num_epochs = 30.0
  config.train.num_steps = -1  # training steps (batches); -1 = from num_epochs
  config.train.log_every_steps = 100
  config.train.eval_every_steps = 1000  # on dataset.eval_split
  config.train.checkpoint_every_steps = 1000
  config.train.keep_checkpoints = 3
  # One device's peak TFLOP/s, the denominator of the logged train/mfu; 0 = the peak of the
  # device kind (mst.runtime.devices: dense bf16), none for a kind it does not know (CPU).
  config.train.peak_tflops = 0.0
  # "first,last" (e.g. "20,25"): a jax.profiler trace of those steps into <workdir>/profile, for
  # TensorBoard's profile tab; "" = none.
  config.train.profile_steps = ""

  # Evaluation: native resolution, all patches, every example once.
  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 32  # global
  config.eval.bootstrap_samples = 1000  # for confidence intervals of SRCC/PLCC; 0 = off
  config.eval.ava_metrics = False  # add AVA's binary accuracy (threshold 5)
  # The test metrics come from the parameters of the best `eval_split` evaluation ("best", by
  # SRCC or accuracy; the last step's when there is no eval_split) or of the last step ("last").
  config.eval.select = "best"
  return apply_variants(config, arg)


def paper_finetune(config: ml_collections.ConfigDict, *, dataset: str, learning_rate: float,
                   batch_size: int, epochs: float) -> None:
  """Sets `config` (from `get_config()`) to the paper's fine-tuning on `dataset`, one row of it.

  The rows differ only in the peak learning rate, the batch size and the epochs; all start from
  the ImageNet pre-trained model. The rest of the recipe is the defaults above (SGD with momentum
  0.9, cosine decay, no warm-up, the flip alone, L1 on the MOS, no dropout, stochastic depth,
  weight decay or clipping); tests/configs/configs_test.py checks every value against the paper.
  """
  config.dataset.name = dataset
  config.init.checkpoint = IMAGENET_CHECKPOINT
  config.optim.learning_rate = learning_rate
  config.train.batch_size = batch_size
  config.train.num_epochs = epochs


def cpu_from_scratch(config: ml_collections.ConfigDict, *, max_seq_len: int, learning_rate: float,
                     embedding_lr_factor: float, weight_decay: float, num_steps: int,
                     eval_every_steps: int, checkpoint_every_steps: int) -> None:
  """Sets `config` to learn from scratch on a CPU in minutes (configs/demo.py, custom.py:scratch).

  A small model (2 layers of width 64, the cheap `conv` patch encoder) sees the native image (at
  most `max_seq_len` patches) and one 64 px copy. AdamW with a 20-step warm-up and cosine decay;
  the `embedding` kernel learns at `embedding_lr_factor` times the rate (its first large steps
  otherwise move every token alike) and the head bias starts at the mean training label: the
  plain recipe collapses to a constant predictor (docs/training.md, "Learning on a CPU").
  """
  config.init.checkpoint = "none"  # from scratch, on purpose: no pre-trained file needed
  config.dataset.shuffle_buffer = 4096
  config.preprocess.longer_side_lengths = (64,)
  config.preprocess.max_seq_len = max_seq_len
  config.model.hidden_size = 64
  config.model.num_layers = 2
  config.model.num_heads = 4
  config.model.mlp_dim = 128
  config.model.patch_encoder = "conv"  # ~4x cheaper per patch than "resnet"; learned better
  config.init.head_bias_from_train_mean = True
  config.optim.name = "adamw"
  config.optim.learning_rate = learning_rate
  config.optim.weight_decay = weight_decay
  config.optim.warmup_steps = 20
  config.optim.lr_multipliers = (("^embedding/kernel$", embedding_lr_factor),)
  config.train.batch_size = 16
  config.train.num_steps = num_steps
  config.train.log_every_steps = 50
  config.train.eval_every_steps = eval_every_steps
  config.train.checkpoint_every_steps = checkpoint_every_steps
  config.eval.batch_size = 64
  config.eval.bootstrap_samples = 200


def apply_variants(config: ml_collections.ConfigDict, arg: str | None,
                   **variants: Callable[[ml_collections.ConfigDict], None]
                   ) -> ml_collections.ConfigDict:
  """`config` with the variants that `arg` names applied: a config file's own `variants` (name=
  function that changes `config`) in the order given, then `runlocal`, last, so that it shrinks
  what they set. An unknown name raises ValueError."""
  args = parse_arg(arg, VARIANTS + tuple(variants))
  for name, apply in variants.items():
    if name in args:
      apply(config)
  if "runlocal" in args:
    runlocal(config)
  return config


def parse_arg(arg: str | None, variants: tuple[str, ...] = VARIANTS) -> frozenset[str]:
  """The set of comma-separated variant names in `arg`; an unknown name raises ValueError."""
  names = frozenset(name.strip() for name in (arg or "").split(",") if name.strip())
  unknown = sorted(names - set(variants))
  if unknown:
    raise ValueError(f"unknown config variant(s) {unknown}; valid: {list(variants)} "
                     "(comma-separated, e.g. 'runlocal')")
  return names


def runlocal(config: ml_collections.ConfigDict) -> None:
  """Makes `config` small and fast enough to train and evaluate on a CPU in seconds.

  Keeps the structure (the patch encoder, two resized scales plus the native image, the head and
  loss), so a runlocal run takes the same code paths as the full one.
  """
  config.dataset.shuffle_buffer = 64
  # From scratch by design: the paper-size ImageNet file would not fit the tiny model, and tests
  # and CPUs run offline.
  config.init.checkpoint = "none"
  config.preprocess.longer_side_lengths = (64, 128)
  config.preprocess.max_seq_len = 32
  config.model.hidden_size = 64
  config.model.num_layers = 2
  config.model.num_heads = 4
  config.model.mlp_dim = 128
  config.optim.warmup_steps = min(config.optim.warmup_steps, 1)
  config.train.batch_size = 8
  config.train.num_steps = 4
  config.train.log_every_steps = 1
  config.train.eval_every_steps = 2
  config.train.checkpoint_every_steps = 2
  config.eval.batch_size = 8
  config.eval.bootstrap_samples = 20
