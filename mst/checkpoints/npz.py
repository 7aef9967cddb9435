"""The official MUSIQ `.npz` checkpoint files: reading them into parameters, and writing them.

The released MUSIQ files (koniq_ckpt.npz, ava_ckpt.npz, imagenet_pretrain.npz, ...) are flat numpy
archives whose keys are `/`-joined parameter paths under `opt/target/`, written by the original
`flax.nn` code. Our model (`mst.models.musiq`) uses the same names, so importing is: strip the
prefix, undo the two old-flax layout quirks (GroupNorm scale/bias stored as (1, 1, 1, C); an empty
`pre_logits` entry), infer the architecture from the keys and shapes (`architecture`), and check
every key and shape against the model that architecture builds. All of that is done from the
entries' .npy headers: the data is read only once the file is known to make the model, so a file
from a stranger (a header declaring terabytes, a deflate bomb, a pickle) costs nothing. Anything
wrong is reported in one `CheckpointError` that names the file and lists every problem, so a bad
file is fixed in one round trip, not one per key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import re
import struct
from typing import Any, BinaryIO, Iterator, Mapping
import zipfile
import zlib

import flax.traverse_util
import jax
import numpy as np

from mst import errors
from mst.checkpoints import architecture
from mst.checkpoints import paths
from mst.models import musiq

Params = dict[str, Any]
FlatParams = dict[str, np.ndarray]

OFFICIAL_PREFIX = "opt/target/"
# Full training files may also hold optimiser state (`opt/state/...`): not parameters, not loaded.
_OPTIMIZER_PREFIX = "opt/"
_PRE_LOGITS = "pre_logits"
# Old flax.nn GroupNorm stored scale/bias as (1, 1, 1, C); ours are (C,). Matches gn_root, gn1..gn3,
# gn_proj.
_GROUPNORM_PARAM = re.compile(r"(^|/)gn[^/]*/(scale|bias)$")


class CheckpointError(errors.BadInput):
  """A file that cannot be read as MUSIQ parameters. The message names the file."""


# ---------------------------------------------------------------------------------------------
# Flat `/`-joined names <-> nested parameter dicts.


def params_to_flat(params: Mapping[str, Any]) -> FlatParams:
  """Nested params -> {"a/b/c": host numpy array}; empty sub-dicts (old `pre_logits`) vanish."""
  flat = flax.traverse_util.flatten_dict(jax.device_get(dict(params)), sep="/")
  return {name: np.asarray(value) for name, value in flat.items()}


def flat_to_params(flat: Mapping[str, Any]) -> Params:
  """{"a/b/c": array} -> nested dicts, the tree `Musiq.apply({"params": ...})` takes."""
  return flax.traverse_util.unflatten_dict(dict(flat), sep="/")


# ---------------------------------------------------------------------------------------------
# Reading the archive. Files come from strangers, so each entry is judged by its zip sizes and its
# .npy header before a byte of its data is read, and data is read only once the whole file is
# known to make the model: exactly the bytes its checked header promised. Nothing is allocated
# from an unchecked number (a header declaring 4 TiB, a deflate bomb, a pickle).

# What numpy writes: np.savez stores entries, np.savez_compressed deflates them. zipfile inflates
# bzip2 and lzma entries with no bound on what one read makes, so those are refused unread.
_READ_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_NPY_MAGIC = np.lib.format.MAGIC_PREFIX
# The .npy versions read: (the reader of the header after the magic string, its length's format).
_NPY_VERSIONS = {(1, 0): (np.lib.format.read_array_header_1_0, "<H"),
                 (2, 0): (np.lib.format.read_array_header_2_0, "<I")}
_MAX_NPY_HEADER = 10_000  # bytes: numpy's own limit on a header (`max_header_size`)
# Larger dimensions are refused: real ones are far smaller, and architecture inference counts up
# to some (a zero-size entry could otherwise declare any).
_MAX_DIM = 2**31 - 1
# The parameters read may inflate to at most this many times the file's size (1 MiB in any case):
# np.savez's files take 1x, np.savez_compressed's float weights about 1.1x, a deflate bomb ~1000x.
_MAX_INFLATION = 100
_INFLATION_FLOOR = 1 << 20
# What a damaged or hostile entry raises while read (RuntimeError: encrypted).
_ENTRY_ERRORS = (OSError, ValueError, EOFError, RuntimeError, NotImplementedError,
                 zipfile.BadZipFile, zlib.error)


@dataclasses.dataclass(frozen=True)
class _Member:
  """An archive entry as its checked .npy header describes it: what the architecture and the
  checks need (`shape`, `dtype`), and where its data is."""
  info: zipfile.ZipInfo
  shape: tuple[int, ...]  # as the model sees it: GroupNorm's (1, 1, 1, C) made (C,)
  stored_shape: tuple[int, ...]
  dtype: np.dtype
  fortran_order: bool
  offset: int  # bytes of magic string and header before the data

  @property
  def ndim(self) -> int:
    return len(self.shape)

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  @property
  def nbytes(self) -> int:
    return self.size * self.dtype.itemsize


def _entry_names(files: list[str]) -> tuple[dict[str, str], list[str]]:
  """Maps parameter names to archive entries; returns it and the entries that are strays.

  Files with the `opt/target/` prefix keep only those entries (other `opt/...` entries are
  optimiser state and are skipped unread); entries outside `opt/` in such a file are strays.
  Files without the prefix (e.g. `params_to_flat` saved directly) are taken as they are.
  """
  if not any(name.startswith(OFFICIAL_PREFIX) for name in files):
    return {name: name for name in files}, []
  names = {name[len(OFFICIAL_PREFIX):]: name for name in files if name.startswith(OFFICIAL_PREFIX)}
  strays = sorted(name for name in files if not name.startswith(_OPTIMIZER_PREFIX))
  return names, strays


def _open_source(path: str) -> BinaryIO:
  """The local file, or the whole file at a URL in memory (`paths.read_url`)."""
  if paths.is_url(path):
    try:
      return paths.read_url(path)
    except FileNotFoundError:
      raise CheckpointError(f"{path}: no such checkpoint file") from None
    except OSError as e:
      raise CheckpointError(str(e)) from None
  if not os.path.isfile(path):
    raise CheckpointError(f"{path}: no such checkpoint file")
  try:
    return open(path, "rb")
  except OSError as e:
    raise CheckpointError(f"{path}: cannot be read ({e.strerror})") from None


@contextlib.contextmanager
def _open_archive(path: str) -> Iterator[tuple[zipfile.ZipFile, int]]:
  """The zip archive at `path` and the file's size in bytes; CheckpointError if it is none."""
  with _open_source(path) as source:
    size = source.seek(0, io.SEEK_END)
    source.seek(0)
    if source.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
      raise CheckpointError(f"{path}: a single .npy array, not an .npz archive of named parameters")
    try:
      archive = zipfile.ZipFile(source)
    except _ENTRY_ERRORS as e:
      raise CheckpointError(f"{path}: not a numpy .npz archive ({e})") from e
    with archive:
      yield archive, size


