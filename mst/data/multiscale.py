"""How an image becomes tokens, without TensorFlow: the multi-scale configuration, token counts and
sequence-length buckets that the TF pipeline (`preprocess`), the NumPy path (`host_preprocess`)
and the model all agree on."""

import dataclasses
import math
from typing import Any, Callable

MIN_BUCKET = 63  # 64 positions with the CLS token


@dataclasses.dataclass(frozen=True)
class MultiScaleConfig:
  """How an image becomes tokens.

  Attributes:
    patch_size: P, the side of a square patch in pixels (also the stride).
    grid_size: G, the hash-based spatial embedding grid is G x G.
    longer_side_lengths: L_k of the resized copies; empty for the native image only.
    max_seq_len_from_original_res: l, tokens kept from the native image; -1 keeps all of them
      (single-image evaluation), 0 drops the native image.
  """
  patch_size: int = 32
  grid_size: int = 10
  longer_side_lengths: tuple[int, ...] = (224, 384)
  max_seq_len_from_original_res: int = -1

  def __post_init__(self):
    if self.patch_size < 1 or self.grid_size < 1:
      raise ValueError(f"patch_size and grid_size must be positive, got {self}")
    if any(length < 1 for length in self.longer_side_lengths):
      raise ValueError(f"longer_side_lengths must be positive, got {self.longer_side_lengths}")
    if self.max_seq_len_from_original_res < -1:
      raise ValueError("max_seq_len_from_original_res must be -1 (all patches) or >= 0, got "
                       f"{self.max_seq_len_from_original_res}")
    # Sorted here, once, so the scale ids are the same however the lengths were listed.
    object.__setattr__(self, "longer_side_lengths",
                       tuple(sorted(int(x) for x in self.longer_side_lengths)))

  @property
  def scaled_lengths(self) -> tuple[int, ...]:
    """m_k, the fixed number of tokens of each resized copy: ceil(L_k / P)^2."""
    return tuple(math.ceil(length / self.patch_size) ** 2 for length in self.longer_side_lengths)

  @property
  def num_scales(self) -> int:
    """K + 1 rows of the scale embedding: the resized copies plus the native image."""
    return len(self.longer_side_lengths) + 1

  def seq_len(self, height: int, width: int) -> int:
    """The number of tokens `multiscale_patches` makes from a height x width image."""
    native = self.max_seq_len_from_original_res
    if native < 0:
      native = math.ceil(height / self.patch_size) * math.ceil(width / self.patch_size)
    return sum(self.scaled_lengths) + native


def bucket_length(num_tokens: int) -> int:
  """Rounds a sequence length up so that with the CLS token it is one of 4 steps per octave (at
  most 25% padding): inputs of many sizes share a few compiled shapes.

  The Transformer's sequence (tokens + CLS) is then a multiple of 16, which the CPU's matrix
  kernels run faster than one position more: 1023 tokens take 5% less time than 1024 in the
  paper model (1535: 8% less than 1536), for 0.1% more padding than rounding the tokens alone.
  """
  if num_tokens <= MIN_BUCKET:
    return MIN_BUCKET
  positions = num_tokens + 1
  step = 2 ** (positions.bit_length() - 3)
  return -(-positions // step) * step - 1


def token_parts(image: Any, config: MultiScaleConfig, resize: Callable, tokens_of: Callable,
                fit: Callable) -> list[dict]:
  """The token dicts of one normalised image, in sequence order: each resized copy (ascending,
  scale id k, fitted to m_k tokens), then the native image (scale id K; fitted to l tokens unless
  l is -1, left out when l is 0).

  The one place the order, scale ids and lengths are decided: the TF and NumPy preprocessing
  pass their own `resize(image, longer_side)`, `tokens_of(image, scale_id, config)` and
  `fit(tokens, length)`.

  Raises:
    ValueError: the config makes no tokens.
  """
  parts = []
  for scale_id, (length, m_k) in enumerate(zip(config.longer_side_lengths, config.scaled_lengths)):
    parts.append(fit(tokens_of(resize(image, length), scale_id, config), m_k))
  native_len = config.max_seq_len_from_original_res
  if native_len != 0:
    native = tokens_of(image, len(config.longer_side_lengths), config)
    parts.append(native if native_len < 0 else fit(native, native_len))
  if not parts:
    raise ValueError(f"{config} makes no tokens: give a longer side length or keep the native "
                     "image")
  return parts
