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
import re
import sys
from typing import Any, Mapping

import flax.traverse_util
import jax
import numpy as np

from mst import errors
from mst.models import embeddings
from mst.models import musiq
from mst.models import patch_encoders
from mst.runtime import traced_cache

_ENCODER_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/")
_HEAD_FOR_CLASSES = {1: "score", 10: "distribution"}  # anything else: "classification"
# What a file with no spatial table is read as (see `_spatial_embedding`).
TABLE_FREE_SPATIAL_EMBEDDING = "sinusoid"


class NeedKeys(errors.BadInput):
  """Inference needed one of these keys and the file has none of them."""


def _shape(flat: Mapping[str, np.ndarray], *names: str) -> tuple[int, ...]:
  for name in names:
    if name in flat:
      return flat[name].shape
  raise NeedKeys(" or ".join(names))


def _spatial_embedding(flat) -> dict[str, Any]:
  """The entry of `SPATIAL_EMBEDDINGS` whose table the file has, with the fields its rows give
  (G for `hse`, the length for `fixed`); with no table, `TABLE_FREE_SPATIAL_EMBEDDING`.

  A file cannot tell `sinusoid` from `none` (neither stores a table); `sinusoid` is the official
  code's only table-free option. Pass `spatial_embedding="none"` to the loader to override.
  """
  for name, embedding in embeddings.SPATIAL_EMBEDDINGS.items():
    key = f"Transformer/{embedding.table}"
    if embedding.table and key in flat:
      return {"spatial_embedding": name, **embedding.fields_from_rows(_shape(flat, key)[1])}
  return {"spatial_embedding": TABLE_FREE_SPATIAL_EMBEDDING}


def _scale_embedding(flat) -> dict[str, Any]:
  """SCE rows = number of scales (resized copies + native); no table means SCE is off."""
  if "Transformer/scaleembed_input/scale_embedding" not in flat:
    return {"use_scale_embedding": False}
  rows = _shape(flat, "Transformer/scaleembed_input/scale_embedding")[1]
  return {"use_scale_embedding": True, "num_scales": rows}


def _patch_encoder(flat) -> dict[str, Any]:
  """The registered encoder whose parameters the file has; P from the `embedding` kernel's rows.

  E.g. resnet rows = (P/4)^2 * 256, conv rows = (P/4)^2 * 64, linear rows = P*P*3 (each entry's
  `feature_size`).
  """
  name = _recognised_patch_encoder(flat)
  rows = _shape(flat, "embedding/kernel")[0]
  patch = _patch_size(patch_encoders.PATCH_ENCODERS[name].feature_size, rows)
  if patch is None:
    raise ValueError(f"embedding/kernel has {rows} rows: no patch size fits the {name} encoder")
  return {"patch_encoder": name, "patch_size": patch}


def _recognised_patch_encoder(flat) -> str:
  """The entry of `PATCH_ENCODERS` with the most top-level `param_names`, all in the file.

  Most names wins because one encoder's parameters may extend another's (resnet's root plus
  `block1` over conv's root alone); an entry without names (linear) fits any file.
  """
  top_level = {name.split("/", 1)[0] for name in flat}
  fits = {name: len(encoder.param_names)
          for name, encoder in patch_encoders.PATCH_ENCODERS.items()
          if set(encoder.param_names) <= top_level}
  if not fits:
    raise ValueError("the file has the parameters of no patch encoder in "
                     f"{sorted(patch_encoders.PATCH_ENCODERS)}")
  most = max(fits.values())
  best = sorted(name for name, count in fits.items() if count == most)
  if len(best) > 1:
    raise ValueError(f"the file's parameters fit the patch encoders {best} equally")
  return best[0]


def _patch_size(feature_size, rows: int) -> int | None:
  """The largest P with `feature_size(P) == rows`, or None.

  Largest, because stride-2 steps give several P one size (P = 29..32 all make 8 x 8 maps); the
  official patch sizes are the multiples of 4. Counting up stops once the size passes `rows`.
  """
  found = None
  for patch in range(1, rows + 1):
    size = feature_size(patch)
    if size > rows:
      break
    if size == rows:
      found = patch
  return found


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


_FIRST_LAYER = "Transformer/encoderblock_0/"


def expected_shapes(cfg: musiq.ModelConfig) -> dict[str, jax.ShapeDtypeStruct]:
  """Every parameter's shape and dtype for `cfg`, via `jax.eval_shape` (nothing is computed), or
  from mst's user cache (`mst.scoring.traced_cache`) after the first time.

  Encoder layers all have the first one's shapes, so a one-layer model is traced and its layer
  repeated: tracing all of the paper model's 14 layers took half a second of every start, one layer
  still a quarter.
  """
  return traced_cache.param_shapes(musiq.SOURCES + (sys.modules[__name__],), cfg,
                                   functools.partial(_traced_shapes, cfg))


def _traced_shapes(cfg: musiq.ModelConfig) -> dict[str, jax.ShapeDtypeStruct]:
  one_layer = dataclasses.replace(cfg, num_layers=min(cfg.num_layers, 1))
  params = jax.eval_shape(functools.partial(musiq.init_params, one_layer), jax.random.key(0))
  shapes = flax.traverse_util.flatten_dict(params, sep="/")
  for name in [name for name in shapes if name.startswith(_FIRST_LAYER)]:
    for layer in range(1, cfg.num_layers):
      shapes[name.replace(_FIRST_LAYER, f"Transformer/encoderblock_{layer}/")] = shapes[name]
  return shapes


