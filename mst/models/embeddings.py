"""Position and scale embeddings added to patch tokens (MUSIQ section 3.2).

Spatial embeddings, the keys of `SPATIAL_EMBEDDINGS` (the one place one is registered: the model,
`ModelConfig`'s checks and checkpoint inference all read it): `hse`, the learnable hash-based
G x G grid shared by every scale; `fixed`, one learnable vector per sequence position (the paper's
"no HSE" ablation row); `sinusoid`, the fixed sine table over the G x G grid; `none`. The scale
embedding (SCE) is a learnable row per scale. Names and shapes equal the official checkpoint's
(`posembed_input/pos_embedding` (1, G*G, D), `scaleembed_input/scale_embedding` (1, K+1, D)).
"""

import dataclasses
import math
from typing import Any, Callable, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

EMBEDDING_INIT = nn.initializers.normal(stddev=0.02)
SINE_MAX_SCALE = 10000


class Sizes(Protocol):
  """What a spatial embedding reads of the model's config (a `mst.models.config.ModelConfig`,
  which imports this module for the registry's keys, so it is not imported here)."""
  grid_size: int
  max_positions: int


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
  """The Transformer's sine/cosine table (num_positions, dim): sines on even, cosines on odd
  dims."""
  positions = np.arange(num_positions)[:, None]
  rates = np.power(SINE_MAX_SCALE, 2 * (np.arange(dim) // 2) / dim)
  angles = positions / rates
  angles[:, 0::2] = np.sin(angles[:, 0::2])
  angles[:, 1::2] = np.cos(angles[:, 1::2])
  return angles.astype(np.float32)


def add_sinusoid(x: jax.Array, spatial_idx: jax.Array, grid_size: int) -> jax.Array:
  table = jnp.asarray(sinusoid_table(grid_size ** 2, x.shape[-1]))
  return x + jnp.take(table, spatial_idx, axis=0).astype(x.dtype)


class ScaleEmbedding(nn.Module):
  """Adds row `scale_idx` of a learnable (K+1, D) table."""
  num_scales: int

  @nn.compact
  def __call__(self, x: jax.Array, scale_idx: jax.Array) -> jax.Array:
    table = self.param("scale_embedding", EMBEDDING_INIT, (1, self.num_scales, x.shape[-1]))
    return x + jnp.take(table[0], scale_idx, axis=0).astype(x.dtype)


def _add_hse(x: jax.Array, spatial_idx: jax.Array, config: Sizes) -> jax.Array:
  """The learnable G x G table, named `posembed_input` as in the official checkpoints."""
  return HashSpatialEmbedding(config.grid_size, name="posembed_input")(x, spatial_idx)


def _grid_from_rows(rows: int) -> dict[str, Any]:
  """G of a (1, G*G, D) table."""
  grid = math.isqrt(rows)
  if grid * grid != rows:
    raise ValueError(f"posembed_input has {rows} rows, not a square G*G grid")
  return {"grid_size": grid}


def _add_fixed(x: jax.Array, spatial_idx: jax.Array, config: Sizes) -> jax.Array:
  """One learnable vector per position, up to `max_positions` (`posembed_fixed`)."""
  return FixedPositionEmbedding(config.max_positions, name="posembed_fixed")(x, spatial_idx)


def _positions_from_rows(rows: int) -> dict[str, Any]:
  """`max_positions`, the table's length."""
  return {"max_positions": rows}


def _add_sinusoid(x: jax.Array, spatial_idx: jax.Array, config: Sizes) -> jax.Array:
  """The fixed sine table over the G x G grid: no parameters."""
  return add_sinusoid(x, spatial_idx, config.grid_size)


def _add_nothing(x: jax.Array, spatial_idx: jax.Array, config: Sizes) -> jax.Array:
  """No spatial embedding (the tokens keep only their content and scale)."""
  del spatial_idx, config
  return x


def _no_fields(rows: int) -> dict[str, Any]:
  """For embeddings without a table: nothing to read."""
  del rows
  return {}


@dataclasses.dataclass(frozen=True)
class SpatialEmbedding:
  """One spatial embedding: how it is added, and the table a checkpoint shows it by.

  Attributes:
    add: `(x [B, N, D], spatial_idx [B, N], config) -> x` plus the embedding; creates its
      parameters in the calling module's scope (the `Transformer`'s).
    table: the parameter it stores, below `Transformer/`, of shape (1, rows, D) (e.g.
      "posembed_input/pos_embedding"); None when it stores none, so a file cannot tell it apart
      from another table-free embedding.
    fields_from_rows: the `ModelConfig` fields a table of `rows` rows means (e.g. `grid_size`);
      raises ValueError for a row count no config makes.
  """
  add: Callable[[jax.Array, jax.Array, Sizes], jax.Array]
  table: str | None = None
  fields_from_rows: Callable[[int], dict[str, Any]] = _no_fields


SPATIAL_EMBEDDINGS: dict[str, SpatialEmbedding] = {
    "hse": SpatialEmbedding(_add_hse, "posembed_input/pos_embedding", _grid_from_rows),
    "fixed": SpatialEmbedding(_add_fixed, "posembed_fixed/pos_embedding", _positions_from_rows),
    "sinusoid": SpatialEmbedding(_add_sinusoid),
    "none": SpatialEmbedding(_add_nothing),
}
