"""`Run`: everything a training run is, typed and checked. `mst.configure.resolve.run` builds it
from a config once, at the edge (building it is validation); the trainer and its data read only
this.
"""

import dataclasses
from typing import Any

from mst.data import augmentation
from mst.data import multiscale
from mst.data import source
from mst.evaluation import evaluate
from mst.models import musiq
from mst.training import losses
from mst.training import optim


# The typed sections of a config. Their defaults are written once, in mst.config.defaults, and
# `mst.configure.resolve` fills every field from the config, so these have none.


@dataclasses.dataclass(frozen=True)
class Layout:
  """`config.data`: how training batches are laid out (mst.data.packing) and made. `packing` also
  packs several images into each row; `packed_length` 0 chooses the row length from training
  images; `prepared_dir` ("" = off) is where the training split's decode and resizes are stored
  once and read back (mst.data.prepared)."""
  packing: bool
  packed_length: int
  prepared_dir: str


@dataclasses.dataclass(frozen=True)
class Init:
  """`config.init`: the pre-trained `.npz` or workdir to start from (None: from scratch), and
  whether the head bias starts at the mean training label."""
  checkpoint: str | None
  head_bias_from_train_mean: bool


@dataclasses.dataclass(frozen=True)
class Loop:
  """`config.train`: the global batch, the length of the run, how often it logs, evaluates and
  saves, and how it reports its speed (mst.training.throughput)."""
  batch_size: int
  num_epochs: float
  num_steps: int  # -1: from num_epochs
  log_every_steps: int
  eval_every_steps: int
  checkpoint_every_steps: int
  keep_checkpoints: int
  peak_tflops: float  # one device's, for MFU; 0: mst.runtime.devices' table
  profile_steps: tuple[int, int] | None  # (first, last) steps traced; None: none


@dataclasses.dataclass(frozen=True)
class Run:
  """A training run: what it reads, the model it trains and how, and the config it came from
  (`config`, plain JSON values, written to the workdir as config.json)."""
  seed: int
  dataset: source.DatasetSpec
  model: musiq.ModelConfig
  train_preprocess: multiscale.MultiScaleConfig  # l native tokens: fixed shapes
  eval_preprocess: multiscale.MultiScaleConfig  # every native token (unless l = 0)
  augment: augmentation.Augment
  layout: Layout
  optim: optim.OptimConfig
  loss: losses.LossChoice
  loop: Loop
  eval: evaluate.EvalSettings
  init: Init
  config: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)
