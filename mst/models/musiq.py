"""MUSIQ: patch encoder -> `embedding` Dense -> masked Transformer -> head on the CLS token.

The input is the multi-scale batch dict of `mst.data.preprocess` (`patches`, `spatial_idx`,
`scale_idx`, `mask`), in training optionally with the entries of `mst.models.packing` (encode
only the real patches; several images packed per row); the output is logits [B, num_classes].
`scores` turns logits into quality scores. Parameter names and shapes equal the official
checkpoints' (see docs/checkpoints.md), so `mst.checkpoints` maps the released files onto this
tree directly.
"""

import functools
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp

from mst.models import config as model_config
from mst.models import embeddings
from mst.models import encoder
from mst.models import packing
from mst.models import patch_encoders

Batch = dict[str, jax.Array]

# The configuration lives in `mst.models.config` (so the encoder can take it without an import
# cycle); these names stay here because most code reaches them as `musiq.ModelConfig`.
ModelConfig = model_config.ModelConfig
HEADS = model_config.HEADS
DTYPES = model_config.DTYPES

CPU_PATCH_CHUNK = 256
# The modules whose code the network is: what a stored trace of it depends on
# (mst.runtime.traced_cache), so an edit to any of them traces anew.
SOURCES = (model_config, embeddings, encoder, packing, patch_encoders, sys.modules[__name__])


class PatchEmbedding(nn.Module):
  """Patch encoder then the `embedding` Dense: [1, n, P*P*3] patches -> [1, n, D] tokens."""
  patch_encoder: str
  patch_size: int
  hidden_size: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, patches: jax.Array) -> jax.Array:
    encode = patch_encoders.PATCH_ENCODERS[self.patch_encoder].features
    x = encode(patches, self.patch_size, self.dtype)
    return nn.Dense(self.hidden_size, dtype=self.dtype, name="embedding")(x)

  def param_names(self) -> tuple[str, ...]:
    """The top-level parameter names (`conv_root`, ..., `embedding`), as in the official files:
    the encoder's registered names (tested to be what it creates), read without tracing it."""
    return patch_encoders.PATCH_ENCODERS[self.patch_encoder].param_names + ("embedding",)


def _embedding_params(module: nn.Module, embed: PatchEmbedding, patch_size: int) -> dict:
  """The patch embedding's parameters, held in `module`'s own scope so they keep their official
  top-level names (`conv_root/kernel`, not `PatchEmbedding_0/...`).

  At init the embedding is initialised once and split; when applying, the parameters are read
  as they are: `self.param` would trace the initialiser again for every subtree to check shapes
  (a quarter of a second of tracing the paper model; checkpoint shapes are checked on load).
  """
  names = embed.param_names()
  if not module.is_initializing():
    params = {name: module.get_variable("params", name) for name in names}
    if missing := [name for name, value in params.items() if value is None]:
      raise ValueError(f"the parameters have no {missing} (a {embed.patch_encoder!r} patch "
                       "encoder's)")
    return params
  dummy = jnp.zeros((1, 1, patch_size ** 2 * 3), jnp.float32)
  initial = embed.init(module.make_rng("params"), dummy)["params"]
  return {name: module.param(name, lambda _, value=initial[name]: value) for name in names}


