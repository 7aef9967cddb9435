"""The multi-scale patch representation of one image in NumPy, equal to `preprocess` (TF ops).

Scoring a few images should not wait for TensorFlow to import (about 5 s), so `mst-predict`,
`mst.load` and `mst-visualize` preprocess here. Every step repeats the TF op it replaces in the
same float32 arithmetic, so the tokens equal `preprocess.multiscale_patches` to float32 rounding
(tests/mst/data/host_preprocess_test.py compares them over many sizes):
- `tf.image.resize(..., GAUSSIAN)` is `ScaleAndTranslate` without antialiasing: each output pixel
  is a normalised Gaussian (radius 1.5, sigma 0.5) over at most 4 input pixels, applied along the
  width, then along the height, each sum accumulated in tap order;
- `tf.image.extract_patches(..., padding="SAME")` pads floor(pad / 2) before and the rest after.
"""

import math

import numpy as np

from mst.data import multiscale

Features = dict[str, np.ndarray]
_RADIUS = 1.5  # TF's Gaussian kernel: support of 3 pixels, sigma = radius / 3
_SIGMA = _RADIUS / 3.0


def normalize(image: np.ndarray) -> np.ndarray:
  """Maps uint8 [0, 255] to float32 [-1, 1]."""
  return image.astype(np.float32) / np.float32(255.0) * np.float32(2.0) - np.float32(1.0)


def resized_size(height: int, width: int, longer_side: int) -> tuple[int, int]:
  """(rh, rw) of an aspect-ratio-preserving resize, rounded half to even, at least 1 pixel."""
  ratio = np.float32(longer_side) / np.float32(max(height, width))
  side = lambda n: max(int(np.round(np.float32(n) * ratio)), 1)
  return side(height), side(width)


def _gaussian_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(indices [out, S], weights [out, S] float32) of TF's Gaussian ScaleAndTranslate on one axis.

  Taps past an output pixel's span have weight 0 (their index is clamped to stay in range)."""
  span = min(2 * math.ceil(_RADIUS) + 1, in_size)
  scale = np.float32(out_size) / np.float32(in_size)
  inv_scale = np.float32(1.0 / np.float64(scale))
  sample = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * inv_scale
  start = np.ceil(sample - np.float32(_RADIUS) - np.float32(0.5)).astype(np.int64)
  end = np.floor(sample + np.float32(_RADIUS) - np.float32(0.5)).astype(np.int64)
  start = np.clip(start, 0, in_size - 1)
  end = np.clip(end, 0, in_size - 1) + 1
  source = start[:, None] + np.arange(span)
  position = source.astype(np.float32) + np.float32(0.5) - sample[:, None]
  x = np.abs(position)
  weights = np.exp(-(x * x).astype(np.float64) / (2.0 * _SIGMA * _SIGMA)).astype(np.float32)
  weights[(x >= np.float32(_RADIUS)) | (source >= end[:, None])] = 0.0
  total = np.zeros(out_size, np.float32)
  for k in range(span):  # summed in tap order, in float32, as TF does
    total += weights[:, k]
  usable = np.abs(total) >= np.float32(1000.0) * np.finfo(np.float32).tiny
  weights = np.where(usable[:, None], weights * (np.float32(1.0) / total)[:, None],
                     np.float32(0.0)).astype(np.float32)
  return np.minimum(source, in_size - 1), weights


def _gather(image: np.ndarray, indices: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
  """sum_k weights[:, k] * image[indices[:, k]] along `axis`, accumulated tap by tap."""
  out = None
  shape = [1] * image.ndim
  shape[axis] = -1
  for k in range(indices.shape[1]):
    term = np.take(image, indices[:, k], axis=axis) * weights[:, k].reshape(shape)
    out = term if out is None else out + term
  return out


def resize_longer_side(image: np.ndarray, longer_side: int) -> np.ndarray:
  """Gaussian, aspect-ratio-preserving resize of a normalised (H, W, 3) float32 image."""
  height, width = image.shape[:2]
  rh, rw = resized_size(height, width, longer_side)
  columns = _gather(image, *_gaussian_taps(width, rw), axis=1)
  return _gather(columns, *_gaussian_taps(height, rh), axis=0)


def hash_spatial_index(count_h: int, count_w: int, grid_size: int) -> np.ndarray:
  """HSE index of each patch in raster order, in the same float32 arithmetic as the TF version
  (`preprocess.hash_spatial_index` explains why it is not exact integer arithmetic)."""
  def axis_index(count):
    scale = np.float32(grid_size) / np.float32(count)
    t = np.floor(np.arange(count, dtype=np.float32) * scale)
    return np.minimum(t.astype(np.int32), grid_size - 1)
  return (axis_index(count_h)[:, None] * grid_size + axis_index(count_w)[None, :]).reshape(-1)


def extract_patches(image: np.ndarray, patch_size: int) -> np.ndarray:
  """(H, W, C) -> (count_h * count_w, P * P * C), raster order, TF 'SAME' zero padding."""
  height, width, channels = image.shape
  p = patch_size
  count_h, count_w = -(-height // p), -(-width // p)
  pad_h, pad_w = count_h * p - height, count_w * p - width
  padded = np.pad(image, [(pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                          (0, 0)])
  patches = padded.reshape(count_h, p, count_w, p, channels).transpose(0, 2, 1, 3, 4)
  return patches.reshape(count_h * count_w, p * p * channels)


def _pad_or_cut(tokens: Features, length: int) -> Features:
  """Pads every feature with zeros (mask False) or keeps the first `length` tokens."""
  def fit(x):
    x = x[:length]
    return np.pad(x, [(0, length - x.shape[0])] + [(0, 0)] * (x.ndim - 1))
  return {key: fit(value) for key, value in tokens.items()}


def _tokens_of(image: np.ndarray, scale_id: int, config: multiscale.MultiScaleConfig
               ) -> Features:
  """Patches, spatial index, scale id and mask of one normalised image, all patches."""
  p = config.patch_size
  count_h, count_w = -(-image.shape[0] // p), -(-image.shape[1] // p)
  n = count_h * count_w
  return {
      "patches": extract_patches(image, p),
      "spatial_idx": hash_spatial_index(count_h, count_w, config.grid_size),
      "scale_idx": np.full([n], scale_id, np.int32),
      "mask": np.ones([n], bool),
  }


def multiscale_patches(image: np.ndarray, config: multiscale.MultiScaleConfig) -> Features:
  """The model input for one decoded RGB image (H, W, 3) uint8: what
  `preprocess.multiscale_patches` returns, as NumPy arrays."""
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
  parts = multiscale.token_parts(normalize(image), config, resize_longer_side, _tokens_of,
                                 _pad_or_cut)
  return {key: np.concatenate([part[key] for part in parts], axis=0) for key in parts[0]}


def pad_to_length(features: Features, length: int) -> Features:
  """Pads a token sequence with masked-out tokens to `length` (a sequence-length bucket)."""
  n = features["patches"].shape[0]
  if n > length:
    raise ValueError(f"sequence of {n} tokens is longer than the bucket of {length}")
  return _pad_or_cut(features, length)
