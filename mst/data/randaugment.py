"""RandAugment (Cubuk et al., 2020) on uint8 (H, W, 3) images of any size, in stateless TF ops.

Each of `num_layers` layers picks one of `OPS` uniformly and applies it at the shared magnitude M
(0-30). Every random choice (the op, the sign of a signed op) is a stateless function of the seed,
so a training stream stays a pure function of (seed, shard, position) and resumes exactly.

M maps to each op's parameter as in the TF RandAugment that ViT / AugReg pre-training used
(tensorflow/tpu `autoaugment.py`, forked by big_vision), with f = M / 10:
  Rotate        +-30 f degrees              ShearX/Y      +-0.3 f (about the top-left corner)
  TranslateX/Y  +-0.45 f of the width/height (see below)
  Color, Contrast, Brightness, Sharpness    enhancement factor 0.1 + 1.8 f (1 = unchanged)
  Solarize      invert pixels >= 256 f      Posterize     keep floor(4 f) bits, clipped to [1, 8]
Where we differ, and why:
- Translation is relative: the TF code shifts by 100 f pixels, made for 224-px crops (100/224 =
  0.45, the fraction timm uses); MUSIQ trains on native-size images, so a fixed pixel count would
  mean very different things on different images.
- Posterize keeps at least 1 bit: the TF code shifts a uint8 by 8 at M < 2.5 (implementation
  defined) and by a negative amount at M > 20.
- Contrast blends towards the mean grey level as PIL does (the TF code uses pixel count / 256).
Like the TF code, Solarize weakens as M grows (a no-op from M = 10) and Posterize keeps more bits.
Geometric ops sample the nearest pixel and fill uncovered pixels with grey 128.
"""

import math
from typing import Callable

import tensorflow as tf

from mst.data import augment_config

