"""RandAugment: every op on odd image sizes, eagerly and inside tf.data; identities at magnitude 0;
the PIL semantics of the pixel ops; determinism per seed."""

import numpy as np
import pytest
import tensorflow as tf

from mst.data import pipeline
from mst.data import randaugment as ra
from support.images import random_pixels

SHAPES = [(1, 1), (3, 500), (37, 29)]


def _apply(name, image, magnitude, sign=1.0):
  return ra.OPS[name](tf.constant(image), tf.constant(magnitude, tf.float32),
                      tf.constant(sign, tf.float32)).numpy()


def test_the_standard_fourteen_ops():
  assert set(ra.OPS) == {"Identity", "AutoContrast", "Equalize", "Rotate", "Solarize", "Color",
                         "Posterize", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
                         "TranslateX", "TranslateY"}


@pytest.mark.parametrize("name", sorted(ra.OPS))
def test_each_op_keeps_shape_and_dtype_eagerly_and_in_tf_data(name):
  images = [random_pixels(h, w, i) for i, (h, w) in enumerate(SHAPES)]
  index = list(ra.OPS).index(name)
  for image in images:
    out = _apply(name, image, 15.0, -1.0)
    assert out.dtype == np.uint8 and out.shape == image.shape
  # Inside tf.data the shapes are dynamic and the op index a tensor (RandAugment's switch).
  data = tf.data.Dataset.from_generator(
      lambda: iter(images), output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
  data = data.map(pipeline.as_written(
      lambda image: ra.apply_op(image, tf.constant(index), 15.0, -1.0)))
  for image, out in zip(images, data.as_numpy_iterator()):
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out, _apply(name, image, 15.0, -1.0))


@pytest.mark.parametrize("name", ra.GEOMETRIC_OPS + ("Identity",))
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_geometric_ops_at_magnitude_zero_and_identity_change_nothing(name, sign):
  for h, w in SHAPES:
    image = random_pixels(h, w)
    np.testing.assert_array_equal(_apply(name, image, 0.0, sign), image)
  image = random_pixels(37, 29)
  np.testing.assert_array_equal(_apply("Identity", image, 30.0, sign), image)


@pytest.mark.parametrize("name", ra.GEOMETRIC_OPS)
def test_geometric_ops_move_pixels_and_fill_grey(name):
  image = random_pixels(37, 29)
  out = _apply(name, image, 10.0, 1.0)
  assert (out != image).any()
  # Pixels come from the image or are the grey fill: nearest sampling makes no new values.
  assert set(np.unique(out)) <= set(np.unique(image)) | {128}
  if name in ("TranslateX", "TranslateY"):  # 0.45 of the size at M = 10, filled with grey
    if name == "TranslateX":
      shift = round(0.45 * 29)
      np.testing.assert_array_equal(out[:, shift:], image[:, :-shift])
      assert (out[:, :shift] == 128).all()
    else:
      shift = round(0.45 * 37)
      np.testing.assert_array_equal(out[shift:], image[:-shift])
      assert (out[:shift] == 128).all()


def test_signed_ops_go_the_other_way_with_a_negative_sign():
  image = random_pixels(37, 29)
  left, right = _apply("TranslateX", image, 10.0, -1.0), _apply("TranslateX", image, 10.0, 1.0)
  shift = round(0.45 * 29)
  np.testing.assert_array_equal(left[:, :-shift], image[:, shift:])
  assert not np.array_equal(left, right)


