"""The multi-scale representation against hand-computed expectations (docs/preprocessing.md)."""

import numpy as np
import pytest
import tensorflow as tf

from mst.data import multiscale
from mst.data import pipeline
from mst.data import preprocess as pp


def _tokens(image, **config):
  out = pp.multiscale_patches(tf.constant(image, tf.uint8), multiscale.MultiScaleConfig(**config))
  return {k: v.numpy() for k, v in out.items()}


def _hse(count_h, count_w, grid):
  return pp.hash_spatial_index(tf.constant(count_h), tf.constant(count_w), grid).numpy().tolist()


@pytest.mark.parametrize("count_h, count_w, grid, expected", [
    # t = min(floor(i * G / count), G - 1); index = t_i * G + t_j.
    (2, 3, 10, [0, 3, 6, 50, 53, 56]),
    (1, 1, 10, [0]),
    (1, 12, 10, [0, 0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9]),
    (3, 2, 4, [0, 2, 4, 6, 8, 10]),  # rows 0, 1, 2; columns 0, 2
    (2, 2, 1, [0, 0, 0, 0]),
])
def test_hash_spatial_index_hand_computed(count_h, count_w, grid, expected):
  assert _hse(count_h, count_w, grid) == expected


def test_hash_spatial_index_follows_official_float32_arithmetic():
  # 41 * 3 / 123 is exactly 1, but the official float32 product is 0.99999994: t = 0.
  rows = [i // 3 for i in _hse(123, 1, 3)]
  assert rows[40:43] == [0, 0, 1]


def test_hash_spatial_index_equals_tf1_nearest_neighbour_resize():
  # The official code computes the index with TF1's nearest-neighbour resize of the G-grid.
  for grid in (3, 10, 20):
    for count in range(1, 160):
      grid_image = tf.reshape(tf.range(grid), [grid, 1, 1])
      official = tf.compat.v1.image.resize(
          grid_image, [count, 1], method=tf.compat.v1.image.ResizeMethod.NEAREST_NEIGHBOR)
      assert [i // grid for i in _hse(count, 1, grid)] == official.numpy()[:, 0, 0].tolist()


def test_normalisation_maps_0_255_to_minus_one_one():
  out = pp.normalize(tf.constant([0, 51, 255], tf.uint8)).numpy()
  np.testing.assert_allclose(out, [-1.0, -0.6, 1.0], atol=1e-6)
  assert out.dtype == np.float32


def test_same_padding_split_and_zero_pad_after_normalisation():
  # 33 x 35 white image, P=32: pad 31 rows (15 top, 16 bottom) and 29 columns (14 left, 15 right).
  out = _tokens(np.full((33, 35, 3), 255), longer_side_lengths=())
  assert out["patches"].shape == (4, 32 * 32 * 3)
  first = out["patches"][0].reshape(32, 32, 3)
  assert (first[:15] == 0).all() and (first[:, :14] == 0).all()
  assert (first[15:, 14:] == 1.0).all()
  last = out["patches"][3].reshape(32, 32, 3)
  # Rows 32..63 of the padded image hold image rows 17..32 (16 rows), then 16 padded rows.
  assert (last[:16, :17] == 1.0).all() and (last[16:] == 0).all() and (last[:, 17:] == 0).all()


def test_patch_flattening_is_row_column_channel():
  image = np.zeros((32, 32, 3), np.uint8)
  image[0, 1, 2] = 255  # row 0, column 1, channel 2
  flat = _tokens(image, longer_side_lengths=())["patches"][0]
  assert flat[0 * 32 * 3 + 1 * 3 + 2] == 1.0
  assert np.count_nonzero(flat == 1.0) == 1


@pytest.mark.parametrize("height, expected_rows", [(5, 2), (7, 4)])
def test_resized_size_rounds_half_to_even(height, expected_rows):
  # Longer side 8 -> 4: ratio 0.5, so height 5 -> 2.5 -> 2 and 7 -> 3.5 -> 4 (half to even).
  out = _tokens(np.zeros((height, 8, 3)), patch_size=1, longer_side_lengths=(4,),
                max_seq_len_from_original_res=0)
  assert out["mask"].sum() == expected_rows * 4
  assert out["mask"].shape == (16,)  # m_k = ceil(4 / 1)^2


def test_small_image_is_upsampled_to_the_longer_side():
  # 10 x 20 -> ratio 224 / 20 -> 112 x 224 -> 4 x 7 patches of the 49 kept for L = 224.
  out = _tokens(np.full((10, 20, 3), 204), longer_side_lengths=(224,))
  scale0 = out["scale_idx"][:49][out["mask"][:49]]
  assert out["mask"][:49].sum() == 28 and (scale0 == 0).all()
  # 112 rows pad to 128: 8 zero rows on top. A Gaussian resize of a constant image is that
  # constant: 204 -> 0.6 inside the image.
  first = out["patches"][0].reshape(32, 32, 3)
  assert (first[:8] == 0).all()
  np.testing.assert_allclose(first[8:], 204 / 255 * 2 - 1, atol=1e-5)
  assert out["mask"][49:].sum() == 1  # the native 10 x 20 image is one patch


def test_cut_keeps_first_tokens_in_raster_order_and_pad_is_masked_zero():
  image = np.random.default_rng(0).integers(0, 256, (100, 100, 3))
  full = _tokens(image, longer_side_lengths=())
  assert full["patches"].shape[0] == 16
  cut = _tokens(image, longer_side_lengths=(), max_seq_len_from_original_res=5)
  np.testing.assert_array_equal(cut["patches"], full["patches"][:5])
  np.testing.assert_array_equal(cut["spatial_idx"], full["spatial_idx"][:5])
  padded = _tokens(image, longer_side_lengths=(), max_seq_len_from_original_res=20)
  np.testing.assert_array_equal(padded["patches"][:16], full["patches"])
  assert (padded["patches"][16:] == 0).all()
  assert (padded["spatial_idx"][16:] == 0).all() and (padded["scale_idx"][16:] == 0).all()
  assert padded["mask"].tolist() == [True] * 16 + [False] * 4


def test_scale_ids_and_order_resized_ascending_then_native():
  image = np.zeros((768, 1024, 3))
  # Lengths given out of order are sorted: 224 is scale 0, 384 scale 1, native scale 2.
  out = _tokens(image, longer_side_lengths=(384, 224))
  assert out["patches"].shape[0] == 49 + 144 + 24 * 32
  # 1024 x 768 -> 224 x 168 (7 x 6 patches) and 384 x 288 (12 x 9 patches).
  assert out["mask"][:49].sum() == 42 and out["mask"][49:193].sum() == 108
  assert (out["scale_idx"][:42] == 0).all() and (out["scale_idx"][42:49] == 0).all()
  assert (out["scale_idx"][49:157] == 1).all()
  assert (out["scale_idx"][193:] == 2).all() and out["mask"][193:].all()
  assert multiscale.MultiScaleConfig().seq_len(768, 1024) == out["patches"].shape[0]


def test_hse_cells_of_each_scale():
  out = _tokens(np.zeros((768, 1024, 3)))
  last_cell = {}
  for scale in range(3):
    idx = out["spatial_idx"][(out["scale_idx"] == scale) & out["mask"]]
    assert idx.min() == 0
    last_cell[scale] = idx.max()
  # 6 x 7 patches: last row floor(5 * 10 / 6) = 8, last column floor(6 * 10 / 7) = 8.
  # 9 x 12 patches: floor(8 * 10 / 9) = 8, floor(11 * 10 / 12) = 9. 24 x 32 patches: 9, 9.
  assert last_cell == {0: 88, 1: 89, 2: 99}


def test_extreme_aspect_ratio_keeps_at_least_one_pixel():
  out = _tokens(np.zeros((1, 2000, 3)))
  assert out["mask"][:49].sum() == 7  # 224 x 1 -> 7 x 1 patches
  assert out["mask"][193:].sum() == 63


def test_same_result_inside_tf_data_with_dynamic_shapes():
  config = multiscale.MultiScaleConfig(max_seq_len_from_original_res=64)
  images = [np.random.default_rng(i).integers(0, 256, shape, dtype=np.uint8)
            for i, shape in enumerate([(40, 300, 3), (257, 129, 3)])]
  dataset = tf.data.Dataset.from_generator(
      lambda: iter(images), output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
  dataset = dataset.map(pipeline.as_written(lambda image: pp.multiscale_patches(image, config)))
  dataset = dataset.batch(2)
  batch = next(iter(dataset))
  assert batch["patches"].shape == (2, 49 + 144 + 64, 3072)
  for i, image in enumerate(images):
    eager = pp.multiscale_patches(tf.constant(image), config)
    for key in eager:
      np.testing.assert_allclose(batch[key][i].numpy(), eager[key].numpy(), atol=1e-6)


def test_pad_to_length_and_bad_configs():
  out = pp.multiscale_patches(tf.zeros([32, 32, 3], tf.uint8), multiscale.MultiScaleConfig(
      longer_side_lengths=()))
  padded = pp.pad_to_length(out, 8)
  assert padded["mask"].numpy().tolist() == [True] + [False] * 7
  with pytest.raises(ValueError, match="longer than the bucket"):
    pp.pad_to_length(padded, 4)
  with pytest.raises(ValueError, match="makes no tokens"):
    pp.multiscale_patches(tf.zeros([4, 4, 3], tf.uint8), multiscale.MultiScaleConfig(
        longer_side_lengths=(), max_seq_len_from_original_res=0))
  with pytest.raises(ValueError, match="max_seq_len_from_original_res"):
    multiscale.MultiScaleConfig(max_seq_len_from_original_res=-2)
  with pytest.raises(ValueError, match="longer_side_lengths"):
    multiscale.MultiScaleConfig(longer_side_lengths=(0,))


@pytest.mark.parametrize("tokens, bucket", [(1, 63), (63, 63), (64, 79), (79, 79), (80, 95),
                                            (193, 223), (961, 1023), (1023, 1023),
                                            (1024, 1279), (12193, 12287)])
def test_bucket_length_pads_at_most_a_quarter(tokens, bucket):
  # Buckets plus the CLS token are 4 steps per octave: 64, 80, 96, 112, 128, 160, ...
  assert multiscale.bucket_length(tokens) == bucket
