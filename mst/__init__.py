"""mst: the Multi-Scale image quality Transformer (MUSIQ) in JAX/Flax.

`mst.load(path)` returns a `Scorer` for an official `.npz` file or an `mst-train` workdir (see
`mst.scoring.api`); it is imported on first use, so `import mst` stays cheap.

Subpackages: `data` (images to model input, datasets), `models` (the network), `training`,
`evaluation`, `checkpoints` (official .npz files and workdirs), `config`, `visualization`,
`scoring` (scoring images with a loaded checkpoint, the Python API, the SavedModel export),
`runtime` (device mesh, caches, progress) and `cli` (the console scripts).
"""

from typing import TYPE_CHECKING

from mst.version import __version__ as __version__
__all__ = ["load", "Scorer"]

if TYPE_CHECKING:
  from mst.scoring.api import load, Scorer


def __getattr__(name: str):
  if name in __all__:
    from mst.scoring import api  # pylint: disable=import-outside-toplevel
    return getattr(api, name)
  raise AttributeError(f"module 'mst' has no attribute {name!r}")
