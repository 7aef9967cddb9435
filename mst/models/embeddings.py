"""Position and scale embeddings added to patch tokens (MUSIQ section 3.2).

Spatial embeddings, by config name: `hse`, the learnable hash-based G x G grid shared by every scale;
`fixed`, one learnable vector per sequence position (the paper's "no HSE" ablation row); `sinusoid`,
the fixed sine table over the G x G grid; `none`. The scale embedding (SCE) is a learnable row per
scale. Names and shapes equal the official checkpoint's (`posembed_input/pos_embedding` (1, G*G, D),
`scaleembed_input/scale_embedding` (1, K+1, D)).
"""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

EMBEDDING_INIT = nn.initializers.normal(stddev=0.02)
SINE_MAX_SCALE = 10000


class HashSpatialEmbedding(nn.Module):
  """Adds row `spatial_idx` of a learnable (G*G, D) table."""
  grid_size: int

  @nn.compact
  def __call__(self, x: jax.Array, spatial_idx: jax.Array) -> jax.Array:
    table = self.param("pos_embedding", EMBEDDING_INIT, (1, self.grid_size ** 2, x.shape[-1]))
    return x + jnp.take(table[0], spatial_idx, axis=0).astype(x.dtype)


class FixedPositionEmbedding(nn.Module):
  """Adds a learnable vector per sequence position (ignores where the patch is in the image)."""
  max_positions: int

  @nn.compact
  def __call__(self, x: jax.Array, spatial_idx: jax.Array) -> jax.Array:
    del spatial_idx
    length = x.shape[1]
    if length > self.max_positions:
      raise ValueError(f"spatial_embedding='fixed' holds {self.max_positions} positions, but the "
                       f"sequence has {length} tokens: raise model.max_positions or lower l")
    table = self.param("pos_embedding", EMBEDDING_INIT, (1, self.max_positions, x.shape[-1]))
    return x + table[:, :length].astype(x.dtype)


def sinusoid_table(num_positions: int, dim: int) -> np.ndarray:
  """The Transformer's sine/cosine table: (num_positions, dim), sines on even, cosines on odd dims."""
  positions = np.arange(num_positions)[:, None]
  rates = np.power(SINE_MAX_SCALE, 2 * (np.arange(dim) // 2) / dim)
  angles = positions / rates
  angles[:, 0::2] = np.sin(angles[:, 0::2])
  angles[:, 1::2] = np.cos(angles[:, 1::2])
  return angles.astype(np.float32)


def add_sinusoid(x: jax.Array, spatial_idx: jax.Array, grid_size: int) -> jax.Array:
  table = jnp.asarray(sinusoid_table(grid_size ** 2, x.shape[-1]))
  return x + jnp.take(table, spatial_idx, axis=0).astype(x.dtype)


def add_spatial_embedding(kind: str, x: jax.Array, spatial_idx: jax.Array, *, grid_size: int,
                          max_positions: int) -> jax.Array:
  """Adds the named spatial embedding; creates its parameters in the calling module's scope."""
  adders: dict[str, Callable[[], jax.Array]] = {
      "hse": lambda: HashSpatialEmbedding(grid_size, name="posembed_input")(x, spatial_idx),
      "fixed": lambda: FixedPositionEmbedding(max_positions, name="posembed_fixed")(x, spatial_idx),
      "sinusoid": lambda: add_sinusoid(x, spatial_idx, grid_size),
      "none": lambda: x,
  }
  return adders[kind]()


class ScaleEmbedding(nn.Module):
  """Adds row `scale_idx` of a learnable (K+1, D) table."""
  num_scales: int

  @nn.compact
  def __call__(self, x: jax.Array, scale_idx: jax.Array) -> jax.Array:
    table = self.param("scale_embedding", EMBEDDING_INIT, (1, self.num_scales, x.shape[-1]))
    return x + jnp.take(table[0], scale_idx, axis=0).astype(x.dtype)


SPATIAL_EMBEDDINGS = ("hse", "fixed", "sinusoid", "none")
