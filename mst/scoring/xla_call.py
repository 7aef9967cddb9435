"""A JAX function as TensorFlow's `XlaCallModule` op, serialised for the TensorFlow that serves it.

`jax2tf.convert` writes StableHLO at a version JAX picks (4 weeks old): jax 0.12 writes StableHLO
1.22, which TF 2.21's `XlaCallModule` (StableHLO 1.13.7) cannot read, so a SavedModel exported on
the newest JAX would not load in the TensorFlow mst supports. Here both versions an export carries
are pinned: the StableHLO portable artifact targets `STABLEHLO_TARGET` and the op's calling
convention is `CALLING_CONVENTION`, whatever the JAX that exports.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
from jax import export
from jaxlib.mlir.dialects import stablehlo
import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla as tfxla

# TF 2.21's StableHLO (`tensorflow.compiler.mlir.stablehlo.stablehlo.get_current_version()`) and
# the highest XlaCallModule calling convention it reads (`call_module_maximum_supported_version`).
STABLEHLO_TARGET = "1.13.7"
CALLING_CONVENTION = 10


def stablehlo_target() -> str:
  """`STABLEHLO_TARGET`, or the installed jaxlib's own StableHLO version where that is older."""
  return stablehlo.get_smaller_version(STABLEHLO_TARGET, stablehlo.get_current_version())


class XlaCall:
  """`fn` exported once for `platforms` at (possibly symbolic) `args_specs`, called on TF values.

  `polymorphic_shapes` are `jax.export.symbolic_args_specs`' specifications, e.g.
  `[None, {"mask": "(b, n)"}]`: one exported program serves every batch size and length.
  """

  def __init__(self, fn: Callable, args: Sequence[Any], polymorphic_shapes: Sequence[Any],
               platforms: Sequence[str]):
    specs = export.symbolic_args_specs(tuple(args), polymorphic_shapes)
    previous = jax.config.jax_export_calling_convention_version
    jax.config.update("jax_export_calling_convention_version", CALLING_CONVENTION)
    try:
      self.exported = export.export(jax.jit(fn), platforms=tuple(platforms))(*specs)
    finally:
      jax.config.update("jax_export_calling_convention_version", previous)
    # The artifact JAX wrote, read back and written again at the pinned version.
    self.module = stablehlo.serialize_portable_artifact_str(
        stablehlo.deserialize_portable_artifact_str(self.exported.mlir_module_serialized),
        stablehlo_target())

  def __call__(self, *args) -> Any:
    """The outputs, as TF tensors in `fn`'s output structure (symbolic sizes as None).

    `args` have the structure of the exported ones; TF's containers (a tf.Module's dicts) flatten
    in the order JAX's do (dicts by sorted key).
    """
    exported = self.exported
    leaves = tf.nest.flatten(args)
    if len(leaves) != exported.in_tree.num_leaves:
      raise TypeError(f"{len(leaves)} arrays given, the exported function takes "
                      f"{exported.in_tree.num_leaves}")
    kept = [leaves[i] for i in sorted(exported.module_kept_var_idx)]
    outputs = tfxla.call_module(
        kept, version=exported.calling_convention_version, module=self.module,
        Tout=[tf.as_dtype(aval.dtype) for aval in exported.out_avals],
        Sout=[[d if isinstance(d, int) else None for d in aval.shape]
              for aval in exported.out_avals],
        platforms=[platform.upper() for platform in exported.platforms],
        disabled_checks=[str(check) for check in exported.disabled_safety_checks],
        use_shardy_partitioner=exported.calling_convention_version >= 10)
    return jax.tree.unflatten(exported.out_tree, outputs)
