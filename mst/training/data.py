"""The data side of a training run: the prepared dataset, the number of steps, the global training
batches from any step, evaluators for the other splits, and label statistics for initialisation.
"""

import math
import os

from absl import logging
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import numpy as np
import tensorflow as tf

from mst.data import packing
from mst.data import pipeline
from mst.data import prepared
from mst.data import source
from mst.evaluation import evaluate
from mst.runtime import sharding
from mst.training import run as run_lib
from mst.training import shape_agreement


class TrainingData:
  """Everything a training run reads, for this host."""

  def __init__(self, run: run_lib.Run, mesh):
    self.run = run
    self.mesh = mesh
    spec = run.dataset
    self.builder = source.build_dataset(spec)
    # A tfds catalogue dataset's splits are known only now, once prepared.
    source.check_splits(spec.name, tuple(self.builder.info.splits), {
        "dataset.train_split": spec.train_split, "dataset.eval_split": spec.eval_split,
        "dataset.test_split": spec.test_split}, optional=("dataset.eval_split",
                                                          "dataset.test_split"))
    self.num_train = self.builder.info.splits[spec.train_split].num_examples
    num_devices = mesh.devices.size
    self.per_device = run.loop.batch_size // num_devices
    if self.num_train < num_devices:
      raise ValueError(f"{self.num_train} training examples cannot feed {num_devices} devices")
    self.packed_length = self._packed_length() if run.layout.packing else 0
    self.prepared = None
    if run.layout.prepared_dir:
      self.prepared = prepare_once_per_pod(self.builder, spec.train_split,
                                           run.train_preprocess, run.layout.prepared_dir)

  @property
  def total_steps(self) -> int:
    loop = self.run.loop
    if loop.num_steps > 0:
      return int(loop.num_steps)
    return max(1, math.ceil(loop.num_epochs * self.num_train / loop.batch_size))

  def train_batches(self, start_step: int):
    """(global batch, (images, tokens)) for steps start_step + 1, start_step + 2, ... (an endless
    iterator): the counts are this host's real images and patch tokens (`packing.real_counts`)."""
    run = self.run
    data = pipeline.sharded_train_dataset(
        self.builder, run.dataset.train_split,
        shards=sharding.local_device_positions(self.mesh), num_shards=self.mesh.devices.size,
        batch_size_per_shard=self.per_device, pp_config=run.train_preprocess,
        augment=run.augment, seed=run.seed, start_step=start_step,
        shuffle_buffer=run.dataset.shuffle_buffer, num_classes=run.model.num_classes,
        prepared=self.prepared)
    data_sharding = sharding.data_sharding(self.mesh)
    scale = float(run.dataset.mos_scale)
    shards = len(sharding.local_device_positions(self.mesh))
    agreement = shape_agreement.ShapeAgreement()  # no device collective: the host runs ahead
    for step, batch in enumerate(data.as_numpy_iterator(), start_step + 1):
      if "mos" in batch:
        batch["mos"] = batch["mos"] / scale
      agree = agreement.at(step)
      if self.packed_length:
        batch = packing.packed_layout(batch, shards, self.packed_length, agree)
      else:
        batch = packing.padded_layout(batch, shards, agree)
      arrays = pipeline.to_global_arrays(batch, data_sharding)
      if arrays["patches"].dtype == jnp.float16:  # the prepared pipeline's, widened on device
        arrays["patches"] = _widen(arrays["patches"])
      yield arrays, packing.real_counts(batch)

  def _packed_length(self) -> int:
    """`data.packed_length`, or the row length that packs the first training images best."""
    run = self.run
    pp = run.train_preprocess
    if run.layout.packed_length:
      return int(run.layout.packed_length)
    sample = f"{run.dataset.train_split}[:{min(packing.SIZE_SAMPLE, self.num_train)}]"
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
    run = self.run
    return evaluate.Evaluator(
        self.builder, split, model=model, pp_config=run.eval_preprocess,
        batch_size=run.eval.batch_size, mesh=self.mesh,
        mos_scale=float(run.dataset.mos_scale), ava_metrics=run.eval.ava_metrics)


_widen = jax.jit(lambda patches: patches.astype(jnp.float32))


def prepare_once_per_pod(builder, split: str, pp, root: str) -> prepared.PreparedSplit:
  """`prepared.prepare` on every host, where only process 0 writes a folder the hosts share.

  Whether they share `root` (gs://, NFS) or each has its own (a local disk) is seen, not assumed:
  process 0 leaves a file beside the folder, and a host that sees it waits for process 0's
  manifest instead of preparing; one that does not prepares its own copy. A collective at start-up
  only, never per step.
  """
  if jax.process_count() == 1:
    return prepared.prepare(builder, split, pp, root)
  folder = prepared.folder_of(builder, split, pp, os.path.expanduser(root))
  token = int(multihost_utils.broadcast_one_to_all(
      np.int32(np.random.default_rng().integers(1 << 31))))
  probe = f"{folder.rstrip('/')}.host0-{token}"
  if jax.process_index() == 0:
    tf.io.gfile.makedirs(os.path.dirname(probe))
    with tf.io.gfile.GFile(probe, "w") as f:
      f.write("process 0 prepares this folder; the other hosts wait for it\n")
  multihost_utils.sync_global_devices("mst_prepared_probe_written")
  shared = tf.io.gfile.exists(probe)
  multihost_utils.sync_global_devices("mst_prepared_probe_seen")
  if jax.process_index() == 0:
    tf.io.gfile.remove(probe)
  writer = jax.process_index() == 0 or not shared
  return prepared.prepare(builder, split, pp, root, writer=writer)


def head_bias(builder, spec: source.DatasetSpec, head: str) -> np.ndarray | None:
  """The head bias that makes the untrained model predict the mean training label: the mean MOS
  (divided by mos_scale) for a score head, the log of the mean distribution for a distribution
  head; None for classification. Reads the labels only, not the images."""
  if head == "classification":
    return None
  key = "mos" if head == "score" else "dist"
  labels = pipeline.feature(pipeline.read_split(builder, spec.train_split, pipeline.Host()), key)
  values = np.stack(list(labels.as_numpy_iterator())).astype(np.float64)
  if head == "score":
    bias = np.array([values.mean() / float(spec.mos_scale)])
  else:
    bias = np.log(np.maximum(values.mean(axis=0), 1e-6))
  logging.info("Head bias from the mean training label: %s", bias)
  return bias.astype(np.float32)


def train_mos(builder, spec: source.DatasetSpec) -> np.ndarray | None:
  """The training split's MOS divided by mos_scale (what a score head's loss sees), images left
  encoded; None when the run trains on another label."""
  if spec.label != "mos":
    return None
  data = pipeline.feature(pipeline.read_split(builder, spec.train_split, pipeline.Host()), "mos")
  return np.array(list(data.as_numpy_iterator()), np.float64) / float(spec.mos_scale)
