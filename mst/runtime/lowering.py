"""Lowering a jitted program for TPU or GPU on a machine that has neither: a check of a config
before hardware is booked.

`lower` traces a jitted function on abstract arguments (`abstract`: shapes, dtypes and
shardings, so nothing is allocated) and lowers it to StableHLO for another XLA platform. Nothing
is compiled, so a CPU-only jaxlib does it, on a mesh of as many fake CPU devices as the pod has
(`XLA_FLAGS=--xla_force_host_platform_device_count=N` before JAX starts). `summarize` reads what
matters back from the lowered module: how many devices it is partitioned over, the dtypes its
matrix products take, and any custom calls or loops. tests/mst/runtime/lowering_test.py does this
for the train step, the evaluation step and the scoring forward.

What lowering proves: the program traces and lowers for the target with these shapes, dtypes and
shardings, and every operation has a lowering there. What it cannot: that it compiles, fits in
memory or runs fast, which only the device tells.

Code that chooses an implementation by `jax.default_backend()` sees the host's backend while it
traces: build the model with `chunked_on_cpu=False` to lower what a TPU or GPU runs (the chunked
loops are CPU-only), as mst-export does.
"""

import collections
import dataclasses
import re
from typing import Any

import jax

PLATFORMS = ("tpu", "cuda", "rocm", "cpu")
_NUM_PARTITIONS = re.compile(r"mhlo\.num_partitions = (\d+)")
# `stablehlo.dot_general %a, %b, ... : (tensor<...xbf16>, tensor<...xbf16>) -> tensor<...>`
_DOT_TYPES = re.compile(r"stablehlo\.dot_general .*: \(tensor<[^>]*x(\w+)>, tensor<[^>]*x(\w+)>\)")
_CUSTOM_CALL = re.compile(r"stablehlo\.custom_call @([\w$.]+)")


def abstract(tree: Any, shardings: Any = None) -> Any:
  """`tree`'s arrays (or anything with a shape and dtype) as `jax.ShapeDtypeStruct`s with the
  matching leaf of `shardings` (one sharding for every leaf, a tree of them, or None)."""
  if shardings is None or isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shardings),
                        tree)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def lower(jitted, *args, platform: str, **kwargs) -> jax.stages.Lowered:
  """`jitted` (a `jax.jit` function, with its shardings and donations) lowered for `platform`
  (one of PLATFORMS) at `args` (abstract, or arrays); never compiled."""
  if platform not in PLATFORMS:
    raise ValueError(f"platform={platform!r} is not one of {PLATFORMS}")
  return jitted.trace(*args, **kwargs).lower(lowering_platforms=(platform,))


@dataclasses.dataclass(frozen=True)
class Summary:
  """What a lowered module says about how it will run.

  Attributes:
    num_partitions: devices the SPMD program is split over (1: one device).
    dot_dtypes: count of matrix products (`dot_general`) by their operands' dtypes, e.g.
      {("bf16", "bf16"): 59, ("f32", "bf16"): 4}.
    custom_calls: the targets of custom calls (e.g. a cuDNN kernel), in order of appearance.
    loops: `while` loops (the CPU-only chunked paths lower to loops).
  """
  num_partitions: int
  dot_dtypes: dict[tuple[str, str], int]
  custom_calls: tuple[str, ...]
  loops: int

  def dots_in(self, dtype: str) -> int:
    """Matrix products with at least one operand of `dtype` ("bf16", "f32")."""
    return sum(n for types, n in self.dot_dtypes.items() if dtype in types)


def summarize(lowered: jax.stages.Lowered) -> Summary:
  """The `Summary` of a lowered module (read from its StableHLO text)."""
  text = lowered.as_text()
  partitions = _NUM_PARTITIONS.search(text)
  return Summary(
      num_partitions=int(partitions.group(1)) if partitions else 1,
      dot_dtypes=dict(collections.Counter(_DOT_TYPES.findall(text))),
      custom_calls=tuple(_CUSTOM_CALL.findall(text)),
      loops=text.count("stablehlo.while"))
