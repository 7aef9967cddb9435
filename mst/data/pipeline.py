"""tfds -> tf.data -> batches for training and evaluation, per host.

Training streams the host's part of a split forever, epoch after epoch, each epoch shuffled with a
seed derived from (seed, epoch); per-example randomness (crop, flip, RandAugment) is seeded by the
example's position in that stream, and mixup by the batch's. So the stream is a pure function of
(seed, host, position): resuming at a step skips straight to it, with no example repeated or
skipped, and no iterator state to save.

Evaluation sees every example exactly once at native resolution with all patches. Examples are
grouped into sequence-length buckets by a plan every host computes alike, each host's part of a
bucket is padded with masked-out examples (`valid` False) to the same number of batches, so all
hosts run the same steps with the same shapes and a split compiles once per bucket.
"""

import dataclasses
import functools
import math
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mst.data import augmentation
from mst.data import multiscale
from mst.data import preprocess

Features = dict[str, tf.Tensor]
AUTOTUNE = tf.data.AUTOTUNE
# The labels carried into batches (those an example has).
LABELS = ("mos", "dist", "label")
# mst's tf.data functions branch only on Python values (the config, static shapes), so tf.data
# traces them as written: autograph's rewriting of their source adds about a second to every
# process's start.
as_written = tf.autograph.experimental.do_not_convert


def in_order(data: tf.data.Dataset) -> tf.data.Dataset:
  """`data` in a fixed order, each AUTOTUNE map as parallel as the threads tf.data may use, and
  tf.data's autotuning model off.

  Deleting an iterator waits for the model's thread, which sleeps between optimisations for a
  period that doubles up to a minute (TF 2.21): 2 to 45 s measured at the end of a training or an
  evaluation. Its choice for mst's maps, which keep the cores busy, is all of them anyway, and
  prefetch buffers still grow on demand (tf.data's older prefetch tuning).
  """
  options = tf.data.Options()
  options.deterministic = True
  options.autotune.enabled = False
  options.autotune.initial_parallelism = os.cpu_count() or 1  # capped by tf.data's thread pool
  return data.with_options(options)


@dataclasses.dataclass(frozen=True)
class Host:
  """This process's place among the hosts feeding one global batch."""
  index: int = 0
  count: int = 1


def read_split(builder: tfds.core.DatasetBuilder, split: str, host: Host) -> tf.data.Dataset:
  """The host's even share of a split, in a fixed order, images still encoded."""
  part = tfds.even_splits(split, n=host.count, drop_remainder=False)[host.index]
  decoders = None
  if isinstance(builder.info.features["image"], tfds.features.Image):
    decoders = {"image": tfds.decode.SkipDecoding()}
  return builder.as_dataset(split=part, shuffle_files=False, decoders=decoders,
                            read_config=tfds.ReadConfig(try_autocache=False))


def feature(data: tf.data.Dataset, key: str) -> tf.data.Dataset:
  """One feature of each example, in order (a label, the encoded image, a file name)."""
  return in_order(data.map(as_written(lambda example: example[key]), num_parallel_calls=AUTOTUNE))


def num_examples(builder: tfds.core.DatasetBuilder, split: str, host: Host) -> int:
  part = tfds.even_splits(split, n=host.count, drop_remainder=False)[host.index]
  return builder.info.splits[part].num_examples


def decode(encoded: tf.Tensor) -> tf.Tensor:
  """Encoded bytes -> (H, W, 3) uint8: grey replicated, alpha dropped."""
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)
  return tf.ensure_shape(image, [None, None, 3])


@functools.cache
def example_tokens(pp_config: multiscale.MultiScaleConfig,
                   augment: augmentation.Augment | None = None):
  """(encoded image, seed [2] int64) -> `preprocess.multiscale_patches` of the decoded image,
  augmented (`augmentation.augment_image`, seeded) unless `augment` is None: one TF graph function
  per configuration and process.

  Every pipeline of a configuration (the training stream, each evaluation's buckets) calls it, so
  its ops are traced once, not once per pipeline (a second or more each).
  """
  def tokens(encoded, seed):
    image = decode(encoded)
    if augment is not None:
      image = augmentation.augment_image(image, augment, seed)
    return preprocess.multiscale_patches(image, pp_config)
  return tf.function(tokens, autograph=False, input_signature=[
      tf.TensorSpec([], tf.string), tf.TensorSpec([2], tf.int64)])


def labels_of(example: Features) -> Features:
  return {key: tf.cast(example[key], tf.int32 if key == "label" else tf.float32)
          for key in LABELS if key in example}