def _bytes(n: float) -> str:
  """A byte count for people: 8 B, 1.5 KiB, ..., 4.0 TiB."""
  if n < 1024:
    return f"{n:.0f} B"
  for unit in ("KiB", "MiB", "GiB", "TiB"):
    n /= 1024
    if n < 1024 or unit == "TiB":
      return f"{n:.1f} {unit}"
  raise AssertionError("unreachable")


def _npy_header(f: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype, int]:
  """(shape, fortran_order, dtype, bytes before the data) of the .npy stream `f`, read through its
  header and no further: the header's length is checked before the header is read."""
  magic = f.read(len(_NPY_MAGIC) + 2)
  if magic[:len(_NPY_MAGIC)] != _NPY_MAGIC or len(magic) < len(_NPY_MAGIC) + 2:
    raise ValueError("not a .npy array (no numpy magic string)")
  version = tuple(magic[-2:])
  if version not in _NPY_VERSIONS:
    raise ValueError(f".npy format version {version[0]}.{version[1]} (1.0 and 2.0 are read)")
  read_header, length_format = _NPY_VERSIONS[version]
  length_field = f.read(struct.calcsize(length_format))
  if len(length_field) < struct.calcsize(length_format):
    raise ValueError("truncated in its .npy header")
  (length,) = struct.unpack(length_format, length_field)
  if length > _MAX_NPY_HEADER:
    raise ValueError(f"a .npy header of {_bytes(length)}, over numpy's limit of "
                     f"{_bytes(_MAX_NPY_HEADER)}")
  header = f.read(length)
  if len(header) < length:
    raise ValueError("truncated in its .npy header")
  shape, fortran_order, dtype = read_header(io.BytesIO(length_field + header),
                                            max_header_size=_MAX_NPY_HEADER)
  return shape, fortran_order, dtype, len(magic) + len(length_field) + length


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
  """An entry's header, checked against the zip's sizes; ValueError says why it cannot be read."""
  if info.compress_type not in _READ_METHODS:
    raise ValueError(f"zip compression method {info.compress_type}: only stored and deflated "
                     "entries (what numpy writes) are read")
  with archive.open(info) as f:
    shape, fortran_order, dtype, offset = _npy_header(f)
  if dtype.hasobject:
    raise ValueError(f"holds Python objects (dtype {dtype}), refused unread: unpickling a file "
                     "runs code from it")
  if any(dim < 0 for dim in shape):
    raise ValueError(f"its .npy header declares the shape {shape}, with a negative dimension")
  member = _Member(info, shape, shape, dtype, fortran_order, offset)
  held = info.file_size - offset
  if held != member.nbytes:
    what = "truncated" if held < member.nbytes else "longer than its .npy header says (a zip bomb?)"
    raise ValueError(f"{what}: the header declares {shape} {dtype}, {_bytes(member.nbytes)}, the "
                     f"zip entry holds {_bytes(max(held, 0))} after it")
  if max(shape, default=0) > _MAX_DIM:
    raise ValueError(f"its .npy header declares the shape {shape}: dimensions over {_MAX_DIM} "
                     "are not read")
  return member


