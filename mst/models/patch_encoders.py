"""Patch encoders: turn each P x P x 3 patch into one feature vector before the `embedding` Dense.

`linear` uses the flat pixels; `conv` the ResNet root (StdConv 7x7/2, GroupNorm, ReLU, max-pool
3x3/2); `resnet` the official 5-layer one (root plus one bottleneck unit). Parameter names equal
the official checkpoint's (`conv_root`, `gn_root`, `block1/unit1/...`); the modules are created in
the calling model's scope so those names sit at the top of the parameter tree, as in the files.

`PATCH_ENCODERS` is the one place an encoder is registered: `ModelConfig` takes its choices from
it and checkpoint inference (`mst.checkpoints.architecture`) its fingerprints and feature sizes.
Adding one means writing its features function and adding one `PatchEncoder` entry.
"""

import dataclasses
import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

ROOT_FEATURES = 64
BOTTLENECK_EXPANSION = 4


def standardize_kernel(kernel: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Weight standardisation: each output channel's kernel to zero mean, unit (population) std."""
  axes = (0, 1, 2)
  kernel = kernel - jnp.mean(kernel, axis=axes)
  return kernel / (jnp.std(kernel, axis=axes) + eps)


class StdConv(nn.Module):
  """Bias-free NHWC convolution with a weight-standardised kernel and TF 'SAME' padding."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shape = self.kernel_size + (x.shape[-1], self.features)
    kernel = standardize_kernel(self.param("kernel", nn.initializers.lecun_normal(), shape))
    if self.kernel_size == (1, 1) and self.strides == (1, 1):
      # A 1x1 convolution is a matrix product over channels; on CPU XLA runs it about 2x faster
      # as one (same result).
      return jnp.dot(x.astype(self.dtype), kernel[0, 0].astype(self.dtype))
    return jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype), self.strides, "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class GroupNorm(nn.Module):
  """GroupNorm over (H, W, C / groups) with per-channel scale and bias, as flax's GroupNorm.

  Statistics come from one pass of per-channel sums of x and x^2 (the variance flax also uses by
  default), then normalisation is one multiply-add per element: on CPU about twice as fast as
  `flax.linen.GroupNorm`, whose reductions over a grouped 5-D view vectorise poorly.
  """
  num_groups: int = 32
  epsilon: float = 1e-6
  scale_init: Callable = nn.initializers.ones
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, height, width, channels = x.shape
    per_group = channels // self.num_groups
    scale = self.param("scale", self.scale_init, (channels,))
    bias = self.param("bias", nn.initializers.zeros, (channels,))
    stats = x.astype(jnp.float32)
    sums = jnp.stack([jnp.sum(stats, axis=(1, 2)), jnp.sum(stats * stats, axis=(1, 2))])
    sums = sums.reshape(2, batch, self.num_groups, per_group).sum(-1) / (height * width * per_group)
    mean, mean_square = sums[0], sums[1]
    inv_std = jax.lax.rsqrt(jnp.maximum(mean_square - mean * mean, 0.0) + self.epsilon)
    multiplier = jnp.repeat(inv_std, per_group, axis=1) * scale
    offset = bias - jnp.repeat(mean, per_group, axis=1) * multiplier
    out = stats * multiplier[:, None, None, :] + offset[:, None, None, :]
    return out.astype(self.dtype)


class BottleneckUnit(nn.Module):
  """ResNet v1 bottleneck unit with GroupNorm (eps 1e-4), projecting the residual when needed."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out_features = self.features * BOTTLENECK_EXPANSION
    norm = lambda name, **kw: GroupNorm(epsilon=1e-4, dtype=self.dtype, name=name, **kw)
    residual = x
    if x.shape[-1] != out_features:
      residual = StdConv(out_features, (1, 1), dtype=self.dtype, name="conv_proj")(residual)
      residual = norm("gn_proj")(residual)
    y = nn.relu(norm("gn1")(StdConv(self.features, (1, 1), dtype=self.dtype, name="conv1")(x)))
    y = nn.relu(norm("gn2")(StdConv(self.features, (3, 3), dtype=self.dtype, name="conv2")(y)))
    y = StdConv(out_features, (1, 1), dtype=self.dtype, name="conv3")(y)
    # Zero-initialised scale: each unit starts as (projected) identity.
    y = norm("gn3", scale_init=nn.initializers.zeros)(y)
    return nn.relu(residual + y)


class Block(nn.Module):
  """A named stage holding one bottleneck unit (`block1/unit1` in the official files)."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return BottleneckUnit(self.features, dtype=self.dtype, name="unit1")(x)


def _pixels(patches: jax.Array, patch_size: int) -> jax.Array:
  """[B, N, P*P*3] -> [B*N, P, P, 3]: the flat (row, column, channel) order made spatial."""
  return patches.reshape(-1, patch_size, patch_size, 3)


def _root(patches: jax.Array, patch_size: int, dtype) -> jax.Array:
  x = StdConv(ROOT_FEATURES, (7, 7), (2, 2), dtype=dtype, name="conv_root")(
      _pixels(patches, patch_size))
  x = nn.relu(GroupNorm(epsilon=1e-6, dtype=dtype, name="gn_root")(x))
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")


def _pixels_after_root(patch_size: int) -> int:
  """Pixels per patch after the root's two stride-2 'SAME' steps (conv, then max-pool)."""
  return math.ceil(math.ceil(patch_size / 2) / 2) ** 2


def linear_features(patches: jax.Array, patch_size: int, dtype) -> jax.Array:
  """The flat pixels themselves."""
  del patch_size
  return patches.astype(dtype)


def linear_size(patch_size: int) -> int:
  """P * P * 3: one feature per pixel value."""
  return patch_size * patch_size * 3


def conv_features(patches: jax.Array, patch_size: int, dtype) -> jax.Array:
  """ResNet root features, flattened per patch in (row, column, channel) order."""
  x = _root(patches, patch_size, dtype)
  return x.reshape(patches.shape[:2] + (-1,))


def conv_size(patch_size: int) -> int:
  """(P/4)^2 * 64: the root's feature map (rounded up at each stride-2 step)."""
  return _pixels_after_root(patch_size) * ROOT_FEATURES


def resnet_features(patches: jax.Array, patch_size: int, dtype) -> jax.Array:
  """The official 5-layer ResNet: root then `block1`; (P/4, P/4, 256) flattened per patch."""
  x = Block(ROOT_FEATURES, dtype=dtype, name="block1")(_root(patches, patch_size, dtype))
  return x.reshape(patches.shape[:2] + (-1,))


def resnet_size(patch_size: int) -> int:
  """(P/4)^2 * 256: the bottleneck unit's expanded feature map."""
  return _pixels_after_root(patch_size) * ROOT_FEATURES * BOTTLENECK_EXPANSION


FeaturesFn = Callable[[jax.Array, int, jnp.dtype], jax.Array]


@dataclasses.dataclass(frozen=True)
class PatchEncoder:
  """One patch encoder: what it computes, and how a checkpoint made with it looks.

  Attributes:
    features: `(patches [B, N, P*P*3], P, dtype) -> [B, N, feature_size(P)]`; creates its
      parameters in the calling module's scope (their names are the top-level `param_names`).
    feature_size: P -> the features per patch, i.e. the rows of the `embedding` kernel. It must
      not decrease as P grows: checkpoint inference solves it for P.
    param_names: the top-level parameter subtrees `features` creates, which is how a checkpoint
      shows this encoder. Inference picks the entry with the most names, all present in the file
      (so `resnet`, which also has the root, wins over `conv`); `()` matches any file and is the
      fallback.
  """
  features: FeaturesFn
  feature_size: Callable[[int], int]
  param_names: tuple[str, ...] = ()


PATCH_ENCODERS: dict[str, PatchEncoder] = {
    "linear": PatchEncoder(linear_features, linear_size),
    "conv": PatchEncoder(conv_features, conv_size, ("conv_root", "gn_root")),
    "resnet": PatchEncoder(resnet_features, resnet_size, ("conv_root", "gn_root", "block1")),
}
