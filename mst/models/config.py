"""`ModelConfig`, the architecture every module of the network reads, and its checks.

It lives apart from `musiq` so that `encoder` can take it without an import cycle (`musiq` imports
`encoder`); `musiq.ModelConfig` is the same class. The choices of `patch_encoder` and
`spatial_embedding` are the keys of their registries (`patch_encoders.PATCH_ENCODERS`,
`embeddings.SPATIAL_EMBEDDINGS`), read when a config is made, so a new entry there is accepted
here with no edit.
"""

import dataclasses

import jax.numpy as jnp

from mst.models import embeddings
from mst.models import patch_encoders

HEADS = ("score", "distribution", "classification")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

_POSITIVE_FIELDS = ("patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim",
                    "grid_size", "num_scales", "num_classes", "max_positions")
_RATE_FIELDS = ("dropout_rate", "attention_dropout_rate", "stochastic_depth")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The architecture. Defaults are the paper's model (27.1 M parameters).

  Attributes:
    patch_size: P; the patches are P x P x 3.
    hidden_size: D, the token width.
    num_layers, num_heads, mlp_dim: the Transformer encoder.
    num_classes: outputs of the head: 1 for a score, C bins for a distribution, N classes.
    grid_size: G of the hash-based spatial embedding.
    num_scales: K + 1, rows of the scale embedding (resized copies plus the native image).
    patch_encoder: a key of `patch_encoders.PATCH_ENCODERS`.
    spatial_embedding: a key of `embeddings.SPATIAL_EMBEDDINGS`.
    use_scale_embedding: add the scale embedding (SCE).
    max_positions: table length for spatial_embedding="fixed".
    representation_size: width of an optional tanh `pre_logits` layer before the head.
    head: one of HEADS: "score" (one output), "distribution" (score = expectation over bins
      1..C) or "classification".
    dropout_rate, attention_dropout_rate, stochastic_depth: regularisation used in training only;
      0 as in the released checkpoints' config and the official encoder (the paper gives none).
    dtype: compute dtype, a key of DTYPES (parameters stay float32).
    chunked_on_cpu: in inference on CPU, run the patch encoder and attention a cache-sized chunk
      at a time: the same outputs, faster and with far less memory. Training never chunks (the
      gradient of the chunk loops is much slower on CPU). Off gives one XLA op per layer (for
      FLOP counting).
  """
  patch_size: int = 32
  hidden_size: int = 384
  num_layers: int = 14
  num_heads: int = 6
  mlp_dim: int = 1152
  num_classes: int = 1
  grid_size: int = 10
  num_scales: int = 3
  patch_encoder: str = "resnet"
  spatial_embedding: str = "hse"
  use_scale_embedding: bool = True
  max_positions: int = 4096
  representation_size: int | None = None
  head: str = "score"
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  dtype: str = "float32"
  chunked_on_cpu: bool = True

  def __post_init__(self):
    self._check_choices()
    self._check_numbers()

  @property
  def compute_dtype(self) -> jnp.dtype:
    """The jnp dtype of `dtype`, what every layer computes in."""
    return DTYPES[self.dtype]

  def _check_choices(self) -> None:
    """Each named choice must be a key of its registry (looked up now, not at import)."""
    choices = {"patch_encoder": tuple(patch_encoders.PATCH_ENCODERS),
               "spatial_embedding": tuple(embeddings.SPATIAL_EMBEDDINGS), "head": HEADS,
               "dtype": tuple(DTYPES)}
    for field, allowed in choices.items():
      if getattr(self, field) not in allowed:
        raise ValueError(f"model.{field}={getattr(self, field)!r} is not one of {allowed}")

  def _check_numbers(self) -> None:
    """Sizes positive (first: num_heads=0 must not reach the modulo), rates in [0, 1), heads that
    divide D and outputs that suit the head."""
    for field in _POSITIVE_FIELDS:
      if getattr(self, field) < 1:
        raise ValueError(f"model.{field} must be positive, got {getattr(self, field)}")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"model.hidden_size={self.hidden_size} is not divisible by "
                       f"model.num_heads={self.num_heads}")
    if self.head == "score" and self.num_classes != 1:
      raise ValueError(f"a score head has 1 output, not model.num_classes={self.num_classes}")
    if self.head == "distribution" and self.num_classes < 2:
      raise ValueError("a distribution head needs model.num_classes >= 2 bins")
    for field in _RATE_FIELDS:
      if not 0.0 <= getattr(self, field) < 1.0:
        raise ValueError(f"model.{field} must be in [0, 1), got {getattr(self, field)}")
