"""Configs for the tests that train: `tiny_run_config`, configs/custom.py on a tiny CSV dataset,
built in one place (the trainer, throughput, bf16, collapse, lowering, mst-eval and scratch recipe
tests), and `set_fields` for the changes each test makes to it."""

from mst.configure import overrides
from support import REPO

# The patch encoder of the tests about how a run goes (checkpoints, resume, preemption, several
# processes, logging, evaluation), not about the encoder: a runlocal mst-train run compiles and
# trains in under half the ResNet's time (28 s against 62 s, one run each). The ResNet still
# trains end to end in compat_test (resuming the release's workdir) and protocol_test.
FAST_ENCODER = "linear"


def set_fields(config, **changes):
  """Sets `section__name=value` changes on an ml_collections config (keyword arguments cannot
  hold dots); returns the config."""
  for key, value in changes.items():
    section, name = key.split("__")
    setattr(config[section], name, value)
  return config


def tiny_run_config(csv, data_dir=None, variant="runlocal", **changes):
  """configs/custom.py:`variant` (runlocal: the small CPU model and a few steps; scratch: the
  from-scratch recipe) on the custom CSV dataset `csv`, its tfds files prepared in `data_dir`
  (None: the config's own), with `section__name=value` changes; the config, not yet resolved."""
  config = overrides.load_config(str(REPO / "configs" / "custom.py"), variant)
  config.dataset.csv = str(csv)
  if data_dir is not None:
    config.dataset.data_dir = str(data_dir)
  return set_fields(config, **changes)