def embed_patches(embed: PatchEmbedding, params: dict, patches: jax.Array, mask: jax.Array,
                  chunk: int) -> jax.Array:
  """Tokens [B, N, D] of all patches; with `chunk` > 0, `chunk` patches at a time.

  Chunks keep the ResNet's activations in cache (1.2-1.8x faster on CPU). Real patches are moved
  to the front first, so chunks holding only padding are skipped: padded tokens are masked in
  attention, so their (zero) tokens never reach a real token's output.
  """
  batch, length, features = patches.shape
  apply = lambda x: embed.apply({"params": params}, x[None])[0]
  if not chunk or batch * length <= chunk:
    return apply(patches.reshape(-1, features)).reshape(batch, length, -1)
  flat, real = patches.reshape(-1, features), mask.reshape(-1)
  order = jnp.argsort(~real, stable=True)
  blocks = -(-flat.shape[0] // chunk)
  padding = blocks * chunk - flat.shape[0]
  flat = jnp.pad(flat[order], ((0, padding), (0, 0))).reshape(blocks, chunk, features)
  real = jnp.pad(real[order], (0, padding)).reshape(blocks, chunk)
  width = embed.hidden_size
  dtype = embed.dtype  # the `embedding` Dense computes and returns this dtype

  def one_block(block):
    return jax.lax.cond(real[block].any(), lambda: apply(flat[block]),
                        lambda: jnp.zeros((chunk, width), dtype))

  tokens = jax.lax.map(one_block, jnp.arange(blocks)).reshape(blocks * chunk, width)
  tokens = jnp.zeros_like(tokens[:batch * length]).at[order].set(tokens[:batch * length])
  return tokens.reshape(batch, length, width)


class Musiq(nn.Module):
  """The multi-scale image quality Transformer."""
  config: ModelConfig

  @nn.compact
  def __call__(self, batch: Batch, *, train: bool = False) -> jax.Array:
    cfg = self.config
    dtype = cfg.compute_dtype
    embed = PatchEmbedding(cfg.patch_encoder, cfg.patch_size, cfg.hidden_size, dtype, parent=None)
    params = _embedding_params(self, embed, cfg.patch_size)
    if "real_patch_idx" in batch:  # training: the host chose the (real) patches to encode
      x = packing.embed_real_patches(lambda p: embed.apply({"params": params}, p[None])[0],
                                     batch["patches"], batch["real_patch_idx"])
    else:
      chunked = cfg.chunked_on_cpu and not train and jax.default_backend() == "cpu"
      chunk = CPU_PATCH_CHUNK if chunked else 0
      x = embed_patches(embed, params, batch["patches"], batch["mask"], chunk)
    packed = batch if packing.is_packed(batch) else None
    # Only the CLS token reaches the head, unless every layer's attention is being recorded.
    cls_only = packed is None and not self.is_mutable_collection("intermediates")
    x = encoder.Encoder(cfg, name="Transformer")(
        x, batch["spatial_idx"], batch["scale_idx"], batch["mask"], deterministic=not train,
        packed=packed, cls_only=cls_only)
    x = packing.read_cls(x, batch["cls_idx"]) if packed else x[:, 0]
    if cfg.representation_size:
      x = jnp.tanh(nn.Dense(cfg.representation_size, dtype=dtype, name="pre_logits")(x))
    x = nn.Dense(cfg.num_classes, kernel_init=nn.initializers.zeros, dtype=dtype, name="head")(x)
    return x.astype(jnp.float32)


def scores(logits: jax.Array, head: str) -> jax.Array:
  """Quality scores [B] from logits: the output itself, or the expected bin (1..C) of a
  distribution head. Classification heads have no score."""
  if head == "score":
    return logits[:, 0]
  if head == "distribution":
    bins = jnp.arange(1, logits.shape[-1] + 1, dtype=jnp.float32)
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * bins, axis=-1)
  raise ValueError(f"a {head!r} head predicts classes, not a quality score")


def dummy_batch(config: ModelConfig, batch_size: int = 1, seq_len: int = 8) -> Batch:
  """An all-masked batch of the right shapes, for `init` and `jax.eval_shape`."""
  return {
      "patches": jnp.zeros((batch_size, seq_len, config.patch_size ** 2 * 3), jnp.float32),
      "spatial_idx": jnp.zeros((batch_size, seq_len), jnp.int32),
      "scale_idx": jnp.zeros((batch_size, seq_len), jnp.int32),
      "mask": jnp.zeros((batch_size, seq_len), bool),
  }


def init_params(config: ModelConfig, rng: jax.Array) -> dict:
  """Freshly initialised parameters of the model `config` describes (jitted: op-by-op init of the
  ResNet takes seconds; compiled once per config in a process)."""
  return _jitted_init(config)(rng)


@functools.lru_cache(maxsize=32)
def _jitted_init(config: ModelConfig):
  """The init of `config`'s model as one program, key -> params; kept for the last 32 configs."""
  return jax.jit(lambda key: Musiq(config).init(key, dummy_batch(config))["params"])


def count_params(params) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(params))
