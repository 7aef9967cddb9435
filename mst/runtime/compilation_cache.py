"""JAX's persistent compilation cache in mst's user cache directory, so a second run of a command
loads its compiled programs instead of compiling them again (seconds at start-up on a CPU).

Where: `$MST_CACHE_DIR/jax`; `MST_CACHE_DIR` defaults to `$XDG_CACHE_HOME/mst`, else
`~/.cache/mst`. `MST_CACHE_DIR=off` turns the cache off; a `JAX_COMPILATION_CACHE_DIR` the user
set wins over all of these. Each console script calls `enable()` once at start-up.

Shared by concurrent processes: JAX writes a cache entry with a plain (non-atomic) file write and
guards its reads and writes with a file lock only when the cache has a size limit, so the limit
set here is what makes two processes filling one directory safe (one never reads another's
half-written entry). The least recently used entries are evicted beyond it.
`traced_cache` keeps traced programs beside it, in `$MST_CACHE_DIR/traced`.
"""

from __future__ import annotations

import os
from typing import Mapping

CACHE_DIR_ENV = "MST_CACHE_DIR"
OFF = "off"
MAX_BYTES = 2 << 30  # 2 GiB; the paper model's CPU programs take a few MB each
# Programs that compile faster than this are not worth a file (JAX's default is 1 s; the
# one-image programs of a small model compile in about 0.2 s on a CPU).
MIN_COMPILE_SECONDS = 0.2


def cache_dir(environ: Mapping[str, str] | None = None) -> str | None:
  """The folder for compiled programs, or None when `MST_CACHE_DIR=off`."""
  environ = os.environ if environ is None else environ
  root = environ.get(CACHE_DIR_ENV)
  if root is None:
    xdg = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    root = os.path.join(xdg, "mst")
  if root.strip().lower() == OFF:
    return None
  return os.path.join(os.path.expanduser(root), "jax")


def enable() -> str | None:
  """Points JAX's persistent compilation cache at `cache_dir()`; returns the folder in use.

  JAX settings the user gave by environment variable (`JAX_COMPILATION_CACHE_DIR`,
  `JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`, `JAX_COMPILATION_CACHE_MAX_SIZE`) are kept.
  """
  import jax  # pylint: disable=g-import-not-at-top

  folder = os.environ.get("JAX_COMPILATION_CACHE_DIR") or cache_dir()
  if folder is None:
    return None
  jax.config.update("jax_compilation_cache_dir", folder)
  if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  return folder
