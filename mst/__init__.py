"""mst: the Multi-Scale image quality Transformer (MUSIQ) in JAX/Flax."""

__version__ = "0.1.0"
