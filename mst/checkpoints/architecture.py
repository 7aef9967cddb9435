"""The MUSIQ architecture a set of parameters was made by, read from their names and shapes.

Official `.npz` files store parameters only, so the loader infers the `ModelConfig` from them:
layers from the encoder block indices, width and heads from the attention kernels, the grid G from
the spatial table, the number of scales from the scale table, the patch encoder and P from the
`embedding` kernel, the head from its outputs. `expected_shapes` then gives what that
architecture's parameters must look like, for checking a file key by key.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Mapping

import flax.traverse_util
import jax
import numpy as np

from mst.models import musiq
from mst.models import patch_encoders

_ENCODER_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/")
_HEAD_FOR_CLASSES = {1: "score", 10: "distribution"}  # anything else: "classification"

class NeedKeys(Exception):
  """Inference needed one of these keys and the file has none of them."""


def _shape(flat: Mapping[str, np.ndarray], *names: str) -> tuple[int, ...]:
  for name in names:
    if name in flat:
      return flat[name].shape
  raise NeedKeys(" or ".join(names))


def _spatial_embedding(flat) -> dict[str, Any]:
  """`hse` with G from the (1, G*G, D) table, `fixed` with its length, else `sinusoid`.

  A file cannot tell `sinusoid` from `none` (neither stores a table); `sinusoid` is the official
  code's only table-free option. Pass `spatial_embedding="none"` to the loader to override.
  """
  if "Transformer/posembed_input/pos_embedding" in flat:
    rows = _shape(flat, "Transformer/posembed_input/pos_embedding")[1]
    grid = math.isqrt(rows)
    if grid * grid != rows:
      raise ValueError(f"posembed_input has {rows} rows, not a square G*G grid")
    return {"spatial_embedding": "hse", "grid_size": grid}
  if "Transformer/posembed_fixed/pos_embedding" in flat:
    rows = _shape(flat, "Transformer/posembed_fixed/pos_embedding")[1]
    return {"spatial_embedding": "fixed", "max_positions": rows}
  return {"spatial_embedding": "sinusoid"}


def _scale_embedding(flat) -> dict[str, Any]:
  """SCE rows = number of scales (resized copies + native); no table means SCE is off."""
  if "Transformer/scaleembed_input/scale_embedding" not in flat:
    return {"use_scale_embedding": False}
  rows = _shape(flat, "Transformer/scaleembed_input/scale_embedding")[1]
  return {"use_scale_embedding": True, "num_scales": rows}


def _patch_encoder(flat) -> dict[str, Any]:
  """The encoder from which modules exist; P from the `embedding` kernel's rows.

  resnet rows = (P/4)^2 * 256, conv rows = (P/4)^2 * 64, linear rows = P*P*3.
  """
  if any(name.startswith("block1/") for name in flat):
    per_pixel = patch_encoders.ROOT_FEATURES * patch_encoders.BOTTLENECK_EXPANSION
    encoder, side_factor = "resnet", 4
  elif any(name.startswith("conv_root/") for name in flat):
    encoder, per_pixel, side_factor = "conv", patch_encoders.ROOT_FEATURES, 4
  else:
    encoder, per_pixel, side_factor = "linear", 3, 1
  rows = _shape(flat, "embedding/kernel")[0]
  patch = math.isqrt(rows // per_pixel) * side_factor
  if patch < 1 or patch_encoders.feature_size(encoder, patch) != rows:
    raise ValueError(f"embedding/kernel has {rows} rows: no patch size fits the {encoder} encoder")
  return {"patch_encoder": encoder, "patch_size": patch}


def _head(flat) -> dict[str, Any]:
  classes = _shape(flat, "head/kernel", "head/bias")[-1]
  fields = {"num_classes": classes, "head": _HEAD_FOR_CLASSES.get(classes, "classification")}
  fields["representation_size"] = (
      _shape(flat, "pre_logits/kernel")[1] if "pre_logits/kernel" in flat else None)
  return fields


def _transformer(flat) -> dict[str, Any]:
  """Layers from the block indices, D and heads from the (D, heads, head_dim) query kernel."""
  indices = [int(m.group(1)) for m in map(_ENCODER_BLOCK.match, flat) if m]
  if not indices:
    raise NeedKeys("Transformer/encoderblock_0/...")
  block = f"Transformer/encoderblock_{min(indices)}"
  hidden, heads, _ = _shape(flat, f"{block}/SelfAttention_0/query/kernel")
  mlp_dim = _shape(flat, f"{block}/MlpBlock_0/Dense_0/kernel")[1]
  return {"num_layers": max(indices) + 1, "hidden_size": hidden, "num_heads": heads,
          "mlp_dim": mlp_dim}


def infer_model_config(flat: Mapping[str, np.ndarray], **overrides: Any) -> musiq.ModelConfig:
  """The `ModelConfig` a flat parameter dict was made by; `overrides` set what files can't tell.

  Raises `NeedKeys` or `ValueError` (turned into `CheckpointError` by the loader), and
  `TypeError` for overrides that are not `ModelConfig` fields.
  """
  known = {field.name for field in dataclasses.fields(musiq.ModelConfig)}
  if unknown := sorted(set(overrides) - known):
    raise TypeError(f"not ModelConfig fields: {unknown}")
  fields: dict[str, Any] = {}
  for part in (_transformer, _spatial_embedding, _scale_embedding, _patch_encoder, _head):
    fields.update(part(flat))
  fields = {name: value for name, value in fields.items() if name in known}
  return musiq.ModelConfig(**(fields | overrides))


# ---------------------------------------------------------------------------------------------
# Checking a file against the model its config builds.


def expected_shapes(cfg: musiq.ModelConfig) -> dict[str, jax.ShapeDtypeStruct]:
  """Every parameter's shape and dtype for `cfg`, via `jax.eval_shape` (nothing is computed)."""
  params = jax.eval_shape(functools.partial(musiq.init_params, cfg), jax.random.key(0))
  return flax.traverse_util.flatten_dict(params, sep="/")


