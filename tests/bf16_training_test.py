"""Training in bfloat16 (`model.dtype='bfloat16'`): the layers compute in bfloat16, the parameters
and their updates stay float32, and the loss still falls. A short mst-train run on conftest's
`csv_dataset` (16 training images, MOS rising with brightness) on the 8 CPU devices."""

import flax.traverse_util
import jax
import numpy as np
import pytest

from mst.checkpoints import workdirs
from mst.configure import overrides
from mst.configure import resolve
from mst.training import trainer
from helpers import logged_scalars

STEPS = 12


@pytest.mark.slow
def test_bfloat16_training_keeps_float32_params_and_lowers_the_loss(csv_dataset,
                                                                     tmp_path_factory):
  config = overrides.load_config("configs/custom.py", "runlocal")
  config.dataset.csv = str(csv_dataset)
  config.dataset.data_dir = str(tmp_path_factory.getbasetemp() / "tfds")
  config.dataset.eval_split = config.dataset.test_split = ""  # training alone
  config.model.dtype = "bfloat16"
  # The smallest model: compiling the train step is most of a CPU run's time.
  config.model.patch_encoder = "linear"
  config.model.num_layers = 1
  # Start from a zero prediction, far from the labels (MOS / 100, about 0.5 on average), so
  # that a few steps have a clear loss to lower.
  config.init.head_bias_from_train_mean = False
  # The CPU recipe's optimizer (mst.config.defaults.cpu_from_scratch), which does not collapse.
  config.optim.name = "adamw"
  config.optim.learning_rate = 1e-3
  config.optim.lr_multipliers = (("^embedding/kernel$", 0.03),)
  config.train.num_steps = STEPS
  config.train.checkpoint_every_steps = STEPS
  workdir = tmp_path_factory.mktemp("bf16")
  trainer.train_and_evaluate(resolve.run(config, jax.device_count()), str(workdir))

  params = flax.traverse_util.flatten_dict(workdirs.load_params(str(workdir))[0], sep="/")
  assert {name: value.dtype for name, value in params.items()} == {
      name: np.dtype(np.float32) for name in params}
  losses = logged_scalars(str(workdir), "train/loss")
  assert sorted(losses) == list(range(1, STEPS + 1))
  early, late = np.mean([losses[s] for s in (1, 2, 3)]), np.mean([losses[s] for s in (10, 11, 12)])
  assert np.isfinite(late) and late < 0.7 * early, losses