def train_dataset(builder: tfds.core.DatasetBuilder, split: str, *, batch_size: int,
                  pp_config: multiscale.MultiScaleConfig,
                  augment: augmentation.Augment = augmentation.Augment(),
                  seed: int = 0, host: Host = Host(), start_step: int = 0,
                  shuffle_buffer: int = 10_000, num_classes: int | None = None,
                  prepared=None) -> tf.data.Dataset:
  """Endless batches of `batch_size` (this host's share of the global batch) from step `start_step`.

  The native image is padded or cut to l = `pp_config.max_seq_len_from_original_res` tokens (it
  must be >= 0 for fixed-shape batches), the resized copies to m_k. With mixup, each batch is
  mixed within itself (`augmentation.mixup_batch`) and a class `label` becomes a soft `dist` over
  `num_classes`.

  `prepared` (a `mst.data.prepared.PreparedSplit` of this split and `pp_config`) reads the stored
  preprocessing instead of decoding: the same examples in the same order, the same flips, with
  float16 `patches` (float32 after mixup).
  """
  if pp_config.max_seq_len_from_original_res < 0:
    raise ValueError("training needs a fixed sequence length: set max_seq_len_from_original_res "
                     "(l) >= 0, e.g. 512")
  if augment.mixup_alpha > 0:
    _check_num_classes(builder, num_classes)
  if prepared is not None and prepared.pp != pp_config:
    raise ValueError(f"{prepared.folder} was prepared for {prepared.pp}, not {pp_config}")
  part = (read_split(builder, split, host) if prepared is None
          else prepared.host_part(builder, split, host))
  per_epoch = num_examples(builder, split, host)
  if per_epoch == 0:
    raise ValueError(f"host {host.index} of {host.count} has no examples of split {split!r}")
  consumed = start_step * batch_size
  first_epoch, offset = divmod(consumed, per_epoch)

  def epoch(index):
    return part.shuffle(min(shuffle_buffer, per_epoch), seed=_epoch_seed(seed, host, index),
                        reshuffle_each_iteration=False)

  stream = tf.data.Dataset.range(first_epoch, 2 ** 62).flat_map(as_written(epoch)).skip(offset)
  stream = tf.data.Dataset.zip(tf.data.Dataset.range(consumed, 2 ** 62), stream)

  def prepare(position, example):
    example_seed = tf.stack([tf.constant(seed, tf.int64) * 1_000_003 + host.index, position])
    if prepared is not None:  # `example` is the example's index in the split
      return prepared.features(example, augment, example_seed)
    tokens = example_tokens(pp_config, augment)(example["image"], example_seed)
    return {**tokens, **labels_of(example)}

  stream = stream.map(as_written(prepare), num_parallel_calls=AUTOTUNE)
  batches = stream.batch(batch_size, drop_remainder=True)
  if augment.mixup_alpha > 0:
    def mix(step, batch):
      batch = {**batch, "patches": tf.cast(batch["patches"], tf.float32)}  # prepared: float16
      batch_seed = tf.stack([tf.constant(seed, tf.int64) * 1_000_003 + host.index, step])
      batch_seed = tf.random.experimental.stateless_fold_in(batch_seed, augmentation.MIXUP_STREAM)
      return augmentation.mixup_batch(batch, augment.mixup_alpha, batch_seed, num_classes)
    batches = tf.data.Dataset.zip(tf.data.Dataset.range(start_step, 2 ** 62), batches)
    batches = batches.map(as_written(mix), num_parallel_calls=AUTOTUNE)
  return in_order(batches.prefetch(AUTOTUNE))


def _check_num_classes(builder: tfds.core.DatasetBuilder, num_classes: int | None) -> None:
  """Mixup one-hot encodes a class label: num_classes must be given and match the dataset's."""
  features = builder.info.features
  if "label" not in features or "dist" in features:
    return
  feature = features["label"]
  if not num_classes:
    raise ValueError("mixup turns class labels into one-hot `dist`: pass num_classes")
  known = getattr(feature, "num_classes", None)
  if known is not None and known != num_classes:
    raise ValueError(f"num_classes={num_classes} but the dataset's label has {known} classes")


def sharded_train_dataset(builder: tfds.core.DatasetBuilder, split: str, *, shards: list[int],
                          num_shards: int, batch_size_per_shard: int, **kwargs) -> tf.data.Dataset:
  """This host's batches when the split is cut into one shard per device of the whole mesh.

  Each shard is a `train_dataset` stream of its own; the host reads the shards of its devices
  (`shards`, in mesh order) and concatenates their batches. A global batch is then the same
  examples however the devices are spread over hosts: 1 process x 4 devices and 2 processes x 2
  devices train on identical batches.
  """
  streams = tuple(
      train_dataset(builder, split, batch_size=batch_size_per_shard,
                    host=Host(shard, num_shards), **kwargs) for shard in shards)

  def concat(*batches):
    return {key: tf.concat([batch[key] for batch in batches], axis=0) for key in batches[0]}

  return in_order(tf.data.Dataset.zip(streams).map(as_written(concat)).prefetch(AUTOTUNE))




