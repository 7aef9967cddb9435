"""Scoring without TensorFlow: NumPy preprocessing and the JPEG/PNG decoders equal the TF ops."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mst.data import host_preprocess
from mst.data import image_io
from mst.data import multiscale
from mst.data import preprocess

CONFIGS = {
    "paper": multiscale.MultiScaleConfig(),
    "training": multiscale.MultiScaleConfig(grid_size=3, longer_side_lengths=(64, 128),
                                            max_seq_len_from_original_res=32),
    "p16": multiscale.MultiScaleConfig(patch_size=16, longer_side_lengths=(1000,),
                                       max_seq_len_from_original_res=512),
    "native only": multiscale.MultiScaleConfig(longer_side_lengths=()),
}
SIZES = [(768, 1024), (1024, 768), (333, 500), (1, 1), (1, 700), (700, 1), (31, 33), (32, 32),
         (224, 224), (384, 384), (100, 3000), (2000, 15), (123, 456), (385, 223), (64, 48)]


@pytest.mark.parametrize("name", CONFIGS)
def test_numpy_tokens_equal_the_tf_tokens(name):
  config = CONFIGS[name]
  rng = np.random.default_rng(0)
  for height, width in SIZES:
    image = rng.integers(0, 256, (height, width, 3), np.uint8)
    image[: height // 2, : width // 3] = 255  # flat and extreme regions too
    expected = preprocess.multiscale_patches(tf.constant(image), config)
    got = host_preprocess.multiscale_patches(image, config)
    assert set(got) == set(expected)
    for key, value in expected.items():
      value = value.numpy()
      assert got[key].shape == value.shape and got[key].dtype == value.dtype, (key, height, width)
      if key == "patches":  # float32 rounding only: the same ops in the same order
        np.testing.assert_allclose(got[key], value, rtol=0, atol=1e-6, err_msg=f"{height}x{width}")
      else:
        np.testing.assert_array_equal(got[key], value, err_msg=f"{key} {height}x{width}")


def test_gaussian_resize_equals_tf_on_a_smooth_image_and_upsamples():
  y, x = np.mgrid[0:90, 0:130]
  image = np.stack([np.sin(x / 7.0), np.cos(y / 5.0), (x - y) / 200.0], -1).astype(np.float32)
  for side in (17, 64, 130, 400):
    rh, rw = host_preprocess.resized_size(90, 130, side)
    expected = tf.image.resize(image, (rh, rw), method=tf.image.ResizeMethod.GAUSSIAN).numpy()
    got = host_preprocess.resize_longer_side(image, side)
    assert got.shape == (rh, rw, 3) and max(rh, rw) == side
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_pad_to_length_pads_masked_zeros_and_refuses_to_cut():
  features = host_preprocess.multiscale_patches(np.zeros((40, 70, 3), np.uint8), CONFIGS["paper"])
  n = features["patches"].shape[0]
  padded = host_preprocess.pad_to_length(features, multiscale.bucket_length(n))
  assert padded["patches"].shape[0] == multiscale.bucket_length(n) > n
  assert not padded["mask"][n:].any() and not padded["patches"][n:].any()
  with pytest.raises(ValueError, match="longer than the bucket"):
    host_preprocess.pad_to_length(features, n - 1)


def _encoded(array, fmt, mode=None, **kwargs):
  image = Image.fromarray(array)
  if mode:
    image = image.convert(mode)
  buffer = io.BytesIO()
  image.save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def _cases():
  rng = np.random.default_rng(1)
  rgb = rng.integers(0, 256, (45, 61, 3), np.uint8)
  rgb[10:30, 10:40] = rgb[10, 10]  # flat blocks, where DCT methods differ most visibly
  grey = rgb[..., 0]
  return {
      "jpeg 4:2:0": _encoded(rgb, "JPEG", quality=80),
      "jpeg 4:4:4": _encoded(rgb, "JPEG", quality=95, subsampling=0),
      "jpeg 4:2:2 low quality": _encoded(rgb, "JPEG", quality=20, subsampling=1),
      "jpeg progressive": _encoded(rgb, "JPEG", progressive=True),
      "jpeg grey": _encoded(grey, "JPEG"),
      "png rgb": _encoded(rgb, "PNG"),
      "png rgba": _encoded(np.dstack([rgb, grey]), "PNG"),
      "png grey": _encoded(grey, "PNG"),
      "png grey alpha": _encoded(grey, "PNG", mode="LA"),
      "png palette": _encoded(rgb, "PNG", mode="P"),
      "png 1 bit": _encoded(grey > 128, "PNG"),
      "png 4 bit grey": _encoded(grey // 17 * 17, "PNG", bits=4),
  }


@pytest.mark.parametrize("name", list(_cases()))
def test_jpeg_and_png_decode_without_tf_to_tf_pixels(name):
  data = _cases()[name]
  expected = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
  got = image_io._decode_without_tf(data)  # pylint: disable=protected-access
  assert got is not None, "should not need TensorFlow"
  np.testing.assert_array_equal(got, expected)


def test_other_files_fall_back_to_tf_which_decodes_or_names_the_problem(tmp_path):
  rng = np.random.default_rng(2)
  rgb = rng.integers(0, 256, (24, 32, 3), np.uint8)
  jpeg = _encoded(rgb, "JPEG")
  others = {
      "cmyk.jpg": _encoded(rgb, "JPEG", mode="CMYK"),
      "16bit.png": _encoded(rgb[..., 0].astype(np.uint16) * 257, "PNG", mode="I;16"),
      "image.bmp": _encoded(rgb, "BMP"),
      "truncated.jpg": jpeg[: len(jpeg) // 2],
  }
  for name, data in others.items():
    assert image_io._decode_without_tf(data) is None, name  # pylint: disable=protected-access
    (tmp_path / name).write_bytes(data)
  for name in ("cmyk.jpg", "16bit.png", "image.bmp"):
    expected = tf.io.decode_image(others[name], channels=3, expand_animations=False).numpy()
    np.testing.assert_array_equal(image_io.read_image(str(tmp_path / name)), expected)
  with pytest.raises(image_io.ImageError, match=r"truncated\.jpg: not a readable image"):
    image_io.read_image(str(tmp_path / "truncated.jpg"))


@pytest.mark.slow
def test_mst_predict_on_jpegs_never_imports_tensorflow(tmp_path, small_npz):
  rng = np.random.default_rng(3)
  for i, shape in enumerate([(60, 90, 3), (120, 70, 3)]):
    Image.fromarray(rng.integers(0, 256, shape, np.uint8)).save(tmp_path / f"{i}.jpg")
  code = ("import sys\n"
          "from mst.cli import predict\n"
          f"status = predict.main(['--checkpoint', {small_npz!r}, {str(tmp_path)!r}, '--quiet'])\n"
          "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
          "sys.exit(status)\n")
  run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                       env={**os.environ, "MST_CACHE_DIR": "off"})
  assert run.returncode == 0, run.stderr[-2000:]
  lines = [json.loads(line) for line in run.stdout.splitlines()]
  assert [line["image"].rsplit("/", 1)[-1] for line in lines] == ["0.jpg", "1.jpg"]
  assert all(np.isfinite(line["score"]) for line in lines)

