"""The multi-scale patch representation of an image (MUSIQ section 3.1), as TensorFlow ops.

An image becomes one token sequence: its aspect-ratio-preserving resized copies (longer side L_k,
ascending), then the native image, each cut into P x P patches with TF 'SAME' zero padding. Every
patch carries a hash-based spatial index into a G x G grid shared by all scales and a scale id.
Everything here must equal the official MUSIQ preprocessing (see docs/preprocessing.md); the
functions run eagerly and inside `tf.data` with dynamic image sizes.
"""

import tensorflow as tf

from mst.data import multiscale

Features = dict[str, tf.Tensor]


def normalize(image: tf.Tensor) -> tf.Tensor:
  """Maps uint8 [0, 255] to float32 [-1, 1]."""
  return tf.cast(image, tf.float32) / 255.0 * 2.0 - 1.0


def resized_size(height: tf.Tensor, width: tf.Tensor, longer_side: int
                 ) -> tuple[tf.Tensor, tf.Tensor]:
  """The (rh, rw) of an aspect-ratio-preserving resize to `longer_side`, rounded half to even.

  A side that rounds to 0 (aspect ratios beyond 2 * longer_side : 1) is kept at 1 pixel; the
  official code fails on such images, so this changes no score it gives.
  """
  ratio = tf.cast(longer_side, tf.float32) / tf.cast(tf.maximum(height, width), tf.float32)
  side = lambda n: tf.maximum(tf.cast(tf.round(tf.cast(n, tf.float32) * ratio), tf.int32), 1)
  return side(height), side(width)


def resize_longer_side(image: tf.Tensor, longer_side: int) -> tf.Tensor:
  """Gaussian, aspect-ratio-preserving resize of a normalised (H, W, 3) image; upsamples too."""
  shape = tf.shape(image)
  rh, rw = resized_size(shape[0], shape[1], longer_side)
  return tf.image.resize(image, tf.stack([rh, rw]), method=tf.image.ResizeMethod.GAUSSIAN)


def hash_spatial_index(count_h: tf.Tensor, count_w: tf.Tensor, grid_size: int) -> tf.Tensor:
  """HSE index of each patch in raster order: t_i * G + t_j, t = min(floor(i * G / count), G - 1).

  The official code gets t from a nearest-neighbour resize of the G-grid to count_h x count_w (TF1
  semantics: no half-pixel centres), which computes floor(float32(i) * float32(G / count)). That
  float32 product falls just below an exact integer for a few (G, count) pairs, e.g. G=3 and
  count=123 at i=41, so t is computed the same way here, not in exact integer arithmetic.
  """
  def axis_index(count):
    scale = tf.cast(grid_size, tf.float32) / tf.cast(count, tf.float32)
    t = tf.floor(tf.cast(tf.range(count), tf.float32) * scale)
    return tf.minimum(tf.cast(t, tf.int32), grid_size - 1)

  rows = axis_index(count_h)[:, None]
  cols = axis_index(count_w)[None, :]
  return tf.reshape(rows * grid_size + cols, [-1])


def extract_patches(image: tf.Tensor, patch_size: int) -> tf.Tensor:
  """(H, W, C) -> (count_h * count_w, P * P * C), raster order, TF 'SAME' zero padding.

  The padding value 0 is applied to the normalised image, so padding is mid grey. Each patch is
  flattened in (row, column, channel) order.
  """
  channels = image.shape[-1]
  patches = tf.image.extract_patches(
      image[None], sizes=[1, patch_size, patch_size, 1], strides=[1, patch_size, patch_size, 1],
      rates=[1, 1, 1, 1], padding="SAME")
  return tf.reshape(patches, [-1, patch_size * patch_size * channels])


def _pad_or_cut(tokens: Features, length: int) -> Features:
  """Pads every feature with zeros (mask False) or keeps the first `length` tokens."""
  def fit(x):
    x = x[:length]
    padding = [[0, length - tf.shape(x)[0]]] + [[0, 0]] * (len(x.shape) - 1)
    return tf.pad(x, padding)
  return {key: tf.ensure_shape(fit(value), [length] + value.shape[1:])
          for key, value in tokens.items()}


def _tokens_of(image: tf.Tensor, scale_id: int, config: multiscale.MultiScaleConfig) -> Features:
  """Patches, spatial index, scale id and mask of one (normalised) image, all patches."""
  p = config.patch_size
  shape = tf.shape(image)
  count_h = (shape[0] + p - 1) // p
  count_w = (shape[1] + p - 1) // p
  patches = extract_patches(image, p)
  n = tf.shape(patches)[0]
  return {
      "patches": patches,
      "spatial_idx": hash_spatial_index(count_h, count_w, config.grid_size),
      "scale_idx": tf.fill([n], tf.constant(scale_id, tf.int32)),
      "mask": tf.ones([n], tf.bool),
  }


def multiscale_patches(image: tf.Tensor, config: multiscale.MultiScaleConfig) -> Features:
  """The model input for one decoded RGB image (H, W, 3) uint8.

  Returns a dict of `patches` [N, P*P*3] float32, `spatial_idx` [N] int32, `scale_idx` [N] int32 and
  `mask` [N] bool: the resized copies (each padded or cut to m_k tokens, scale id k) ascending, then
  the native image (padded or cut to l tokens, scale id K; all of its patches when l is -1).
  Padded tokens have zero pixels, index 0, scale id 0 and mask False.
  """
  image = tf.ensure_shape(image, [None, None, 3])
  parts = multiscale.token_parts(normalize(image), config, resize_longer_side, _tokens_of,
                                 _pad_or_cut)
  return {key: tf.concat([part[key] for part in parts], axis=0) for key in parts[0]}


def pad_to_length(features: Features, length: int) -> Features:
  """Pads a token sequence with masked-out tokens to `length` (for sequence-length buckets)."""
  n = features["patches"].shape[0]
  if n is not None and n > length:
    raise ValueError(f"sequence of {n} tokens is longer than the bucket of {length}")
  if n is None:  # inside tf.data: checked when the example is made
    tf.debugging.assert_less_equal(tf.shape(features["patches"])[0], length,
                                   message="sequence is longer than its bucket")
  return _pad_or_cut(features, length)
