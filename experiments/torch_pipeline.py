"""The PyTorch implementation's own end-to-end path, for the benchmark: file -> score.

It follows what pyiqa (IQA-PyTorch) does to score an image with MUSIQ: decode with PIL, convert to
a float tensor in [0, 1] (torchvision's `ToTensor`), map to [-1, 1], resize each scale with
`F.interpolate(mode="bicubic")` to the aspect-preserving size, cut P x P patches with TF 'SAME' zero
padding through `F.unfold`, hash each patch's position to the G x G grid with a nearest-neighbour
interpolation, and concatenate the scales (each resized scale padded to ceil(L / P)^2 tokens). The
only step pyiqa does differently is the patch layout: `TorchMusiq` takes patches flattened in
(row, column, channel) order, so the unfolded (channel, row, column) patches are permuted once.
Bicubic is not the official Gaussian resize, so its scores differ slightly from mst's; the work is
the same kind and size.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from experiments import torch_musiq


def read_image(path: str) -> torch.Tensor:
  """(1, 3, H, W) float32 in [0, 1], as PIL + torchvision's ToTensor give it."""
  with Image.open(path) as image:
    pixels = np.array(image.convert("RGB"))  # a copy, as ToTensor makes
  return torch.from_numpy(pixels).permute(2, 0, 1)[None].float().div(255.0)


def _patches(image: torch.Tensor, patch: int) -> torch.Tensor:
  """(1, C, H, W) -> (count_h * count_w, P * P * C) in (row, column, channel) order."""
  _, channels, height, width = image.shape
  pad_h = math.ceil(height / patch) * patch - height
  pad_w = math.ceil(width / patch) * patch - width
  image = F.pad(image, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
  cols = F.unfold(image, patch, stride=patch)[0]  # (C * P * P, L)
  return cols.reshape(channels, patch, patch, -1).permute(3, 1, 2, 0).reshape(cols.shape[1], -1)


def _hash_index(count_h: int, count_w: int, grid: int) -> torch.Tensor:
  """pyiqa's nearest-neighbour hash of each patch's (row, column) to the G x G grid."""
  cells = torch.arange(grid, dtype=torch.float32).reshape(1, 1, grid)
  rows = F.interpolate(cells, count_h, mode="nearest").reshape(count_h, 1)
  cols = F.interpolate(cells, count_w, mode="nearest").reshape(1, count_w)
  return (rows * grid + cols).reshape(-1).long()


def _tokens(image, scale_id, patch, grid, length=None):
  _, _, height, width = image.shape
  patches = _patches(image, patch)
  spatial = _hash_index(math.ceil(height / patch), math.ceil(width / patch), grid)
  n = patches.shape[0]
  scale = torch.full((n,), scale_id, dtype=torch.long)
  mask = torch.ones(n, dtype=torch.bool)
  if length is not None:  # pad (or cut) to the resized scale's fixed length
    extra = max(length - n, 0)
    patches = F.pad(patches, (0, 0, 0, extra))[:length]
    spatial, scale = (F.pad(t, (0, extra))[:length] for t in (spatial, scale))
    mask = F.pad(mask, (0, extra))[:length]
  return patches, spatial, scale, mask


def multiscale_inputs(image: torch.Tensor, longer_sides=(224, 384), patch=32, grid=10):
  """pyiqa's `get_multiscale_patches` as TorchMusiq's four inputs, batch 1."""
  image = (image - 0.5) * 2.0
  _, _, height, width = image.shape
  parts = []
  for scale_id, side in enumerate(sorted(longer_sides)):
    ratio = side / max(height, width)
    resized = F.interpolate(image, (round(height * ratio), round(width * ratio)), mode="bicubic")
    parts.append(_tokens(resized, scale_id, patch, grid, math.ceil(side / patch) ** 2))
  parts.append(_tokens(image, len(longer_sides), patch, grid))
  return [torch.cat(tensors)[None] for tensors in zip(*parts)]


def score_file(model: torch_musiq.TorchMusiq, path: str) -> float:
  """Decode, preprocess and score one file."""
  with torch.inference_mode():
    return float(torch_musiq.score(model(*multiscale_inputs(read_image(path))))[0])
