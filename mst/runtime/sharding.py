"""The device mesh and how arrays are laid out on it: data parallelism over every device of every
host.

`jax.jit` over a `Mesh` with a `data` axis and `NamedSharding`s is the current form of what `pmap`
did: batches are split over the data axis, parameters replicated,
and arrays are global across hosts.
"""

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

DATA_AXIS = "data"
# Environment variables that mean "this process is one of several": set by `jax.distributed`
# launchers, SLURM, or by hand for a GPU cluster. Cloud TPU pods are detected by JAX itself.
_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES",
                "MEGASCALE_COORDINATOR_ADDRESS")


def initialize_distributed() -> None:
  """Joins the other processes of a multi-host run when the environment describes one.

  `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` (or a cluster JAX detects:
  TPU pods, SLURM) make each process call `jax.distributed.initialize`; a plain run does nothing.
  """
  if not any(name in os.environ for name in _CLUSTER_ENV):
    return
  kwargs = {}
  if "JAX_COORDINATOR_ADDRESS" in os.environ:
    kwargs = dict(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                  num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                  process_id=int(os.environ["JAX_PROCESS_ID"]))
  jax.distributed.initialize(**kwargs)


def make_mesh() -> Mesh:
  """A 1-D mesh over every device of every process, in a fixed global order."""
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  return Mesh(np.array(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def param_shardings(params: Any, mesh: Mesh) -> Any:
  """A sharding per parameter: replicated on every device (MUSIQ's 27 M parameters fit anywhere;
  a model too big to replicate would map parameter paths to `PartitionSpec`s here)."""
  return jax.tree.map(lambda _: replicated(mesh), params)


def local_device_positions(mesh: Mesh) -> list[int]:
  """Positions on the data axis of this process's devices, in mesh order."""
  return [i for i, device in enumerate(mesh.devices.flat)
          if device.process_index == jax.process_index()]
