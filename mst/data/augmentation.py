"""Training-time augmentation, every random choice drawn from a stateless seed: the random crop
(no resizing), horizontal flip and RandAugment per image, and mixup per batch of tokens. Stateless
seeds keep the training stream a pure function of its position, so a resumed run sees exactly the
augmentations an uninterrupted one would.
"""

import dataclasses

import tensorflow as tf

from mst.data import randaugment

Features = dict[str, tf.Tensor]
# Folded into a seed to give RandAugment (per example) and mixup (per batch) streams of their own.
RANDAUGMENT_STREAM, MIXUP_STREAM = 1, 2


@dataclasses.dataclass(frozen=True)
class Augment:
  """Training-time augmentation. Fine-tuning uses the flip alone (the paper's setting);
  pre-training adds the crop, RandAugment and mixup.

  Mixup turns the labels into soft targets: the batch carries `dist` (from a class `label`, one-hot
  over `num_classes` of `train_dataset`), so the loss must train on "dist", not "label".
  """
  flip_prob: float = 0.5
  crop: bool = False  # random crop without resizing (pre-training)
  crop_area: tuple[float, float] = (0.08, 1.0)  # fraction of the image area a crop keeps
  crop_aspect: tuple[float, float] = (0.75, 1.333)  # aspect ratio range of a crop
  randaugment_layers: int = 0  # ops per image; 0 = off
  randaugment_magnitude: float = 0  # M on RandAugment's 0-30 scale (mst.data.randaugment)
  mixup_alpha: float = 0.0  # lambda ~ Beta(alpha, alpha) per batch; 0 = off

  def __post_init__(self):
    if not 0.0 <= self.flip_prob <= 1.0:
      raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
    if not 0.0 < self.crop_area[0] <= self.crop_area[1] <= 1.0:
      raise ValueError(f"crop_area must be 0 < low <= high <= 1, got {self.crop_area}")
    if int(self.randaugment_layers) != self.randaugment_layers or self.randaugment_layers < 0:
      raise ValueError(f"randaugment_layers must be an integer >= 0, got "
                       f"{self.randaugment_layers}")
    if not 0.0 <= self.randaugment_magnitude <= randaugment.MAX_MAGNITUDE:
      raise ValueError(f"randaugment_magnitude must be in [0, {randaugment.MAX_MAGNITUDE}], got "
                       f"{self.randaugment_magnitude}")
    if not self.mixup_alpha >= 0.0:
      raise ValueError(f"mixup_alpha must be >= 0 (0 = off), got {self.mixup_alpha}")


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
