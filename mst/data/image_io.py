"""Reading image files into RGB uint8 arrays, with errors that name the file and the problem.

Decoding goes through TensorFlow's decoders, the ones the official MUSIQ code uses, so JPEG pixels
equal theirs. Every image becomes 3 channels: greyscale is replicated, alpha is dropped, palette,
CMYK and 16-bit images are converted.
"""

import os

import numpy as np
import tensorflow as tf

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ImageError(ValueError):
  """An image file that cannot be scored; the message says which file and why."""


def read_image(path: str) -> np.ndarray:
  """Decodes the image file at `path` to an (H, W, 3) uint8 array."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise ImageError(f"{path}: no such file") from None
  except IsADirectoryError:
    raise ImageError(f"{path}: is a directory") from None
  except OSError as e:
    raise ImageError(f"{path}: cannot read: {e.strerror or e}") from None
  if not data:
    raise ImageError(f"{path}: file is empty")
  try:
    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
    reason = e.message.strip().splitlines()[-1] if e.message else type(e).__name__
    raise ImageError(f"{path}: not a readable image (corrupt, truncated or an unsupported "
                     f"format): {_short(reason)}") from None
  image = image.numpy()
  if image.shape[0] == 0 or image.shape[1] == 0:
    raise ImageError(f"{path}: image has no pixels ({image.shape[0]}x{image.shape[1]})")
  return image


def _short(reason: str) -> str:
  """Drops TF's function-node prefix and op suffix from an error message."""
  return reason.split("}} ")[-1].replace(" [Op:DecodeImage]", "")


def find_images(path: str, recursive: bool = True) -> list[str]:
  """The image files under a folder (recursively unless `recursive` is False; sorted), or the path
  itself if it is not a folder, whatever its extension, so a mistaken file still gets its error."""
  if not os.path.isdir(path):
    return [path]
  found = []
  for root, dirs, files in os.walk(path):
    dirs[:] = sorted(dirs) if recursive else []
    found.extend(os.path.join(root, name) for name in sorted(files)
                 if name.lower().endswith(IMAGE_EXTENSIONS))
  return found


def find_all(paths: list[str], recursive: bool = True) -> tuple[list[str], list[str]]:
  """(the image files of every path, in the order given; the folders that hold none)."""
  found, empty = [], []
  for path in paths:
    images = find_images(path, recursive)
    found.extend(images)
    if not images:
      empty.append(path)
  return found, empty
