"""The data side of a training run: the prepared dataset, the number of steps, the global training
batches from any step, evaluators for the other splits, and label statistics for initialisation.
"""

import math
import os

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mst.config import resolve
from mst.data import datasets
from mst.data import packing
from mst.data import pipeline
from mst.evaluation import evaluate
from mst.runtime import sharding


def build_dataset(config: ml_collections.ConfigDict):
  """The prepared tfds builder of `config.dataset`. Process 0 prepares it (once), the others wait
  and then read it, so hosts sharing a data dir never prepare it twice at the same time."""
  spec = config.dataset
  kwargs = {}
  if spec.name.partition("/")[0] == "custom":
    if not spec.csv:
      raise ValueError("dataset 'custom' needs config.dataset.csv (and config.dataset.image_dir)")
    kwargs = dict(csv=spec.csv, image_dir=spec.image_dir or None, split_seed=spec.split_seed)
    # Every host reads the labels (cheap): a bad CSV stops them all with its problems, rather than
    # process 0 alone while the others wait below for a dataset that never comes.
    datasets.custom.read_labels(os.path.expanduser(spec.csv), spec.split_seed)
  data_dir = _expand(spec.data_dir)
  manual_dir = _expand(spec.manual_dir) or None
  build = datasets.build if spec.name.partition("/")[0] in datasets.DATASETS else _tfds_build
  if jax.process_index() == 0:
    builder = build(spec.name, data_dir, manual_dir=manual_dir, **kwargs)
  multihost_utils.sync_global_devices("mst dataset prepared")
  if jax.process_index() != 0:
    builder = build(spec.name, data_dir, manual_dir=manual_dir, **kwargs)
  return builder


def _tfds_build(name: str, data_dir: str, manual_dir: str | None = None):
  """A dataset of tfds's own catalogue (e.g. `imagenet2012`, from its manual download)."""
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, try_download_gcs=False))
  return builder


def _expand(path: str) -> str:
  return os.path.expanduser(path) if path else path


class TrainingData:
  """Everything a training run reads, for this host."""

  def __init__(self, config: ml_collections.ConfigDict, mesh):
    self.config = config
    self.mesh = mesh
    self.builder = build_dataset(config)
    splits = self.builder.info.splits
    for split in (config.dataset.train_split, config.dataset.eval_split,
                  config.dataset.test_split):
      if split and any(part not in splits for part in split.split("+")):
        raise ValueError(f"dataset {config.dataset.name} has no split {split!r}; it has "
                         f"{sorted(splits)}")
    self.num_train = splits[config.dataset.train_split].num_examples
    num_devices = mesh.devices.size
    if config.train.batch_size % num_devices:
      raise ValueError(f"train.batch_size={config.train.batch_size} must be a multiple of the "
                       f"{num_devices} devices")
    self.per_device = config.train.batch_size // num_devices
    if self.num_train < num_devices:
      raise ValueError(f"{self.num_train} training examples cannot feed {num_devices} devices")
    self.packed_length = self._packed_length() if config.data.packing else 0

  @property
  def total_steps(self) -> int:
    train = self.config.train
    if train.num_steps > 0:
      return int(train.num_steps)
    return max(1, math.ceil(train.num_epochs * self.num_train / train.batch_size))

  def train_batches(self, start_step: int):
    """Global batches for steps start_step + 1, start_step + 2, ... (an endless iterator)."""
    config = self.config
    data = pipeline.sharded_train_dataset(
        self.builder, config.dataset.train_split,
        shards=sharding.local_device_positions(self.mesh), num_shards=self.mesh.devices.size,
        batch_size_per_shard=self.per_device, pp_config=resolve.preprocess_config(config, True),
        augment=resolve.augment_config(config), seed=config.seed, start_step=start_step,
        shuffle_buffer=config.dataset.shuffle_buffer, num_classes=config.model.num_classes)
    data_sharding = sharding.data_sharding(self.mesh)
    scale = float(config.dataset.mos_scale)
    shards = len(sharding.local_device_positions(self.mesh))
    for batch in data.as_numpy_iterator():
      if "mos" in batch:
        batch["mos"] = batch["mos"] / scale
      if self.packed_length:
        batch = packing.packed_layout(batch, shards, self.packed_length, _agree_max)
      else:
        batch = packing.padded_layout(batch, shards, _agree_max)
      yield pipeline.to_global_arrays(batch, data_sharding)

  def _packed_length(self) -> int:
    """`data.packed_length`, or the row length that packs the first training images best."""
    config = self.config
    pp = resolve.preprocess_config(config, True)
    if config.data.packed_length:
      return int(config.data.packed_length)
    sample = f"{config.dataset.train_split}[:{min(packing.SIZE_SAMPLE, self.num_train)}]"
    tokens = [packing.image_tokens(int(h), int(w), pp)
              for h, w in pipeline.image_sizes(self.builder, sample)]
    length = packing.choose_row_length(tokens, self.per_device, pp.seq_len(1, 1) + 1)
    logging.info("Packing %d images per device into rows of %d tokens (%.1f%% useful on the "
                 "first %d training images)", self.per_device, length,
                 100 * packing.fill(tokens, self.per_device, length), len(tokens))
    return length

  def evaluator(self, split: str, model) -> evaluate.Evaluator | None:
    """An evaluator of `split` at native resolution; None when the config names no split."""
    if not split:
      return None
    config = self.config
    return evaluate.Evaluator(
        self.builder, split, model=model, pp_config=resolve.preprocess_config(config, False),
        batch_size=config.eval.batch_size, mesh=self.mesh,
        mos_scale=float(config.dataset.mos_scale), ava_metrics=config.eval.ava_metrics)


def _agree_max(values: tuple[int, ...]) -> tuple[int, ...]:
  """The element-wise maximum of `values` over all processes (batch shapes every host shares)."""
  if jax.process_count() == 1:
    return values
  gathered = multihost_utils.process_allgather(np.asarray(values, np.int64))
  return tuple(int(v) for v in np.max(gathered, axis=0))


def head_bias(builder, config: ml_collections.ConfigDict, head: str) -> np.ndarray | None:
  """The head bias that makes the untrained model predict the mean training label: the mean MOS
  (divided by mos_scale) for a score head, the log of the mean distribution for a distribution
  head; None for classification. Reads the labels only, not the images."""
  if head == "classification":
    return None
  key = "mos" if head == "score" else "dist"
  labels = builder.as_dataset(split=config.dataset.train_split).map(
      lambda example: example[key], num_parallel_calls=tf.data.AUTOTUNE)
  values = np.stack(list(labels.as_numpy_iterator())).astype(np.float64)
  if head == "score":
    bias = np.array([values.mean() / float(config.dataset.mos_scale)])
  else:
    bias = np.log(np.maximum(values.mean(axis=0), 1e-6))
  logging.info("Head bias from the mean training label: %s", bias)
  return bias.astype(np.float32)


def train_mos(builder, config: ml_collections.ConfigDict) -> np.ndarray | None:
  """The training split's MOS divided by mos_scale (what a score head's loss sees), images left
  encoded; None when the run trains on another label."""
  if config.dataset.label != "mos":
    return None
  data = pipeline.read_split(builder, config.dataset.train_split, pipeline.Host()).map(
      lambda example: example["mos"], num_parallel_calls=tf.data.AUTOTUNE)
  return np.array(list(data.as_numpy_iterator()), np.float64) / float(config.dataset.mos_scale)
