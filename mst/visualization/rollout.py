"""Where a MUSIQ model looks in each scale: the attention rollout behind `mst-visualize`.

Attention rollout (Abnar & Zuidema 2020; the MUSIQ patent's figure 8): per layer, the head-averaged
attention A plus the residual, A' = 0.5 A + 0.5 I with rows renormalised, multiplied through the
layers, A'_L ... A'_1. The CLS token's row says how much each patch token feeds the score; it is
split by scale and drawn over the image at that scale (`figures`). The attention weights come
from the encoder's `attention_weights` intermediates (sown only when the `intermediates`
collection is mutable, so scoring never materialises them).
"""

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import tensorflow as tf

from mst.checkpoints import loader
from mst.data import multiscale
from mst.data import preprocess
from mst.scoring import inference
from mst.models import musiq

# The rollout holds a T x T matrix per layer: 14 layers x 4096^2 float32 is about 1 GB.
DEFAULT_MAX_TOKENS = 4096


def attention_weights(intermediates: dict, num_layers: int) -> list[jax.Array]:
  """The sown attention weights [B, heads, T, T] of every layer, first layer first."""
  blocks = intermediates["Transformer"]
  return [blocks[f"encoderblock_{i}"]["SelfAttention_0"]["attention_weights"][0]
          for i in range(num_layers)]


def residual_attention(weights: jax.Array) -> jax.Array:
  """A' = 0.5 * mean over heads + 0.5 * I, rows renormalised: [B, heads, T, T] -> [B, T, T]."""
  mixed = 0.5 * jnp.mean(weights.astype(jnp.float32), axis=1)
  diagonal = jnp.arange(mixed.shape[-1])
  mixed = mixed.at[:, diagonal, diagonal].add(0.5)
  return mixed / jnp.sum(mixed, axis=-1, keepdims=True)


def attention_rollout(attentions: Sequence[jax.Array]) -> jax.Array:
  """The full rollout A'_L ... A'_1 [B, T, T] of per-layer weights given first layer first."""
  rollout = residual_attention(attentions[0])
  for weights in attentions[1:]:
    rollout = jnp.einsum("bts,bsu->btu", residual_attention(weights), rollout)
  return rollout


def cls_rollout(attentions: Sequence[jax.Array]) -> jax.Array:
  """Row 0 (CLS) of `attention_rollout` [B, T], by vector-matrix products from the last layer
  down: O(L T^2) instead of the O(L T^3) of the full product."""
  batch, _, length, _ = attentions[0].shape
  row = jnp.zeros((batch, length), jnp.float32).at[:, 0].set(1.0)
  for weights in reversed(attentions):
    row = jnp.einsum("bt,bts->bs", row, residual_attention(weights))
  return row