MAX_MAGNITUDE = augment_config.MAX_MAGNITUDE
_LEVEL = 10.0  # the magnitude at which the TF mappings reach their nominal maximum
_FILL = 128.0
# Stream ids folded into a layer's seed, so the op choice and the sign draw differ.
_OP, _SIGN = 0, 1


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL ImageEnhance: degenerate + factor * (image - degenerate), clipped; factor 1 = image."""
  degenerate = tf.cast(degenerate, tf.float32)
  mixed = degenerate + tf.cast(factor, tf.float32) * (tf.cast(image, tf.float32) - degenerate)
  return tf.cast(tf.clip_by_value(tf.round(mixed), 0.0, 255.0), tf.uint8)


def _grey(image: tf.Tensor) -> tf.Tensor:
  """(H, W, 1) float32 luma (ITU-R 601-2, as PIL's convert('L'))."""
  weights = tf.constant([0.299, 0.587, 0.114], tf.float32)
  return tf.reduce_sum(tf.cast(image, tf.float32) * weights, axis=-1, keepdims=True)


def autocontrast(image: tf.Tensor) -> tf.Tensor:
  """Stretches each channel so its darkest pixel is 0 and its brightest 255 (flat channels stay)."""
  x = tf.cast(image, tf.float32)
  lo = tf.reduce_min(x, axis=[0, 1])
  hi = tf.reduce_max(x, axis=[0, 1])
  flat = hi <= lo
  scale = tf.where(flat, 1.0, 255.0 / tf.where(flat, 1.0, hi - lo))
  stretched = tf.where(flat, x, (x - lo) * scale)
  return tf.cast(tf.clip_by_value(tf.round(stretched), 0.0, 255.0), tf.uint8)


def _equalize_channel(channel: tf.Tensor) -> tf.Tensor:
  """PIL's ImageOps.equalize of one (H, W) int32 channel."""
  histogram = tf.math.bincount(channel, minlength=256, maxlength=256)
  last = tf.gather(histogram, tf.reduce_max(tf.where(histogram > 0)))
  step = (tf.reduce_sum(histogram) - last) // 255
  safe_step = tf.maximum(step, 1)
  lut = (tf.cumsum(histogram) + safe_step // 2) // safe_step
  lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
  return tf.where(step > 0, tf.gather(lut, channel), channel)


def equalize(image: tf.Tensor) -> tf.Tensor:
  """Equalizes each channel's histogram (PIL's algorithm)."""
  channels = tf.unstack(tf.cast(image, tf.int32), num=3, axis=-1)
  return tf.cast(tf.stack([_equalize_channel(c) for c in channels], axis=-1), tf.uint8)


def solarize(image: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
  """Inverts every pixel value >= threshold."""
  x = tf.cast(image, tf.int32)
  return tf.cast(tf.where(x < tf.cast(threshold, tf.int32), x, 255 - x), tf.uint8)


def posterize(image: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
  """Keeps the `bits` (1 to 8) most significant bits of each value."""
  unit = tf.bitwise.left_shift(1, 8 - tf.clip_by_value(tf.cast(bits, tf.int32), 1, 8))
  return tf.cast(tf.cast(image, tf.int32) // unit * unit, tf.uint8)


def color(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """Saturation: 0 = grey, 1 = unchanged."""
  return _blend(tf.tile(_grey(image), [1, 1, 3]), image, factor)


def contrast(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """0 = uniform mean grey, 1 = unchanged."""
  mean = tf.round(tf.reduce_mean(_grey(image)))
  return _blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """0 = black, 1 = unchanged."""
  return _blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """Blends with PIL's SMOOTH filter (3x3, centre weight 5): 0 = smoothed, 1 = unchanged, > 1
  sharpened. Border pixels keep their values, as in PIL; images of any size work."""
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1],
                                  "SAME")[0]
  smooth = tf.round(tf.clip_by_value(smooth, 0.0, 255.0))
  shape = tf.shape(image)
  rows = tf.range(shape[0])[:, None, None]
  cols = tf.range(shape[1])[None, :, None]
  inside = (rows > 0) & (rows < shape[0] - 1) & (cols > 0) & (cols < shape[1] - 1)
  smooth = tf.where(inside, smooth, tf.cast(image, tf.float32))
  return _blend(smooth, image, factor)


def _transform(image: tf.Tensor, matrix: list[tf.Tensor]) -> tf.Tensor:
  """Projective transform: output pixel (x, y) samples input (a0 x + a1 y + a2, a3 x + a4 y + a5)
  (nearest pixel; grey where that falls outside)."""
  transform = tf.cast(tf.stack(matrix + [0.0, 0.0])[None], tf.float32)
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
      fill_value=tf.constant(_FILL, tf.float32), interpolation="NEAREST", fill_mode="CONSTANT")
  return out[0]


def rotate(image: tf.Tensor, degrees: tf.Tensor) -> tf.Tensor:
  """Rotation about the image centre."""
  radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  cos, sin = tf.cos(radians), tf.sin(radians)
  shape = tf.cast(tf.shape(image), tf.float32)
  x_max, y_max = shape[1] - 1.0, shape[0] - 1.0
  x_offset = (x_max - (cos * x_max - sin * y_max)) / 2.0
  y_offset = (y_max - (sin * x_max + cos * y_max)) / 2.0
  return _transform(image, [cos, -sin, x_offset, sin, cos, y_offset])


def shear_x(image: tf.Tensor, shear: tf.Tensor) -> tf.Tensor:
  return _transform(image, [1.0, shear, 0.0, 0.0, 1.0, 0.0])


def shear_y(image: tf.Tensor, shear: tf.Tensor) -> tf.Tensor:
  return _transform(image, [1.0, 0.0, 0.0, shear, 1.0, 0.0])


def translate_x(image: tf.Tensor, fraction: tf.Tensor) -> tf.Tensor:
  """Shifts the content right by `fraction` of the width (left when negative)."""
  pixels = tf.round(tf.cast(fraction, tf.float32) * tf.cast(tf.shape(image)[1], tf.float32))
  return _transform(image, [1.0, 0.0, -pixels, 0.0, 1.0, 0.0])


def translate_y(image: tf.Tensor, fraction: tf.Tensor) -> tf.Tensor:
  """Shifts the content down by `fraction` of the height (up when negative)."""
  pixels = tf.round(tf.cast(fraction, tf.float32) * tf.cast(tf.shape(image)[0], tf.float32))
  return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, -pixels])


def _enhance(magnitude):
  return magnitude / _LEVEL * 1.8 + 0.1


# name -> fn(image, magnitude M in [0, 30], sign +-1.0): each op with its magnitude mapping. The
# sign only affects the signed (geometric) ops.
OpFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]
OPS: dict[str, OpFn] = {
    "Identity": lambda image, m, sign: image,
    "AutoContrast": lambda image, m, sign: autocontrast(image),
    "Equalize": lambda image, m, sign: equalize(image),
    "Rotate": lambda image, m, sign: rotate(image, sign * m / _LEVEL * 30.0),
    "Solarize": lambda image, m, sign: solarize(image, tf.floor(m / _LEVEL * 256.0)),
    "Color": lambda image, m, sign: color(image, _enhance(m)),
    "Posterize": lambda image, m, sign: posterize(image, tf.floor(m / _LEVEL * 4.0)),
    "Contrast": lambda image, m, sign: contrast(image, _enhance(m)),
    "Brightness": lambda image, m, sign: brightness(image, _enhance(m)),
    "Sharpness": lambda image, m, sign: sharpness(image, _enhance(m)),
    "ShearX": lambda image, m, sign: shear_x(image, sign * m / _LEVEL * 0.3),
    "ShearY": lambda image, m, sign: shear_y(image, sign * m / _LEVEL * 0.3),
    "TranslateX": lambda image, m, sign: translate_x(image, sign * m / _LEVEL * 0.45),
    "TranslateY": lambda image, m, sign: translate_y(image, sign * m / _LEVEL * 0.45),
}
GEOMETRIC_OPS = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


def apply_op(image: tf.Tensor, index: tf.Tensor, magnitude: tf.Tensor, sign: tf.Tensor,
             names: tuple[str, ...] = tuple(OPS)) -> tf.Tensor:
  """Applies `OPS[names[index]]` (`index` may be a tensor) and restores the static shape."""
  magnitude = tf.cast(magnitude, tf.float32)
  sign = tf.cast(sign, tf.float32)
  branches = [lambda fn=OPS[name]: fn(image, magnitude, sign) for name in names]
  out = tf.switch_case(tf.cast(index, tf.int32), branches)
  return tf.ensure_shape(out, image.shape)


def randaugment(image: tf.Tensor, num_layers: int, magnitude: float, seed: tf.Tensor,
                names: tuple[str, ...] = tuple(OPS)) -> tf.Tensor:
  """`num_layers` ops drawn uniformly (with replacement) from `names`, each at `magnitude` with a
  random sign, all seeded by the stateless `seed` [2]."""
  if not 0.0 <= magnitude <= MAX_MAGNITUDE:
    raise ValueError(f"RandAugment magnitude must be in [0, {MAX_MAGNITUDE}], got {magnitude}")
  unknown = sorted(set(names) - set(OPS))
  if unknown or not names:
    raise ValueError(f"unknown RandAugment ops {unknown}; valid: {list(OPS)}")
  image = tf.convert_to_tensor(image)
  if image.dtype != tf.uint8:
    raise ValueError(f"RandAugment works on uint8 images, got {image.dtype}")
  for layer in range(num_layers):
    layer_seed = tf.random.experimental.stateless_fold_in(seed, layer)
    op_seed = tf.random.experimental.stateless_fold_in(layer_seed, _OP)
    sign_seed = tf.random.experimental.stateless_fold_in(layer_seed, _SIGN)
    index = tf.random.stateless_uniform([], op_seed, 0, len(names), dtype=tf.int32)
    sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
    image = apply_op(image, index, magnitude, sign, names)
  return image
