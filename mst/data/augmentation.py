"""Training-time augmentation, every random choice drawn from a stateless seed: the random crop
(no resizing), horizontal flip and RandAugment per image, and mixup per batch of tokens. Stateless
seeds keep the training stream a pure function of its position, so a resumed run sees exactly the
augmentations an uninterrupted one would.
"""

import tensorflow as tf

from mst.data import augment_config
from mst.data import randaugment

Features = dict[str, tf.Tensor]
# Folded into a seed to give RandAugment (per example) and mixup (per batch) streams of their own.
RANDAUGMENT_STREAM, MIXUP_STREAM = 1, 2
# What augmentation a run uses, typed; kept in a module without TensorFlow (see augment_config).
Augment = augment_config.Augment


def augment_image(image: tf.Tensor, augment: Augment, seed: tf.Tensor) -> tf.Tensor:
  """Random crop (no resizing), horizontal flip, then RandAugment, all seeded by `seed` [2]."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  if augment.crop:
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([1, 0, 4]), seed=crop_seed, area_range=augment.crop_area,
        aspect_ratio_range=augment.crop_aspect, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, size)
  flip = tf.random.stateless_uniform([], flip_seed) < augment.flip_prob
  image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
  if augment.randaugment_layers:
    # A seed of its own, folded in rather than a third split, so crops and flips stay the ones
    # drawn without RandAugment.
    randaugment_seed = tf.random.experimental.stateless_fold_in(seed, RANDAUGMENT_STREAM)
    image = randaugment.randaugment(image, augment.randaugment_layers,
                                    augment.randaugment_magnitude, randaugment_seed)
  return image


def mixup_batch(batch: Features, alpha: float, seed: tf.Tensor,
                num_classes: int | None = None) -> Features:
  """Mixup (Zhang et al., 2018) of a multi-scale token batch with itself rolled by one.

  One lambda ~ Beta(alpha, alpha) per batch, drawn from the stateless `seed` [2]. Example i is
  mixed with example i - 1: patches lam * a + (1 - lam) * b, the mask is the union, and a token's
  spatial and scale ids come from a where a's token is real, else from b. Labels become soft:
  `dist` (made from a class `label` as one-hot over `num_classes`, which replaces `label`) and
  `mos`, if present, are mixed with the same lambda.

  Mixing is position-wise: token i of a meets token i of b. Both sequences follow the same
  layout (resized scales then the native image, raster order), so the resized copies roughly
  align, but with random crops of different sizes and aspect ratios the native grids differ and
  token i of the two images covers different places. That is an approximation of pixel mixup, not
  pixel mixup; a token real in one image and padding in the other is blended with mid grey (0).
  In training each device shard's batch is mixed within itself, so a per-device batch of 1 is
  never mixed.
  """
  if "label" in batch and "dist" not in batch:
    if not num_classes:
      raise ValueError("mixup of class labels needs num_classes (to make one-hot `dist`)")
    batch = {**batch, "dist": tf.one_hot(batch["label"], num_classes, dtype=tf.float32)}
  batch = {key: value for key, value in batch.items() if key != "label"}
  lam = mixup_lambda(alpha, seed)
  other = {key: tf.roll(value, 1, axis=0) for key, value in batch.items()}

  def mix(a, b):  # a + (1 - lam)(b - a): exactly a when b == a
    return a + (1.0 - lam) * (b - a)

  out = dict(batch)
  out["patches"] = mix(batch["patches"], other["patches"])
  own = batch["mask"]
  out["mask"] = own | other["mask"]
  for key in ("spatial_idx", "scale_idx"):
    out[key] = tf.where(own, batch[key], other[key])
  for key in ("dist", "mos"):
    if key in batch:
      out[key] = mix(batch[key], other[key])
  return out


def mixup_lambda(alpha: float, seed: tf.Tensor) -> tf.Tensor:
  """lambda ~ Beta(alpha, alpha) as a float32 scalar, from the stateless `seed` [2]."""
  if not alpha > 0:
    raise ValueError(f"mixup needs alpha > 0, got {alpha}")
  seeds = tf.random.experimental.stateless_split(seed, 2)
  x, y = (tf.random.stateless_gamma([], seeds[i], alpha=alpha, dtype=tf.float64) for i in (0, 1))
  total = x + y
  # With a tiny alpha both draws can underflow to 0: call that an even mix rather than NaN.
  return tf.cast(tf.where(total > 0, x / tf.where(total > 0, total, 1.0), 0.5), tf.float32)