def _read_headers(archive: zipfile.ZipFile) -> tuple[dict[str, _Member], list[str], list[str]]:
  """The parameter entries' checked headers; no data is read.

  Returns (members by parameter name, stray entry names, "name: why" for entries that cannot be
  read). A bare `pre_logits` entry (old flax's empty identity layer, possibly a pickled `{}`) is
  skipped unread, as is optimiser state.
  """
  infos = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
  names, strays = _entry_names(list(infos))
  names.pop(_PRE_LOGITS, None)
  members, unreadable = {}, []
  for name, entry in sorted(names.items()):
    try:
      members[name] = _member(archive, infos[entry])
    except _ENTRY_ERRORS as e:
      unreadable.append(f"{name}: {e}")
  return members, strays, unreadable


def _normalise_layout(members: Mapping[str, _Member]) -> dict[str, _Member]:
  """Undoes old-flax storage: (1,1,1,C) GroupNorm params -> (C,); empty `pre_logits/*` dropped."""
  out = {}
  for name, member in members.items():
    if _GROUPNORM_PARAM.search(name) and member.ndim == 4 and member.shape[:3] == (1, 1, 1):
      member = dataclasses.replace(member, shape=member.shape[-1:])
    out[name] = member
  pre_logits = [name for name in out if name.startswith(_PRE_LOGITS + "/")]
  if pre_logits and all(out[name].size == 0 for name in pre_logits):
    for name in pre_logits:
      del out[name]
  return out


def _check_inflation(path: str, members: Mapping[str, _Member], file_size: int) -> None:
  """CheckpointError if reading `members` would take over `_MAX_INFLATION` times the file's size
  (entries deflated from almost nothing, or overlapping one another)."""
  total = sum(member.info.file_size for member in members.values())
  if total <= max(_MAX_INFLATION * file_size, _INFLATION_FLOOR):
    return
  worst = max(members, key=lambda name: members[name].info.file_size
              / max(members[name].info.compress_size, 1))
  raise CheckpointError(
      f"{path}: its parameters would inflate to {_bytes(total)} from a {_bytes(file_size)} file, "
      f"over {_MAX_INFLATION} times its size (most inflated: {worst}): refused unread as a zip "
      "bomb. np.savez writes files that take 1x, np.savez_compressed about 1.1x")


def _read_member(archive: zipfile.ZipFile, member: _Member) -> np.ndarray:
  """An entry's data: exactly the bytes its checked header promised, in its model shape."""
  with archive.open(member.info) as f:
    f.read(member.offset)  # the header, already read and checked
    data = f.read(member.nbytes)
    if len(data) < member.nbytes:
      raise ValueError(f"truncated: {_bytes(len(data))} of the {_bytes(member.nbytes)} its .npy "
                       "header declares")
    if f.read(1):
      raise ValueError("longer than its .npy header says")
  array = np.frombuffer(data, member.dtype)
  stored = member.stored_shape
  array = array.reshape(stored[::-1]).T if member.fortran_order else array.reshape(stored)
  return array.reshape(member.shape)


def _read_data(archive: zipfile.ZipFile, members: Mapping[str, _Member],
               expected: Mapping[str, jax.ShapeDtypeStruct]) -> tuple[FlatParams, list[str]]:
  """The checked members' arrays in the model's dtypes, and "name: why" for those unreadable."""
  arrays, unreadable = {}, []
  for name, member in sorted(members.items()):
    try:
      arrays[name] = _read_member(archive, member).astype(expected[name].dtype)
    except _ENTRY_ERRORS as e:
      unreadable.append(f"{name}: {e}")
  return arrays, unreadable


# ---------------------------------------------------------------------------------------------
# Checking a file against the model its architecture builds.


