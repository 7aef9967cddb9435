"""Training in bfloat16 (`model.dtype='bfloat16'`): the layers compute in bfloat16, the parameters
and their updates stay float32, and the loss still falls. A short mst-train run on conftest's
`csv_dataset` (16 training images, MOS rising with brightness) on the 8 CPU devices."""

import jax
import numpy as np
import pytest

from mst.configure import resolve
from mst.training import trainer
from support.configs import tiny_run_config
from support.runs import logged_scalars
from support.runs import workdir_params

STEPS = 12


@pytest.mark.slow
def test_bfloat16_training_keeps_float32_params_and_lowers_the_loss(csv_dataset,
                                                                     tmp_path_factory):
  config = tiny_run_config(
      csv_dataset, tmp_path_factory.getbasetemp() / "tfds",
      dataset__eval_split="", dataset__test_split="",  # training alone
      model__dtype="bfloat16",
      # The smallest model: compiling the train step is most of a CPU run's time.
      model__patch_encoder="linear", model__num_layers=1,
      # Start from a zero prediction, far from the labels (MOS / 100, about 0.5 on average), so
      # that a few steps have a clear loss to lower.
      init__head_bias_from_train_mean=False,
      # The CPU recipe's optimizer (mst.config.defaults.cpu_from_scratch), which does not collapse.
      optim__name="adamw", optim__learning_rate=1e-3,
      optim__lr_multipliers=(("^embedding/kernel$", 0.03),),
      train__num_steps=STEPS, train__checkpoint_every_steps=STEPS)
  workdir = tmp_path_factory.mktemp("bf16")
  trainer.train_and_evaluate(resolve.run(config, jax.device_count()), str(workdir))

  params = workdir_params(workdir)
  assert {name: value.dtype for name, value in params.items()} == {
      name: np.dtype(np.float32) for name in params}
  losses = logged_scalars(str(workdir), "train/loss")
  assert sorted(losses) == list(range(1, STEPS + 1))
  early, late = np.mean([losses[s] for s in (1, 2, 3)]), np.mean([losses[s] for s in (10, 11, 12)])
  assert np.isfinite(late) and late < 0.7 * early, losses
