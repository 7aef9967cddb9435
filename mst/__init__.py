"""mst: the Multi-Scale image quality Transformer (MUSIQ) in JAX/Flax.

Subpackages: `data` (images to model input, datasets), `models` (the network), `training`,
`evaluation`, `checkpoints` (official .npz files and workdirs), `config`, `visualization`, and
`cli` (the console scripts); `inference` scores images with a loaded checkpoint.
"""

__version__ = "0.1.0"
