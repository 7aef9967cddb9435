"""Batch shapes every host shares, agreed through JAX's distributed key-value store.

A training batch's layout (`mst.data.packing`) depends on counts that differ between hosts (the
most real patches of a shard, the packed rows); the global array needs one shape, their maximum.
Agreeing on it with a device collective (`process_allgather`) queues behind the train step on the
devices, so no host could lay out step s + 1 before step s had run: the input pipeline could not
run ahead of the devices. Here each host posts its counts for a step to the coordination
service's key-value store (gRPC to process 0's coordinator, beside the devices, not on them) and
reads the others': a host waits only for the other hosts' input pipelines, never for a device.
Nothing here is a device collective; the layouts, and so the batches, are the ones the maximum
over hosts gives, exactly as before.
"""

from __future__ import annotations

import itertools

import jax
import orbax.checkpoint as ocp

# How long a host waits for the others' counts of one step: longer than any input pipeline's
# pause (a slow bucket, a preemption on another host: JAX's own heartbeat ends a dead job first).
TIMEOUT_S = 30 * 60
_generations = itertools.count()


class ShapeAgreement:
  """`at(step)(values)` is the element-wise maximum of every process's `values` for `step`.

  Every process must create its agreements in the same order (one per `train_batches` call):
  their keys are numbered by that order, so a second stream never reads the first one's counts.
  """

  def __init__(self, timeout_s: float = TIMEOUT_S):
    self._processes = jax.process_count()
    self._me = jax.process_index()
    self._client = ocp.multihost.get_jax_distributed_client() if self._processes > 1 else None
    self._prefix = f"mst/batch_shapes/{next(_generations)}"
    self._timeout_ms = int(timeout_s * 1000)

  def at(self, step: int):
    """The `agree` callable of `step` (`mst.data.packing`'s layouts take it)."""
    return lambda values: self.agree(step, values)

  def agree(self, step: int, values: tuple[int, ...]) -> tuple[int, ...]:
    if self._client is None:
      return tuple(values)
    self._client.key_value_set(self._key(step, self._me), ",".join(str(int(v)) for v in values))
    gathered = [values] + [
        tuple(int(v) for v in self._client.blocking_key_value_get(
            self._key(step, other), self._timeout_ms).split(","))
        for other in range(self._processes) if other != self._me]
    # Every host has read this host's counts of step - 2: it posted its own of step - 1 after.
    if step >= 2:
      try:
        self._client.key_value_delete(self._key(step - 2, self._me))
      except Exception:  # pylint: disable=broad-except  (a few bytes left with the coordinator)
        pass
    return tuple(max(column) for column in zip(*gathered))

  def _key(self, step: int, process: int) -> str:
    return f"{self._prefix}/{step}/{process}"
