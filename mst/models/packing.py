"""The model side of training without padding work (the host side is `mst.data.packing`).

Two optional batch entries change how `Musiq` runs, both indexing each device shard's tokens
flattened, so every gather and scatter stays on its device under data parallelism:

- `real_patch_idx` [shards, K]: the patches to encode (real ones first). The patch encoder runs
  on those K per shard; every other token starts as zeros (a padded token is masked in attention,
  so its value never reaches a real token, and the scores and gradients equal the padded path's).
- `segment_ids` [rows, T] and `cls_idx` [shards, images per shard]: packed rows holding several
  images. Each image's CLS slot gets the `cls` token (no spatial or scale embedding, as when it is
  prepended), attention is block-diagonal (a token sees only its own image's tokens), and the
  head reads each image's CLS token, in the batch's image order.
"""

import jax
import jax.numpy as jnp

Batch = dict[str, jax.Array]


def is_packed(batch: Batch) -> bool:
  return "cls_idx" in batch


def _per_shard(x: jax.Array, shards: int) -> jax.Array:
  """[rows, T, ...] -> [shards, rows / shards * T, ...]: each shard's tokens in one run."""
  return x.reshape((shards, -1) + x.shape[2:])


def embed_real_patches(embed, patches: jax.Array, real_patch_idx: jax.Array) -> jax.Array:
  """Tokens [rows, T, D] with `embed` ([n, P*P*3] -> [n, D]) run on the indexed patches only;
  the other tokens are zeros."""
  shards, budget = real_patch_idx.shape
  rows, length, _ = patches.shape
  chosen = jnp.take_along_axis(_per_shard(patches, shards), real_patch_idx[..., None], axis=1)
  tokens = embed(chosen.reshape(shards * budget, -1)).reshape(shards, budget, -1)
  place = lambda idx, values: jnp.zeros((rows // shards * length,) + values.shape[1:],
                                        values.dtype).at[idx].set(values)
  return jax.vmap(place)(real_patch_idx, tokens).reshape(rows, length, -1)


def place_cls(x: jax.Array, cls: jax.Array, cls_idx: jax.Array) -> jax.Array:
  """x [rows, T, D] with the `cls` token [D] written at every image's CLS slot."""
  shards = cls_idx.shape[0]
  set_cls = lambda tokens, idx: tokens.at[idx].set(cls.astype(tokens.dtype))
  return jax.vmap(set_cls)(_per_shard(x, shards), cls_idx).reshape(x.shape)


def attention_mask(segment_ids: jax.Array) -> jax.Array:
  """[rows, T, T]: query t may attend to key s when both belong to the same image (empty slots,
  segment 0, see only each other, so no query row is fully masked)."""
  return segment_ids[:, :, None] == segment_ids[:, None, :]


def read_cls(x: jax.Array, cls_idx: jax.Array) -> jax.Array:
  """The CLS token of every image, [images, D], in the batch's image order."""
  shards = cls_idx.shape[0]
  picked = jnp.take_along_axis(_per_shard(x, shards), cls_idx[..., None], axis=1)
  return picked.reshape(-1, x.shape[-1])


def per_image(keep: jax.Array, segment_ids: jax.Array) -> jax.Array:
  """A per-(row, segment) draw [rows, T] spread to each token [rows, T, 1] (stochastic depth
  drops a packed image's branch, not its whole row's)."""
  return jnp.take_along_axis(keep, segment_ids, axis=1)[..., None]
