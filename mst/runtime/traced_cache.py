"""Traced forwards, serialised with `jax.export`, in mst's user cache, so a second start of
`mst-predict` skips tracing the Flax model (about a second for the paper model on a CPU); and the
parameter shapes a config traces to, which every checkpoint load checks the file against (a
quarter of a second of tracing, stored as a small JSON file).

JAX's persistent compilation cache (`compilation_cache`) skips compiling, but its key is the
lowered program, so every start still traces the model first. Here the traced and lowered program
itself is stored, keyed by everything that shapes it: the model config and output scale, the
argument shapes and dtypes, the JAX version and backend, and the source of the modules the caller
names as the program's code (an edit to the model makes new entries, never a stale program). The
parameters are arguments, not part of the program, so one entry serves every checkpoint of an
architecture.

Files sit in `<cache>/traced/` beside the compiled programs (`MST_CACHE_DIR=off` disables both);
each is written to a temporary name and renamed, so processes sharing the folder never read a
half-written one; an unreadable one is traced again and replaced. A traced forward is about
200 kB, a shape file a few kB.
"""

from __future__ import annotations

import functools
import hashlib
import json
import inspect
import os
import threading
import types
from typing import Any, Callable, Sequence

from absl import logging
import jax
from jax import export
import numpy as np

from mst.runtime import compilation_cache


def folder() -> str | None:
  """Where the traced programs go, or None when the cache is off."""
  jax_folder = compilation_cache.cache_dir()
  return None if jax_folder is None else os.path.join(os.path.dirname(jax_folder), "traced")


@functools.cache
def _source_digest(sources: tuple[types.ModuleType, ...]) -> bytes:
  """The hash of the source of the modules `sources`, in their order, read once per process."""
  digest = hashlib.sha256()
  for module in sources:
    digest.update(module.__name__.encode() + b"\0" + inspect.getsource(module).encode())
  return digest.digest()


def _key(sources: Sequence[types.ModuleType], fn_identity: Any, args: tuple) -> str:
  digest = hashlib.sha256(_source_digest(tuple(sources)))
  shapes = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), args)
  device = jax.devices()[0]
  digest.update(repr((fn_identity, jax.tree.structure(args), jax.tree.leaves(shapes),
                      jax.__version__, device.platform, device.device_kind)).encode())
  return digest.hexdigest()[:32]


def jit_cached(fn: Callable, sources: Sequence[types.ModuleType], fn_identity: Any,
               *args) -> Callable:
  """A jitted callable equal to `fn` at the shapes of `args`, from the cache when it holds one.

  `sources` are the modules whose code `fn` runs (an edit to one makes a new entry);
  `fn_identity` must tell apart every `fn` that computes something different (e.g. the model
  config and output scale); `fn` must be a `jax.jit`-ted function of arrays only.
  """
  root = folder()
  if root is None:
    return fn
  path = os.path.join(root, _key(sources, fn_identity, args) + ".jax_exported")
  cached = _read(path, lambda data: jax.jit(export.deserialize(bytearray(data)).call))
  if cached is not None:
    return cached
  exported = export.export(fn)(*args)
  _write(path, exported.serialize())
  return jax.jit(exported.call)


def param_shapes(sources: Sequence[types.ModuleType], model_identity: Any,
                 trace: Callable[[], dict[str, jax.ShapeDtypeStruct]]
                 ) -> dict[str, jax.ShapeDtypeStruct]:
  """`trace()`, a model's parameter names -> shapes and dtypes, from the cache when it holds it.

  `sources` are the modules whose code defines the model; `model_identity` must tell apart every
  model whose parameters differ (its config).
  """
  root = folder()
  if root is None:
    return trace()
  path = os.path.join(root, _key(sources, model_identity, ()) + ".param_shapes.json")
  cached = _read(path, lambda data: {
      name: jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))
      for name, (shape, dtype) in json.loads(data).items()})
  if cached is not None:
    return cached
  shapes = trace()
  entry = {name: [list(value.shape), str(value.dtype)] for name, value in shapes.items()}
  _write(path, json.dumps(entry, sort_keys=True).encode())
  return shapes


def _read(path: str, parse: Callable[[bytes], Any]) -> Any | None:
  """`parse` of the file at `path`; None when there is none, or it is damaged (then traced again
  and replaced)."""
  try:
    with open(path, "rb") as f:
      return parse(f.read())
  except FileNotFoundError:
    return None
  except Exception as e:  # pylint: disable=broad-except  (a damaged entry: trace it again)
    logging.warning("traced-program cache: %s unreadable (%s); tracing again", path, e)
    return None


def _write(path: str, data: bytes) -> None:
  """Writes `data` to a temporary name and renames it to `path`; warns if it cannot."""
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  except OSError as e:  # a read-only or full disk costs the next start a trace, nothing more
    logging.warning("traced-program cache: cannot write %s: %s", path, e)