def _epoch_seed(seed: int, host: Host, epoch: tf.Tensor) -> tf.Tensor:
  return (tf.constant(seed, tf.int64) * 7919 + host.index) * 104_729 + epoch


@dataclasses.dataclass(frozen=True)
class EvalBucket:
  """One sequence length of an evaluation plan: the examples this host scores at that length, and
  the number of batches every host runs for it."""
  length: int
  indices: tuple[int, ...]  # positions in the split, this host's share
  steps: int


def image_sizes(builder: tfds.core.DatasetBuilder, split: str) -> np.ndarray:
  """(height, width) of every example of a split, in split order. JPEG sizes come from the header;
  other formats are decoded."""
  def size(example):
    encoded = example["image"]
    return tf.cond(tf.io.is_jpeg(encoded), lambda: tf.image.extract_jpeg_shape(encoded)[:2],
                   lambda: tf.shape(decode(encoded))[:2])
  data = in_order(read_split(builder, split, Host()).map(as_written(size),
                                                        num_parallel_calls=AUTOTUNE))
  return np.array(list(data.as_numpy_iterator()), np.int64).reshape(-1, 2)


def eval_plan(sizes: np.ndarray, pp_config: multiscale.MultiScaleConfig, batch_size: int,
              host: Host = Host()) -> list[EvalBucket]:
  """Groups a split's examples into sequence-length buckets and deals each bucket to the hosts.

  Every host computes the same buckets and step counts from the same sizes; host h takes every
  count-th example of a bucket, so the hosts' shares differ by at most one example.
  """
  lengths = [multiscale.bucket_length(pp_config.seq_len(int(h), int(w))) for h, w in sizes]
  plan = []
  for length in sorted(set(lengths)):
    members = [i for i, n in enumerate(lengths) if n == length]
    largest_share = math.ceil(len(members) / host.count)
    plan.append(EvalBucket(length, tuple(members[host.index::host.count]),
                           math.ceil(largest_share / batch_size)))
  return plan


def eval_dataset(builder: tfds.core.DatasetBuilder, split: str, *, batch_size: int,
                 pp_config: multiscale.MultiScaleConfig, plan: list[EvalBucket]
                 ) -> tf.data.Dataset:
  """This host's evaluation batches: per bucket of the plan, its examples then masked-out padding.

  Each example carries `index` (its position in the split; -1 for padding) and `valid`.
  """
  full = read_split(builder, split, Host())
  total = builder.info.splits[split].num_examples
  parts = []
  for bucket in plan:
    member = np.zeros(total, bool)
    member[list(bucket.indices)] = True
    member = tf.constant(member)
    chosen = full.enumerate().filter(as_written(lambda i, _, m=member: m[i]))

    def prepare(index, example, length=bucket.length):
      features = example_tokens(pp_config)(example["image"], tf.zeros([2], tf.int64))
      features = preprocess.pad_to_length(features, length)
      return {**features, **labels_of(example), "index": tf.cast(index, tf.int32),
              "valid": tf.constant(True)}

    chosen = chosen.map(as_written(prepare), num_parallel_calls=AUTOTUNE)
    padding = bucket.steps * batch_size - len(bucket.indices)
    parts.append(chosen.concatenate(_padding(chosen.element_spec, padding)))
  if not parts:
    raise ValueError(f"split {split!r} has no examples to evaluate")
  data = parts[0]
  for part in parts[1:]:
    data = data.concatenate(part)
  return in_order(data.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE))


def _padding(spec: dict[str, tf.TensorSpec], count: int) -> tf.data.Dataset:
  """`count` all-zero examples (mask and valid False, index -1) shaped like `spec`."""
  def zeros(_):
    example = {key: tf.zeros(s.shape, s.dtype) for key, s in spec.items()}
    example["index"] = tf.constant(-1, tf.int32)
    return example
  return tf.data.Dataset.range(count).map(as_written(zeros))


def to_global_arrays(batch: dict[str, np.ndarray], sharding) -> dict:
  """A host's numpy batch -> global jax arrays split over the mesh's data axis."""
  import jax  # pylint: disable=g-import-not-at-top
  return {key: jax.make_array_from_process_local_data(sharding, value)
          for key, value in batch.items()}
