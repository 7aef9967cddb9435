"""The masked pre-LN Transformer encoder (named `Transformer` in the official checkpoints).

Padded tokens are masked as attention keys, so they never change a real token's output (their
own rows are computed and ignored). When only the CLS output is read (`cls_only`), the last block
computes that row alone. On GPU and TPU attention goes through `jax.nn.dot_product_attention`,
which lets XLA pick fused kernels; in inference on CPU through `chunked_attention`, blocks of
queries at a time; with attention dropout in training, through an explicit softmax, the only
place the weights must be materialised. When the `intermediates` collection is mutable, the
explicit softmax also runs, and each layer sows its weights as `attention_weights`
[B, heads, T, S] (CLS first) for `mst.visualization`.

Every module takes the model's `ModelConfig` (field `config`) and reads the sizes, rates and dtype
it needs there, so a new hyper-parameter is declared once, in `mst.models.config`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mst.models.config import ModelConfig
from mst.models import embeddings
from mst.models import packing

XAVIER = nn.initializers.xavier_uniform()


class SelfAttention(nn.Module):
  """Multi-head self-attention with q/k/v/out biases and a key-padding mask.

  Reads `num_heads`, `attention_dropout_rate`, `chunked_on_cpu` and `dtype` from `config`.
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool,
               queries: int | None = None) -> jax.Array:
    """x [B, S, D] -> [B, S, D]; with `queries`, only the first `queries` tokens attend
    (-> [B, queries, D]): keys and values still come from all of x."""
    dim, heads, dtype = x.shape[-1], self.config.num_heads, self.config.compute_dtype
    if dim % heads:
      raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
    project = lambda name, tokens: nn.DenseGeneral(
        (heads, dim // heads), kernel_init=XAVIER, dtype=dtype, name=name)(tokens)
    q = project("query", x if queries is None else x[:, :queries])
    k, v = project("key", x), project("value", x)
    # (B, heads, T, S) by broadcasting, from a key mask [B, S] or a pair mask [B, T, S] (packed)
    key_mask = mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]
    if self.is_mutable_collection("intermediates") or self._drops_weights(deterministic):
      out = self._explicit_attention(q, k, v, key_mask, deterministic)
    elif (self.config.chunked_on_cpu and deterministic and mask.ndim == 2
          and jax.default_backend() == "cpu"):
      out = chunked_attention(q, k, v, mask)
    else:
      out = jax.nn.dot_product_attention(q, k, v, mask=key_mask)
    return nn.DenseGeneral(dim, axis=(-2, -1), kernel_init=XAVIER, dtype=dtype, name="out")(out)

  def _drops_weights(self, deterministic: bool) -> bool:
    """Attention dropout applies (training with a positive rate): the weights must exist."""
    return not deterministic and self.config.attention_dropout_rate > 0.0

  def _explicit_attention(self, q, k, v, key_mask, deterministic):
    logits = jnp.einsum("bthd,bshd->bhts", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    logits = jnp.where(key_mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    self.sow("intermediates", "attention_weights", weights)  # a no-op unless it is mutable
    weights = weights.astype(q.dtype)
    if self._drops_weights(deterministic):
      weights = nn.Dropout(self.config.attention_dropout_rate)(weights, deterministic=False)
    return jnp.einsum("bhts,bshd->bthd", weights, v)


def _attend(q: jax.Array, k_t: jax.Array, v: jax.Array, bias: jax.Array) -> jax.Array:
  """Softmax attention of one head: q [T, d] (already scaled) over k_t [d, S] and v [S, d], with
  an additive key bias [S] (0, or float32 min for a masked key)."""
  logits = (q @ k_t).astype(jnp.float32) + bias
  weights = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  out = weights.astype(v.dtype) @ v
  return out / jnp.sum(weights, axis=-1, keepdims=True).astype(out.dtype)


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                      chunk: int = 256) -> jax.Array:
  """Masked softmax attention, one (example, head, block of <= `chunk` queries) at a time.

  Equal to `jax.nn.dot_product_attention`; on CPU 2-3x faster, since each block's logits stay in
  cache, and its memory is O(chunk * S) instead of O(T * S) (a 12-megapixel image has 12k tokens).
  Heads are laid out one after another first, so each block is two plain matrix products (about
  1.5x faster than batching the heads inside the block).
  """
  batch, length, heads, dim = q.shape
  blocks = -(-length // chunk)
  size = -(-length // blocks)  # blocks of equal size, padded by fewer than `blocks` rows
  q = q * jnp.asarray(dim ** -0.5, q.dtype)
  q = jnp.pad(q.transpose(0, 2, 1, 3), ((0, 0), (0, 0), (0, blocks * size - length), (0, 0)))
  q = q.reshape(batch, heads, blocks, size, dim)
  k_t = k.transpose(0, 2, 3, 1)  # [B, heads, d, S]
  v = v.transpose(0, 2, 1, 3)  # [B, heads, S, d]
  bias = jnp.where(mask, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)

  def one_block(index):
    example, head, block = index // (heads * blocks), index // blocks % heads, index % blocks
    return _attend(q[example, head, block], k_t[example, head], v[example, head], bias[example])

  out = jax.lax.map(one_block, jnp.arange(batch * heads * blocks))
  out = out.reshape(batch, heads, blocks * size, dim)[:, :, :length]
  return out.transpose(0, 2, 1, 3)


class MlpBlock(nn.Module):
  """Dense to `config.mlp_dim` -> GELU (tanh approximation) -> dropout -> Dense -> dropout."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    dense = lambda features, name: nn.Dense(
        features, kernel_init=XAVIER, bias_init=nn.initializers.normal(1e-6),
        dtype=self.config.compute_dtype, name=name)
    # Two Dropout modules (not one called twice), so the masks keep their RNG streams.
    dropout = lambda y: nn.Dropout(self.config.dropout_rate)(y, deterministic=deterministic)
    y = nn.gelu(dense(self.config.mlp_dim, "Dense_0")(x), approximate=True)
    y = dense(x.shape[-1], "Dense_1")(dropout(y))
    return dropout(y)


def drop_path(x: jax.Array, rate: float, module: nn.Module, deterministic: bool,
              segment_ids: jax.Array | None = None) -> jax.Array:
  """Stochastic depth: zeroes a residual branch per example (per packed image, when
  `segment_ids` are given) with probability `rate`.

  As in the official code the kept branches are not rescaled, so evaluation needs no correction
  only when rate is small; it is 0 in every released configuration.
  """
  if deterministic or rate == 0.0:
    return x
  rng = module.make_rng("dropout")
  if segment_ids is None:
    keep = jax.random.bernoulli(rng, 1.0 - rate, (x.shape[0], 1, 1))
  else:
    keep = packing.per_image(jax.random.bernoulli(rng, 1.0 - rate, x.shape[:2]), segment_ids)
  return x * keep.astype(x.dtype)


class EncoderBlock(nn.Module):
  """Pre-LN block: x + attention(LN(x)), then + MLP(LN(.)), each branch with stochastic depth.

  `drop_path_rate` is this block's own (it grows with depth, see `Encoder`); the rest comes from
  `config`.
  """
  config: ModelConfig
  drop_path_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool,
               segment_ids: jax.Array | None = None, cls_only: bool = False) -> jax.Array:
    """x [B, T, D] -> [B, T, D], or with `cls_only` the first (CLS) token's output [B, 1, D]."""
    norm = lambda name: nn.LayerNorm(epsilon=1e-6, dtype=self.config.compute_dtype, name=name)
    y = norm("LayerNorm_0")(x)
    y = SelfAttention(self.config, name="SelfAttention_0")(
        y, mask, deterministic, queries=1 if cls_only else None)
    y = nn.Dropout(self.config.dropout_rate)(y, deterministic=deterministic)
    x = (x[:, :1] if cls_only else x) + drop_path(y, self.drop_path_rate, self, deterministic,
                                                   segment_ids)
    y = norm("LayerNorm_1")(x)
    y = MlpBlock(self.config, name="MlpBlock_0")(y, deterministic)
    return x + drop_path(y, self.drop_path_rate, self, deterministic, segment_ids)


class Encoder(nn.Module):
  """Embeddings, CLS token, `num_layers` blocks and a final LayerNorm (`Transformer` in the files).

  The spatial and scale embeddings are added to the patch tokens only; the CLS token (zeros init)
  is prepended after, unmasked. With `packed` (the batch's `segment_ids` and `cls_idx`, see
  `mst.models.packing`) the CLS token is written into each image's CLS slot instead, and
  attention is block-diagonal.
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array, spatial_idx: jax.Array, scale_idx: jax.Array, mask: jax.Array,
               deterministic: bool, packed: dict[str, jax.Array] | None = None,
               cls_only: bool = False) -> jax.Array:
    """Tokens [B, N, D] -> outputs [B, N + 1, D], CLS first; with `cls_only` (not packed) the
    CLS output alone [B, 1, D]: the last block then attends and runs its MLP for that token
    only (most of one block's work saved), with the same CLS output."""
    cfg = self.config
    if cls_only and packed is not None:
      raise ValueError("cls_only reads the first token; packed rows hold several CLS tokens")
    x = embeddings.SPATIAL_EMBEDDINGS[cfg.spatial_embedding].add(x, spatial_idx, cfg)
    if cfg.use_scale_embedding:
      x = embeddings.ScaleEmbedding(cfg.num_scales, name="scaleembed_input")(x, scale_idx)
    cls = self.param("cls", nn.initializers.zeros, (1, 1, x.shape[-1]))
    segment_ids = None
    if packed is None:
      x, mask = self._prepend_cls(x, mask, cls)
    else:
      x = packing.place_cls(x, cls[0, 0], packed["cls_idx"])
      segment_ids = packed["segment_ids"]
      mask = packing.attention_mask(segment_ids)
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
    for layer in range(cfg.num_layers):
      x = EncoderBlock(cfg, self._drop_path_rate(layer), name=f"encoderblock_{layer}")(
          x, mask, deterministic, segment_ids, cls_only=cls_only and layer == cfg.num_layers - 1)
    return nn.LayerNorm(epsilon=1e-6, dtype=cfg.compute_dtype, name="encoder_norm")(x)

  def _prepend_cls(self, x: jax.Array, mask: jax.Array, cls: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
    """The learnable `cls` token in front of every sequence, with a true mask entry."""
    batch, _, dim = x.shape
    x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, dim)).astype(x.dtype), x], axis=1)
    return x, jnp.concatenate([jnp.ones((batch, 1), bool), mask], axis=1)

  def _drop_path_rate(self, layer: int) -> float:
    """Stochastic depth of block `layer`: linear from 0 at the first to `stochastic_depth` at
    the last."""
    return self.config.stochastic_depth * layer / max(self.config.num_layers - 1, 1)