def scale_grids(cls_row: np.ndarray, scale_idx: np.ndarray, mask: np.ndarray,
                grid_shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
  """Splits the CLS row of the patch tokens (CLS itself dropped) into one (count_h, count_w) grid
  per scale, real tokens in raster order. Patches cut from the sequence (l > 0) are NaN."""
  grids = []
  for scale, (count_h, count_w) in enumerate(grid_shapes):
    values = cls_row[mask & (scale_idx == scale)]
    if values.size > count_h * count_w:
      raise ValueError(f"scale {scale} has {values.size} tokens, more than its "
                       f"{count_h}x{count_w} patch grid")
    grid = np.full(count_h * count_w, np.nan, np.float32)
    grid[:values.size] = values
    grids.append(grid.reshape(count_h, count_w))
  return grids


@dataclasses.dataclass
class ScaleMap:
  """One panel: the image at one scale and the rollout share of each of its patches."""
  label: str  # "224 px", "native 1024x768"
  image: np.ndarray  # (h, w, 3) uint8, the image at this scale
  attention: np.ndarray  # (count_h, count_w): share of the CLS row per patch, NaN where cut
  pad_top: int  # TF 'SAME' padding of the patch grid, in pixels
  pad_left: int

  @property
  def share(self) -> float:
    return float(np.nansum(self.attention))


def _scale_sizes(height: int, width: int, pp_config: multiscale.MultiScaleConfig
                 ) -> list[tuple[str, int, int]]:
  """(label, h, w) of every scale in sequence order: resized copies ascending, then native."""
  sizes = []
  for length in pp_config.longer_side_lengths:
    rh, rw = preprocess.resized_size(tf.constant(height), tf.constant(width), length)
    sizes.append((f"{length} px", int(rh), int(rw)))
  if pp_config.max_seq_len_from_original_res != 0:
    sizes.append((f"native {width}x{height}", height, width))
  return sizes


class Visualizer:
  """Rollout maps of images under fixed params; compiles once per sequence-length bucket."""

  def __init__(self, params, model_config: musiq.ModelConfig,
               pp_config: multiscale.MultiScaleConfig, mos_scale: float = 1.0,
               max_tokens: int = DEFAULT_MAX_TOKENS):
    inference.check_compatible(model_config, pp_config)
    self.params = jax.device_put(params)
    self.model_config, self.pp_config = model_config, pp_config
    self.mos_scale, self.max_tokens = mos_scale, max_tokens
    model = musiq.Musiq(model_config)

    def forward(params, batch):
      logits, state = model.apply({"params": params}, batch, mutable=["intermediates"])
      weights = attention_weights(state["intermediates"], model_config.num_layers)
      return logits, cls_rollout(weights)

    self._forward = jax.jit(forward)

  @classmethod
  def from_checkpoint(cls, path: str, longer_side_lengths: tuple[int, ...] | None = None,
                      max_tokens: int = DEFAULT_MAX_TOKENS) -> "Visualizer":
    """An official `.npz` file or an mst-train workdir (as `inference.Predictor`)."""
    loaded = loader.load_for_inference(path, longer_side_lengths=longer_side_lengths)
    return cls(loaded.params, loaded.model_config, loaded.pp_config, loaded.mos_scale,
               max_tokens)

  def rollout(self, features: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(logits [C], CLS rollout row [N] of the patch tokens) of one preprocessed image."""
    batch = {key: value[None] for key, value in features.items()}
    logits, row = self._forward(self.params, batch)
    return np.asarray(logits[0]), np.asarray(row[0, 1:])

  def read_image(self, path: str) -> np.ndarray:
    """The image file at `path`, its size checked against `max_tokens` from its header, before
    its pixels are decoded (`image_io.read_image`)."""
    return inference.read_checked(path, self.pp_config, self.max_tokens)

  def attention_maps(self, image: np.ndarray, name: str = "image"
                     ) -> tuple[list[ScaleMap], np.ndarray]:
    """The per-scale maps and the logits of a decoded (H, W, 3) uint8 image (`name` for errors).

    Raises:
      image_io.ImageError: the image makes more than `max_tokens` tokens.
    """
    height, width = image.shape[:2]
    features = inference.bucketed_features(image, self.pp_config, self.max_tokens, name)
    logits, row = self.rollout(features)
    p = self.pp_config.patch_size
    sizes = _scale_sizes(height, width, self.pp_config)
    shapes = [(math.ceil(h / p), math.ceil(w / p)) for _, h, w in sizes]
    grids = scale_grids(row, features["scale_idx"], features["mask"], shapes)
    maps = []
    for (label, h, w), (count_h, count_w), grid in zip(sizes, shapes, grids):
      scaled = image if (h, w) == (height, width) else np.asarray(
          Image.fromarray(image).resize((w, h), Image.Resampling.LANCZOS))
      maps.append(ScaleMap(label, scaled, grid, (count_h * p - h) // 2, (count_w * p - w) // 2))
    return maps, logits

  def describe(self, logits: np.ndarray) -> str:
    """The prediction in words, for a figure title."""
    head = self.model_config.head
    out = inference.as_result(jax.tree.map(lambda x: x[0], inference.outputs(
        jnp.asarray(logits[None]), head, self.mos_scale)))
    if head == "classification":
      return f"class {out['class']} (p = {out['probability']:.2f})"
    if head == "distribution":
      return f"predicted score {out['score']:.2f} (1-{logits.shape[-1]})"
    return f"predicted score {out['score']:.3g}"
