"""Reading image files into RGB uint8 arrays, with errors that name the file and the problem.

Pixels equal TensorFlow's decoders, the ones the official MUSIQ code uses. JPEG and 8-bit PNG, the
common cases, are decoded without TensorFlow so that scoring starts quickly: JPEG by libjpeg-turbo
with TF's default DCT (the fast integer one, not Pillow's accurate one) and fancy upsampling, PNG by
Pillow (lossless, so equal). Everything else, and any file those decoders reject, goes through
`tf.io.decode_image`, which gives the error message. Every image becomes 3 channels: greyscale is
replicated, alpha is dropped, palette, CMYK and 16-bit images are converted.
"""

import io
import os

import numpy as np
from PIL import Image
import simplejpeg

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
  image = _decode_without_tf(data)
  if image is None:
    image = _decode_with_tf(data, path)
  if image.shape[0] == 0 or image.shape[1] == 0:
    raise ImageError(f"{path}: image has no pixels ({image.shape[0]}x{image.shape[1]})")
  return image


_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Pillow modes of 8-bit (or palette, or 1/2/4-bit greyscale, scaled to 8) PNGs whose RGB
# conversion equals TF's: replicate grey, expand the palette, drop alpha.
_PNG_MODES = ("RGB", "RGBA", "L", "LA", "P", "1")


def _decode_without_tf(data: bytes) -> np.ndarray | None:
  """The (H, W, 3) uint8 pixels of a JPEG or 8-bit PNG, or None where TF must decode it (another
  format, CMYK, 16 bits, an animation, or a file these decoders reject or only half read)."""
  try:
    if data.startswith(_JPEG_MAGIC):
      if simplejpeg.decode_jpeg_header(data)[2] not in ("YCbCr", "Gray", "RGB"):
        return None  # CMYK and YCCK: TF converts them its own way
      # strict: a warning (a truncated file, say) is an error, which TF then reports.
      return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False,
                                    strict=True)
    if data.startswith(_PNG_MAGIC):
      with Image.open(io.BytesIO(data)) as image:
        if image.mode not in _PNG_MODES or getattr(image, "n_frames", 1) > 1:
          return None
        image.load()
        return np.asarray(image.convert("RGB"))
  except (ValueError, OSError, SyntaxError, Image.DecompressionBombError):
    return None
  return None


def _decode_with_tf(data: bytes, path: str) -> np.ndarray:
  """Any format TF reads (JPEG, PNG, BMP, GIF, WebP), with an error naming the file."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (slow: only when needed)
  try:
    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
    reason = e.message.strip().splitlines()[-1] if e.message else type(e).__name__
    raise ImageError(f"{path}: not a readable image (corrupt, truncated or an unsupported "
                     f"format): {_short(reason)}") from None
  return image.numpy()


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