def _infer_config(path: str, flat: Mapping[str, _Member], problems: dict[str, list[str]],
                  overrides: Mapping[str, Any]) -> musiq.ModelConfig:
  """The architecture the headers in `flat` describe; CheckpointError listing `problems` and why
  there is none. More layers than parameters is refused before a layer's shapes are listed."""
  try:
    cfg = architecture.infer_model_config(flat, **overrides)
    if cfg.num_layers > len(flat):
      raise ValueError(f"encoder blocks numbered up to {cfg.num_layers - 1}, more than the "
                       f"file's {len(flat)} parameters")
  except architecture.NeedKeys as e:
    problems["cannot infer the architecture"] = [f"missing {e}"]
  except IndexError as e:  # e.g. a 1-D scale table: the rows `architecture` reads are not there
    problems["cannot infer the architecture"] = [f"a parameter has too few dimensions ({e})"]
  except ValueError as e:
    problems["cannot infer the architecture"] = [str(e)]
  else:
    return cfg
  raise _report(path, problems, "architecture unknown")


def _problems(flat: Mapping[str, Any], expected: Mapping[str, jax.ShapeDtypeStruct],
              skipped: set[str]) -> dict[str, list[str]]:
  """Missing, unexpected and mismatched keys (names in `skipped` are already reported)."""
  mismatched = []
  for name in sorted(set(flat) & set(expected)):
    got, want = flat[name], expected[name]
    if got.shape != tuple(want.shape):
      mismatched.append(f"{name}: file {got.shape}, model {tuple(want.shape)}")
    elif not np.issubdtype(got.dtype, np.floating):
      mismatched.append(f"{name}: file dtype {got.dtype}, model {np.dtype(want.dtype)}")
  return {
      "missing keys": sorted(set(expected) - set(flat) - skipped),
      "unexpected keys": sorted(set(flat) - set(expected)),
      "shape/dtype mismatches": mismatched,
  }


def _report(path: str, problems: Mapping[str, list[str]], context: str) -> CheckpointError:
  """One error naming the file and listing every problem, grouped by kind."""
  lines = [f"{path}: not a usable MUSIQ checkpoint ({context}):"]
  for title, items in problems.items():
    if items:
      lines.append(f"  {title} ({len(items)}):")
      lines.extend(f"    {item}" for item in items)
  return CheckpointError("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# The official .npz files.


def load_official_npz(path: str | os.PathLike, **overrides: Any
                      ) -> tuple[Params, musiq.ModelConfig]:
  """Reads an official MUSIQ `.npz` (or one `export_official_npz` wrote) and its architecture.

  Args:
    path: the file; keys with or without the `opt/target/` prefix.
    **overrides: `ModelConfig` fields to set instead of inferring (files don't store dropout
      rates, or `none` vs `sinusoid` spatial embeddings).

  Returns:
    (params as nested dicts of float32 host arrays, the inferred `ModelConfig`).

  Raises:
    CheckpointError: the file is missing, not an .npz, holds pickled objects, an entry's .npy
      header disagrees with its zip sizes (truncated, or more data than declared), the file
      would inflate to over 100 times its size, or its keys and shapes do not make a MUSIQ
      model; the message lists every problem found. Entries are checked from their headers
      first, so a hostile file costs no more memory than the model it claims to be.
  """
  path = os.fspath(path)
  with _open_archive(path) as (archive, file_size):
    members, strays, unreadable = _read_headers(archive)
    flat = _normalise_layout(members)
    problems = {"unreadable entries": unreadable, "stray entries outside opt/": strays}
    cfg = _infer_config(path, flat, problems, overrides)
    expected = architecture.expected_shapes(cfg)
    problems.update(_problems(flat, expected, {item.split(":", 1)[0] for item in unreadable}))
    if any(problems.values()):
      raise _report(path, problems, f"compared with the model of {cfg}")
    _check_inflation(path, flat, file_size)
    arrays, unreadable = _read_data(archive, flat, expected)
  if unreadable:
    raise _report(path, {"unreadable entries": unreadable}, f"compared with the model of {cfg}")
  return flat_to_params(arrays), cfg


def export_official_npz(params: Mapping[str, Any], path: str | os.PathLike) -> None:
  """Writes params in the official layout: `opt/target/` keys, GroupNorm params as (1, 1, 1, C).

  The original MUSIQ tools (and `load_official_npz`) read the result. Written to a temporary file
  and renamed, so a crash never leaves a half-written checkpoint under the final name.
  """
  path = os.fspath(path)
  entries = {}
  for name, value in params_to_flat(params).items():
    if _GROUPNORM_PARAM.search(name) and value.ndim == 1:
      value = value.reshape(1, 1, 1, -1)
    entries[OFFICIAL_PREFIX + name] = value
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    with open(tmp, "wb") as f:  # a file object, so numpy does not append ".npz" to the name
      np.savez(f, **entries)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
