"""mst's Python API: `scorer = mst.load(path)`, then `scorer.score(image)` or
`scorer.score_files(paths)`. `mst-predict` is a thin command line over it.

    import mst
    scorer = mst.load("koniq_ckpt.npz")
    print(scorer.score("photo.jpg"))       # a path, an (H, W, 3) uint8 array or a PIL image
    for row in scorer.score_files(["a.jpg", "b.png"]):
      print(row)                           # {"image": "a.jpg", "score": 61.3...}
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: no C++ INFO lines

from typing import TYPE_CHECKING, Iterable, Iterator, Union

import numpy as np

from mst.data import image_io
from mst.scoring import inference

if TYPE_CHECKING:
  from PIL import Image as PILImage

ImageLike = Union[str, os.PathLike, np.ndarray, "PILImage.Image"]


class Scorer:
  """A loaded checkpoint that scores images; build it with `mst.load`."""

  def __init__(self, predictor: inference.Predictor):
    self.predictor = predictor

  @property
  def head(self) -> str:
    """`score`, `distribution` (AVA-style bins) or `classification`."""
    return self.predictor.model_config.head

  @property
  def num_classes(self) -> int:
    return self.predictor.model_config.num_classes

  def predict(self, image: ImageLike) -> dict:
    """Everything the head gives for one image: `score` (and `distribution`), or `class` and
    `probability`.

    Raises:
      image_io.ImageError: the image cannot be read or has more tokens than `max_tokens`.
    """
    pp_config, max_tokens = self.predictor.pp_config, self.predictor.max_tokens
    if isinstance(image, (str, os.PathLike)):
      name = os.fspath(image)
      rgb = inference.read_checked(name, pp_config, max_tokens)
    else:
      name, rgb = "image", as_rgb(image)
    features = inference.bucketed_features(rgb, pp_config, max_tokens, name)
    return self.predictor.predict([features])[0]

  def score(self, image: ImageLike) -> float:
    """The quality score of one image (a path, an (H, W, 3) uint8 array or a PIL image).

    Raises:
      image_io.ImageError: the image cannot be read or has more tokens than `max_tokens`.
      ValueError: the model is a classifier, which has no score.
    """
    if self.head == "classification":
      raise ValueError("this checkpoint has a classification head: it predicts classes, not a "
                       "quality score; use predict()")
    return float(self.predict(image)["score"])

  def iter_files(self, paths: Iterable[str], batch_size: int = 1,
                 concurrent_batches: int | None = None) -> Iterator[dict]:
    """`score_files` one result at a time, reading `paths` lazily (any number of them)."""
    for path, result in inference.score_files(self.predictor, paths, batch_size,
                                              concurrent_batches=concurrent_batches):
      yield {"image": path, **result}

  def score_files(self, paths: Iterable[str], batch_size: int = 1,
                  concurrent_batches: int | None = None) -> list[dict]:
    """One dict per path, in order, with mst-predict's keys: `image` and `score` (plus
    `distribution`), or `image` and `error` for a file that cannot be scored. Images of a
    sequence-length bucket are scored `batch_size` at a time, `concurrent_batches` batches at
    once (default: 2 on CPU, 1 on GPU/TPU; each holds its own activations in memory)."""
    return list(self.iter_files(paths, batch_size, concurrent_batches))


def load(path: str | os.PathLike, dtype: str = "float32", max_tokens: int | None = None,
         longer_side_lengths: tuple[int, ...] | None = None) -> Scorer:
  """A scorer for an official MUSIQ `.npz` file or an `mst-train` workdir.

  Args:
    path: the `.npz` file (architecture read from it) or the workdir (its best, else latest,
      parameters, its preprocessing and MOS scale).
    dtype: the compute dtype, `float32` or `bfloat16`.
    max_tokens: images making more tokens are refused (default `inference.DEFAULT_MAX_TOKENS`).
    longer_side_lengths: the resized scales, for files that do not imply them.

  Raises:
    loader.CheckpointError: the checkpoint cannot be read.
    ValueError: `longer_side_lengths` do not fit the model.
  """
  predictor = inference.Predictor.from_checkpoint(
      os.fspath(path), dtype=dtype, longer_side_lengths=longer_side_lengths,
      max_tokens=max_tokens or inference.DEFAULT_MAX_TOKENS)
  return Scorer(predictor)


def as_rgb(image: ImageLike) -> np.ndarray:
  """An (H, W, 3) uint8 array, converted as the file reader converts: greyscale replicated,
  alpha dropped, palette to RGB, 16-bit to its top 8 bits (a PIL image in another mode, such as
  CMYK, through PIL's conversion to RGB).

  Raises:
    image_io.ImageError: a file that cannot be read, or an array of another shape or dtype.
  """
  if isinstance(image, (str, os.PathLike)):
    return image_io.read_image(os.fspath(image))
  if not isinstance(image, np.ndarray):
    image = _pil_array(image)
  if image.dtype == np.uint16:
    image = (image >> 8).astype(np.uint8)
  if image.dtype != np.uint8:
    raise image_io.ImageError(f"image: expected a uint8 array, got {image.dtype}")
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise image_io.ImageError(f"image: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
                              f"got shape {image.shape}")
  if not image.shape[0] or not image.shape[1]:
    raise image_io.ImageError(f"image: has no pixels ({image.shape[0]}x{image.shape[1]})")
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return np.ascontiguousarray(image[..., :3])


def _pil_array(image) -> np.ndarray:
  """A PIL image's pixels: RGB, L and RGBA as they are; 16-bit as uint16; others via RGB."""
  mode = getattr(image, "mode", None)
  if mode is None:
    raise image_io.ImageError(f"image: expected a path, a numpy array or a PIL image, got "
                              f"{type(image).__name__}")
  if mode in ("RGB", "L", "RGBA"):
    return np.asarray(image)
  if mode.startswith("I;16") or mode == "I":
    return np.asarray(image).astype(np.uint16)
  if mode == "LA":
    return np.asarray(image)[..., 0]
  return np.asarray(image.convert("RGB"))
