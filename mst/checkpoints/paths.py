"""Checkpoint paths that may be URLs: a local path, or `gs://bucket/...` (any scheme TensorFlow's
file systems know), so the released `.npz` files and a pod run's cloud workdir are read where they
are, without copying them first.

TensorFlow is imported only for URLs: scoring with a local `.npz` file does not pay its start-up.
"""

import io
import os


def is_url(path: str) -> bool:
  return "://" in path


def exists(path: str) -> bool:
  """Whether `path` exists; OSError naming it where a URL cannot be checked."""
  if not is_url(path):
    return os.path.exists(os.path.expanduser(path))
  return _through_tensorflow(path, lambda gfile: gfile.exists(path))


def isdir(path: str) -> bool:
  """Whether `path` is a folder; OSError naming it where a URL cannot be checked."""
  if not is_url(path):
    return os.path.isdir(os.path.expanduser(path))
  return _through_tensorflow(path, lambda gfile: gfile.isdir(path))


def read_url(path: str) -> io.BytesIO:
  """The whole file at the URL `path`, in memory (an `.npz` reader seeks around in it, which
  would be one network request per seek); FileNotFoundError or OSError naming `path`."""
  def read(gfile):
    with gfile.GFile(path, "rb") as f:
      return io.BytesIO(f.read())
  return _through_tensorflow(path, read)


def _through_tensorflow(path: str, call):
  """`call(tf.io.gfile)`, with TensorFlow's errors as FileNotFoundError or OSError naming
  `path`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (URLs only: slow to import)
  try:
    return call(tf.io.gfile)
  except tf.errors.NotFoundError:
    raise FileNotFoundError(f"{path}: no such file") from None
  except tf.errors.OpError as e:  # no permission, an unknown scheme, the network
    raise OSError(f"{path}: cannot be read ({e.message})") from None