def test_pixel_ops_follow_pil():
  image = random_pixels(37, 29)
  # Brightness / Color / Contrast / Sharpness at factor 1 (M = 50/9) change nothing.
  unit = (1.0 - 0.1) / 1.8 * 10.0
  for name in ("Brightness", "Color", "Contrast", "Sharpness"):
    np.testing.assert_array_equal(_apply(name, image, unit), image)
  # Brightness factor 0.1 (M = 0) scales values by 0.1.
  np.testing.assert_allclose(_apply("Brightness", image, 0.0), image * 0.1, atol=0.51)
  # Solarize at M = 5 inverts values >= 128; Posterize at M = 10 keeps the top 4 bits.
  np.testing.assert_array_equal(_apply("Solarize", image, 5.0),
                                np.where(image < 128, image, 255 - image))
  np.testing.assert_array_equal(_apply("Posterize", image, 10.0), image & 0xF0)
  np.testing.assert_array_equal(_apply("Posterize", image, 0.0), image & 0x80)  # >= 1 bit kept
  # AutoContrast stretches each channel to 0..255; Equalize spreads a narrow histogram.
  narrow = (image // 4 + 100).astype(np.uint8)
  stretched = _apply("AutoContrast", narrow, 0.0)
  assert (stretched.min(axis=(0, 1)) == 0).all() and (stretched.max(axis=(0, 1)) == 255).all()
  equalized = _apply("Equalize", narrow, 0.0)
  assert equalized.std() > 2 * narrow.std()
  # Sharpness keeps the border; at factor 0.1 (M = 0) the interior is nearly the SMOOTH filter.
  smooth = _apply("Sharpness", image, 0.0)
  np.testing.assert_array_equal(smooth[0], image[0])
  np.testing.assert_array_equal(smooth[:, -1], image[:, -1])
  assert np.abs(smooth[1:-1, 1:-1].astype(int) - image[1:-1, 1:-1]).mean() > 10


def test_flat_images_survive_every_op():
  for value in (0, 128, 255):
    flat = np.full((5, 7, 3), value, np.uint8)
    for name in ("AutoContrast", "Equalize", "Sharpness", "Contrast"):
      out = _apply(name, flat, 9.0)
      assert out.shape == flat.shape and np.ptp(out) == 0


def test_randaugment_is_a_function_of_the_seed():
  image = random_pixels(37, 29)
  outputs = [ra.randaugment(image, 2, 15, tf.constant([7, i], tf.int64)).numpy()
             for i in range(8)]
  again = ra.randaugment(image, 2, 15, tf.constant([7, 0], tf.int64)).numpy()
  np.testing.assert_array_equal(outputs[0], again)
  assert len({out.tobytes() for out in outputs}) >= 4
  np.testing.assert_array_equal(ra.randaugment(image, 0, 15, tf.constant([7, 0])).numpy(), image)


def test_randaugment_picks_ops_uniformly():
  image = random_pixels(3, 50)
  out = ra.randaugment(image, 3, 30, tf.constant([1, 2]), names=("Identity",)).numpy()
  np.testing.assert_array_equal(out, image)
  # One layer choosing between Identity and Brightness (factor 0.1 at M = 0): about half each.
  unchanged = [np.array_equal(ra.randaugment(image, 1, 0, tf.constant([5, i]),
                                             names=("Identity", "Brightness")).numpy(), image)
               for i in range(60)]
  assert 15 <= sum(unchanged) <= 45


def test_randaugment_in_tf_data_matches_eager():
  images = [random_pixels(h, w, i) for i, (h, w) in enumerate(SHAPES)]
  data = tf.data.Dataset.from_generator(
      lambda: iter(images), output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
  data = data.enumerate().map(pipeline.as_written(
      lambda i, image: ra.randaugment(image, 2, 15, tf.stack([tf.constant(3, tf.int64), i]))))
  for i, (image, out) in enumerate(zip(images, data.as_numpy_iterator())):
    expected = ra.randaugment(image, 2, 15, tf.constant([3, i], tf.int64)).numpy()
    np.testing.assert_array_equal(out, expected)


def test_randaugment_rejects_bad_arguments():
  image = random_pixels(4, 4)
  with pytest.raises(ValueError, match="magnitude"):
    ra.randaugment(image, 2, 31, tf.constant([0, 0]))
  with pytest.raises(ValueError, match="unknown"):
    ra.randaugment(image, 2, 5, tf.constant([0, 0]), names=("Invert",))
  with pytest.raises(ValueError, match="uint8"):
    ra.randaugment(image.astype(np.float32), 2, 5, tf.constant([0, 0]))
