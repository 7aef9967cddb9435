"""Reading image files into RGB uint8 arrays, with errors that name the file and the problem.

Pixels equal TensorFlow's decoders, the ones the official MUSIQ code uses. JPEG and 8-bit PNG, the
common cases, are decoded without TensorFlow so that scoring starts quickly: JPEG by libjpeg-turbo
with TF's default DCT (the fast integer one, not Pillow's accurate one) and fancy upsampling, PNG by
Pillow (lossless, so equal). Everything else, and any file those decoders reject, goes through
`tf.io.decode_image`, which gives the error message. Every image becomes 3 channels: greyscale is
replicated, alpha is dropped, palette, CMYK and 16-bit images are converted.

Files may come from anywhere, so a file costs at most what an image is worth: only regular files
are opened (a FIFO, socket or device, or a link to one, is refused at once, never waited on), a
read stops at the size the file had when opened and at `MAX_FILE_BYTES`, and an image's size is
read from its header and checked (against `MAX_PIXELS`, and a caller's `check_size`, e.g. the
token limit) before any pixel is decoded: a decompression bomb costs its header.
"""

import io
import os
import stat
import struct
from typing import Callable

import numpy as np
from PIL import Image
import simplejpeg

from mst import errors

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# No image above Pillow's own decompression-bomb threshold (89.5 megapixels, a 9459 x 9459 image,
# 268 MB as RGB) is decoded by any path, TF's included; scoring refuses far smaller ones
# (`--max-tokens`).
MAX_PIXELS = 89_478_485  # Pillow's default Image.MAX_IMAGE_PIXELS
# An uncompressed RGBA bitmap at MAX_PIXELS, plus headers: no image file worth decoding is larger.
MAX_FILE_BYTES = 4 * MAX_PIXELS + (1 << 20)


class ImageError(errors.BadInput):
  """An image file that cannot be scored; the message says which file and why."""


def read_image(path: str, check_size: Callable[[int, int], None] | None = None) -> np.ndarray:
  """Decodes the image file at `path` to an (H, W, 3) uint8 array.

  `check_size(height, width)` sees the size the file's header declares before anything is
  decoded, and raises ImageError to refuse it; images over MAX_PIXELS are always refused.
  """
  data = read_file(path)
  height, width = header_size(data, path)
  if height == 0 or width == 0:
    raise ImageError(f"{path}: image has no pixels ({height}x{width})")
  if height * width > MAX_PIXELS:
    raise ImageError(f"{path}: {width}x{height} is {height * width / 1e6:.0f} megapixels, more "
                     f"than the {MAX_PIXELS / 1e6:.1f} megapixels any image may have here; "
                     "downscale it")
  if check_size is not None:
    check_size(height, width)
  image = _decode_without_tf(data)
  if image is None:
    image = _decode_with_tf(data, path)
  if image.shape[:2] != (height, width):  # a header that lies: never trust it twice
    raise ImageError(f"{path}: decodes to {image.shape[1]}x{image.shape[0]}, but its header "
                     f"says {width}x{height}")
  return image


def read_file(path: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
  """The bytes of the regular file at `path` (links followed), up to the size it had when
  opened; anything else (a FIFO, socket, device, folder, or a file over `max_bytes`) is an
  ImageError naming it, raised without blocking."""
  try:
    _check_regular(path, os.stat(path).st_mode)
    # O_NONBLOCK: should a FIFO replace the file after the check, opening it does not wait.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
  except FileNotFoundError:
    raise ImageError(f"{path}: no such file") from None
  except OSError as e:
    raise ImageError(f"{path}: cannot read: {e.strerror or e}") from None
  with os.fdopen(fd, "rb", buffering=0) as f:
    info = os.fstat(fd)
    _check_regular(path, info.st_mode)
    if info.st_size > max_bytes:
      raise ImageError(f"{path}: {info.st_size:,} bytes, more than the {max_bytes:,} an image "
                       "file may have here")
    try:
      data = _read_exactly_at_most(f, info.st_size)
    except OSError as e:
      raise ImageError(f"{path}: cannot read: {e.strerror or e}") from None
  if not data:
    raise ImageError(f"{path}: file is empty")
  return data


def _check_regular(path: str, mode: int) -> None:
  if stat.S_ISDIR(mode):
    raise ImageError(f"{path}: is a directory")
  if not stat.S_ISREG(mode):
    raise ImageError(f"{path}: not a regular file (a {_kind(mode)}); only image files are read")


def _read_exactly_at_most(f, size: int) -> bytes:
  """Up to `size` bytes of `f` (fewer if it shrank meanwhile; never more if it grows)."""
  chunks, left = [], size
  while left > 0:
    chunk = f.read(min(left, 1 << 24))
    if not chunk:
      break
    chunks.append(chunk)
    left -= len(chunk)
  return b"".join(chunks)


def _kind(mode: int) -> str:
  for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                     (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
    if test(mode):
      return name
  return "special file"


def header_size(data: bytes, name: str) -> tuple[int, int]:
  """(height, width) from the header of an encoded image, decoding no pixels; ImageError naming
  `name` where no JPEG, PNG, BMP, GIF or WebP header can be read."""
  if data.startswith(_PNG_MAGIC) and data[12:16] == b"IHDR" and len(data) >= 24:  # first chunk
    width, height = struct.unpack(">II", data[16:24])
    return height, width
  if data.startswith(_JPEG_MAGIC):
    try:
      height, width = simplejpeg.decode_jpeg_header(data)[:2]
      return int(height), int(width)
    except ValueError:
      pass  # Pillow reads some headers libjpeg-turbo's strict parser rejects
  try:
    with Image.open(io.BytesIO(data)) as image:  # parses the header only
      width, height = image.size
      return int(height), int(width)
  except Image.DecompressionBombError as e:  # over twice Pillow's threshold: ours is refused too
    raise ImageError(f"{name}: more than the {MAX_PIXELS / 1e6:.1f} megapixels any image may "
                     f"have here ({e}); downscale it") from None
  except (OSError, ValueError, SyntaxError):
    raise ImageError(f"{name}: not a readable image (corrupt, truncated or an unsupported "
                     "format): no JPEG, PNG, BMP, GIF or WebP header") from None


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
