"""An independent PyTorch (CPU) MUSIQ network: the cross-check and the benchmark baseline for mst.

It is written from the model facts in docs/model.md and the official code, not from mst's Flax code,
so agreement between the two is evidence that both follow the official network. It loads the
official flat parameter layout (`conv_root/kernel`, `Transformer/encoderblock_0/...`, with or
without the `opt/target/` prefix) and infers the architecture from the shapes. Inference only: no
dropout, no stochastic depth.

The patch encoder follows the keys present: `conv_root` + `block1/unit1` is the official 5-layer
ResNet, `conv_root` alone the simple conv stem, neither the linear encoder.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_LN_EPS = 1e-6
_GN_ROOT_EPS = 1e-6  # old flax.nn.GroupNorm default, used for gn_root
_GN_UNIT_EPS = 1e-4  # set explicitly in the official bottleneck unit
_GN_GROUPS = 32
_STD_CONV_EPS = 1e-5
_RESNET_WIDTH = 64

FlatParams = dict[str, np.ndarray]


def _tensor(array) -> nn.Parameter:
  return nn.Parameter(torch.as_tensor(np.asarray(array, np.float32)), requires_grad=False)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TF 'SAME' padding (before, after) for one axis: the odd pixel goes after."""
  out = math.ceil(size / stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
  """Pads an NCHW tensor as TF 'SAME' would for this kernel and stride."""
  top, bottom = _same_pads(x.shape[2], kernel, stride)
  left, right = _same_pads(x.shape[3], kernel, stride)
  return F.pad(x, (left, right, top, bottom), value=value)


class StdConv(nn.Module):
  """Bias-free conv whose kernel is standardised per output channel over (kh, kw, in)."""

  def __init__(self, kernel_hwio: np.ndarray, stride: int = 1):
    super().__init__()
    self.weight = _tensor(np.transpose(kernel_hwio, (3, 2, 0, 1)))  # HWIO -> OIHW
    self.stride = stride

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    w = self.weight
    mean = w.mean(dim=(1, 2, 3), keepdim=True)
    std = w.std(dim=(1, 2, 3), keepdim=True, correction=0)  # population std, like jnp.std
    w = (w - mean) / (std + _STD_CONV_EPS)
    x = _pad_same(x, w.shape[-1], self.stride)
    return F.conv2d(x, w, stride=self.stride)


class GroupNorm(nn.Module):
  """GroupNorm with 32 groups; scale/bias may come as (C,) or (1, 1, 1, C)."""

  def __init__(self, scale: np.ndarray, bias: np.ndarray, eps: float):
    super().__init__()
    self.weight = _tensor(np.reshape(scale, -1))
    self.bias = _tensor(np.reshape(bias, -1))
    self.eps = eps

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.group_norm(x, _GN_GROUPS, self.weight, self.bias, self.eps)


class Bottleneck(nn.Module):
  """The official ResNet v1 bottleneck unit with a projected, normalised residual."""

  def __init__(self, flat: FlatParams, prefix: str):
    super().__init__()

    def conv(name):
      return StdConv(flat[f"{prefix}/{name}/kernel"])

    def norm(name):
      return GroupNorm(flat[f"{prefix}/{name}/scale"], flat[f"{prefix}/{name}/bias"], _GN_UNIT_EPS)

    self.conv1, self.gn1 = conv("conv1"), norm("gn1")
    self.conv2, self.gn2 = conv("conv2"), norm("gn2")
    self.conv3, self.gn3 = conv("conv3"), norm("gn3")
    self.conv_proj, self.gn_proj = conv("conv_proj"), norm("gn_proj")

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    residual = self.gn_proj(self.conv_proj(x))
    y = F.relu(self.gn1(self.conv1(x)))
    y = F.relu(self.gn2(self.conv2(y)))
    y = self.gn3(self.conv3(y))
    return F.relu(residual + y)


class PatchEncoder(nn.Module):
  """Flat P*P*3 patches -> D-dim tokens: optional ResNet stem and unit, then Dense `embedding`."""

  def __init__(self, flat: FlatParams):
    super().__init__()
    self.has_root = "conv_root/kernel" in flat
    self.has_unit = "block1/unit1/conv1/kernel" in flat
    if self.has_root:
      self.conv_root = StdConv(flat["conv_root/kernel"], stride=2)
      self.gn_root = GroupNorm(flat["gn_root/scale"], flat["gn_root/bias"], _GN_ROOT_EPS)
    if self.has_unit:
      self.unit = Bottleneck(flat, "block1/unit1")
    self.embedding = _linear(flat, "embedding")

  def forward(self, patches: torch.Tensor) -> torch.Tensor:
    batch, length, channels = patches.shape
    if self.has_root:
      size = math.isqrt(channels // 3)
      x = patches.reshape(batch * length, size, size, 3).permute(0, 3, 1, 2)  # NHWC -> NCHW
      x = F.relu(self.gn_root(self.conv_root(x)))
      x = F.max_pool2d(_pad_same(x, 3, 2, value=-math.inf), kernel_size=3, stride=2)
      if self.has_unit:
        x = self.unit(x)
      # The embedding kernel expects (row, column, channel) order.
      patches = x.permute(0, 2, 3, 1).reshape(batch, length, -1)
    return self.embedding(patches)


def _linear(flat: FlatParams, prefix: str) -> nn.Linear:
  """An nn.Linear from a Flax Dense kernel (in, out) and bias (out,)."""
  kernel = np.asarray(flat[f"{prefix}/kernel"])
  layer = nn.Linear(kernel.shape[0], kernel.shape[1])
  layer.weight = _tensor(kernel.T)
  layer.bias = _tensor(flat[f"{prefix}/bias"])
  return layer


def _layer_norm(flat: FlatParams, prefix: str) -> nn.LayerNorm:
  scale = np.asarray(flat[f"{prefix}/scale"])
  layer = nn.LayerNorm(scale.shape[0], eps=_LN_EPS)
  layer.weight = _tensor(scale)
  layer.bias = _tensor(flat[f"{prefix}/bias"])
  return layer


class SelfAttention(nn.Module):
  """Multi-head self-attention from kernels shaped (D, heads, head_dim) / (heads, head_dim, D)."""

  def __init__(self, flat: FlatParams, prefix: str):
    super().__init__()
    hidden, self.num_heads, self.head_dim = flat[f"{prefix}/query/kernel"].shape
    self.qkv = nn.ModuleList(
        [self._projection(flat, f"{prefix}/{name}", hidden) for name in ("query", "key", "value")])
    self.out = nn.Linear(hidden, hidden)
    self.out.weight = _tensor(np.reshape(flat[f"{prefix}/out/kernel"], (hidden, hidden)).T)
    self.out.bias = _tensor(flat[f"{prefix}/out/bias"])

  @staticmethod
  def _projection(flat: FlatParams, prefix: str, hidden: int) -> nn.Linear:
    layer = nn.Linear(hidden, hidden)
    layer.weight = _tensor(np.reshape(flat[f"{prefix}/kernel"], (hidden, hidden)).T)
    layer.bias = _tensor(np.reshape(flat[f"{prefix}/bias"], -1))
    return layer

  def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    batch, length, hidden = x.shape
    q, k, v = (p(x).reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
               for p in self.qkv)
    # Padded keys get no weight; every row keeps the CLS key, so none is fully masked.
    attn_mask = key_mask[:, None, None, :]
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # scale 1/sqrt(head_dim)
    return self.out(y.transpose(1, 2).reshape(batch, length, hidden))


class EncoderBlock(nn.Module):
  """Pre-LN Transformer block: x + MHA(LN(x)), then x + MLP(LN(x)) with tanh-GELU."""

  def __init__(self, flat: FlatParams, prefix: str):
    super().__init__()
    self.ln_attn = _layer_norm(flat, f"{prefix}/LayerNorm_0")
    self.attn = SelfAttention(flat, f"{prefix}/SelfAttention_0")
    self.ln_mlp = _layer_norm(flat, f"{prefix}/LayerNorm_1")
    self.fc1 = _linear(flat, f"{prefix}/MlpBlock_0/Dense_0")
    self.fc2 = _linear(flat, f"{prefix}/MlpBlock_0/Dense_1")

  def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    x = x + self.attn(self.ln_attn(x), key_mask)
    return x + self.fc2(F.gelu(self.fc1(self.ln_mlp(x)), approximate="tanh"))


class TorchMusiq(nn.Module):
  """MUSIQ: patch encoder, hash spatial + scale embeddings, CLS, encoder, head on CLS."""

  def __init__(self, flat: FlatParams):
    super().__init__()
    flat = {k.removeprefix("opt/target/"): v for k, v in flat.items()}
    self.patch_encoder = PatchEncoder(flat)
    self.pos_embedding = _tensor(flat["Transformer/posembed_input/pos_embedding"][0])
    self.scale_embedding = _tensor(flat["Transformer/scaleembed_input/scale_embedding"][0])
    self.cls = _tensor(flat["Transformer/cls"])
    num_layers = len({k.split("/")[1] for k in flat if k.startswith("Transformer/encoderblock_")})
    self.blocks = nn.ModuleList(
        [EncoderBlock(flat, f"Transformer/encoderblock_{i}") for i in range(num_layers)])
    self.encoder_norm = _layer_norm(flat, "Transformer/encoder_norm")
    self.pre_logits = _linear(flat, "pre_logits") if "pre_logits/kernel" in flat else None
    self.head = _linear(flat, "head")

  @classmethod
  def from_flat_params(cls, flat: FlatParams) -> "TorchMusiq":
    """Builds the network from an official flat dict; layers, D, heads, MLP, G, K+1 from shapes."""
    return cls(flat).eval()

  def forward(self, patches: torch.Tensor, spatial_idx: torch.Tensor, scale_idx: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
    """[B, N, P*P*3] f32, [B, N] int, [B, N] int, [B, N] bool -> logits [B, classes]."""
    x = self.patch_encoder(patches)
    x = x + self.pos_embedding[spatial_idx.long()] + self.scale_embedding[scale_idx.long()]
    x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
    key_mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1).bool()
    for block in self.blocks:
      x = block(x, key_mask)
    x = self.encoder_norm(x)[:, 0]
    if self.pre_logits is not None:
      x = torch.tanh(self.pre_logits(x))
    return self.head(x)


def score(logits: torch.Tensor) -> torch.Tensor:
  """The quality score: the output itself for one class, else the mean of softmax over 1..C."""
  if logits.shape[-1] == 1:
    return logits[..., 0]
  bins = torch.arange(1, logits.shape[-1] + 1, dtype=logits.dtype)
  return (torch.softmax(logits, dim=-1) * bins).sum(-1)


def _resnet_params(rng: np.random.Generator) -> FlatParams:
  """Random ResNet patch-encoder parameters; norms vary around 1 so every path matters."""
  def conv(kh, cin, cout):
    return rng.normal(0.0, math.sqrt(2.0 / (kh * kh * cin)), (kh, kh, cin, cout))

  def norm(prefix, channels):
    return {f"{prefix}/scale": 1.0 + 0.1 * rng.normal(size=channels),
            f"{prefix}/bias": 0.1 * rng.normal(size=channels)}

  w, unit = _RESNET_WIDTH, "block1/unit1"
  flat = {"conv_root/kernel": conv(7, 3, w), **norm("gn_root", w),
          f"{unit}/conv1/kernel": conv(1, w, w), **norm(f"{unit}/gn1", w),
          f"{unit}/conv2/kernel": conv(3, w, w), **norm(f"{unit}/gn2", w),
          f"{unit}/conv3/kernel": conv(1, w, 4 * w), **norm(f"{unit}/gn3", 4 * w),
          f"{unit}/conv_proj/kernel": conv(1, w, 4 * w), **norm(f"{unit}/gn_proj", 4 * w)}
  return flat


def random_flat_params(num_layers: int = 14, hidden: int = 384, heads: int = 6, mlp: int = 1152,
                       grid: int = 10, num_scales: int = 3, patch_size: int = 32,
                       num_classes: int = 1, seed: int = 0) -> FlatParams:
  """Random float32 parameters in the official flat layout (ResNet encoder), no checkpoint needed.

  `num_scales` is the number of scale-embedding rows (K resized variants + native).
  """
  rng = np.random.default_rng(seed)

  def dense(prefix, fan_in, fan_out, kernel_shape=None, bias_shape=None):
    kernel = rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), (fan_in, fan_out))
    return {f"{prefix}/kernel": kernel.reshape(kernel_shape or kernel.shape),
            f"{prefix}/bias": 0.02 * rng.normal(size=bias_shape or (fan_out,))}

  def layer_norm(prefix):
    return {f"{prefix}/scale": 1.0 + 0.1 * rng.normal(size=hidden),
            f"{prefix}/bias": 0.05 * rng.normal(size=hidden)}

  def table(rows):
    return 0.02 * rng.normal(size=(1, rows, hidden))

  head_dim = hidden // heads
  features = math.ceil(patch_size / 4) ** 2 * 4 * _RESNET_WIDTH
  flat = {**_resnet_params(rng), **dense("embedding", features, hidden),
          "Transformer/posembed_input/pos_embedding": table(grid * grid),
          "Transformer/scaleembed_input/scale_embedding": table(num_scales),
          "Transformer/cls": table(1)}
  for i in range(num_layers):
    block = f"Transformer/encoderblock_{i}"
    attn = f"{block}/SelfAttention_0"
    flat.update(layer_norm(f"{block}/LayerNorm_0"))
    for name in ("query", "key", "value"):
      flat.update(
          dense(f"{attn}/{name}", hidden, hidden, (hidden, heads, head_dim), (heads, head_dim)))
    flat.update(dense(f"{attn}/out", hidden, hidden, (heads, head_dim, hidden)))
    flat.update(layer_norm(f"{block}/LayerNorm_1"))
    flat.update(dense(f"{block}/MlpBlock_0/Dense_0", hidden, mlp))
    flat.update(dense(f"{block}/MlpBlock_0/Dense_1", mlp, hidden))
  flat.update(layer_norm("Transformer/encoder_norm"))
  flat.update(dense("head", hidden, num_classes))
  return {k: np.asarray(v, np.float32) for k, v in flat.items()}


def nest_flat_params(flat: FlatParams) -> dict:
  """The flat official dict as the nested Flax tree (GroupNorm scale/bias flattened to (C,))."""
  tree: dict = {}
  for key, value in flat.items():
    *parents, leaf = key.removeprefix("opt/target/").split("/")
    node = tree
    for name in parents:
      node = node.setdefault(name, {})
    is_group_norm = parents and parents[-1].startswith("gn")
    node[leaf] = np.reshape(value, -1) if is_group_norm else np.asarray(value)
  return tree
