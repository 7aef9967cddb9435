"""Which prepared dataset a run reads (`DatasetSpec`, the typed `config.dataset`) and preparing it
(`build_dataset`), shared by training and `mst-eval`.
"""

import dataclasses
import os
from collections.abc import Mapping

import jax
from jax.experimental import multihost_utils
import tensorflow_datasets as tfds

from mst import errors
from mst.data import datasets
from mst.data.datasets import iqa

LABELS = ("mos", "dist", "label")


class SplitError(errors.BadInput):
  """A split a config names that the dataset does not have."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """`config.dataset`: where the examples come from, which splits a run uses, which label trains
  the model and the factor MOS is divided by for training. No defaults: mst.config.defaults
  holds them and mst.configure.resolve fills every field."""
  name: str
  data_dir: str
  manual_dir: str
  csv: str
  image_dir: str
  split_seed: int
  train_split: str
  eval_split: str
  test_split: str
  label: str
  mos_scale: float
  shuffle_buffer: int

  @property
  def is_custom(self) -> bool:
    return self.name.partition("/")[0] == "custom"


def check_splits(dataset: str, declared: tuple[str, ...] | None, splits: Mapping[str, str],
                 optional: tuple[str, ...] = ()) -> None:
  """Raises SplitError unless each split of `splits` (config key -> split; '' = none) is made of
  `declared` splits. tfds split arithmetic is understood ("train+validation", "train[:90%]");
  `declared` None (a tfds catalogue dataset not prepared yet) checks nothing; keys in `optional`
  may also be ''."""
  for key, value in splits.items():
    if declared is None or not value:
      continue
    names = [part.split("[")[0].strip() for part in value.split("+")]
    if any(name not in declared for name in names):
      raise SplitError(f"{key}={value!r}: dataset {dataset!r} has only the splits "
                       f"{list(declared)}; fix: name one of them"
                       + (" or ''" if key in optional else "") + " (join several with '+')")


def build_dataset(spec: DatasetSpec) -> tfds.core.DatasetBuilder:
  """The prepared tfds builder of `spec`. Process 0 prepares it (once), the others wait and then
  read it, so hosts sharing a data dir never prepare it twice at the same time."""
  kwargs = {}
  if spec.is_custom:
    if not spec.csv:
      raise ValueError("dataset 'custom' needs config.dataset.csv (and config.dataset.image_dir)")
    kwargs = dict(csv=spec.csv, image_dir=spec.image_dir or None, split_seed=spec.split_seed)
    # Every host reads the labels (cheap): a bad CSV stops them all with its problems, rather than
    # process 0 alone while the others wait below for a dataset that never comes.
    datasets.custom.read_labels(os.path.expanduser(spec.csv), spec.split_seed)
  elif _takes_split_seed(spec.name):
    kwargs = dict(split_seed=spec.split_seed)
  data_dir = _expand(spec.data_dir)
  manual_dir = _expand(spec.manual_dir) or None
  build = datasets.build if spec.name.partition("/")[0] in datasets.DATASETS else _tfds_build
  if jax.process_index() == 0:
    builder = build(spec.name, data_dir, manual_dir=manual_dir, **kwargs)
  multihost_utils.sync_global_devices("mst dataset prepared")
  if jax.process_index() != 0:
    builder = build(spec.name, data_dir, manual_dir=manual_dir, **kwargs)
  return builder


def _takes_split_seed(name: str) -> bool:
  """Whether `dataset.split_seed` chooses the split of dataset `name`: a set with a seeded
  train/test split (the IQA evaluation sets), named without a config (`kadid10k/seed_1` names its
  seed itself)."""
  base, _, config_name = name.partition("/")
  builder = datasets.DATASETS.get(base)
  return not config_name and builder is not None and issubclass(builder, iqa.IqaBuilder)


def _tfds_build(name: str, data_dir: str, manual_dir: str | None = None):
  """A dataset of tfds's own catalogue (e.g. `imagenet2012`, from its manual download)."""
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, try_download_gcs=False))
  return builder


def _expand(path: str) -> str:
  return os.path.expanduser(path) if path else path
