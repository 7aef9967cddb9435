"""The official MUSIQ `.npz` checkpoint files: reading them into parameters, and writing them.

The released MUSIQ files (koniq_ckpt.npz, ava_ckpt.npz, imagenet_pretrain.npz, ...) are flat numpy
archives whose keys are `/`-joined parameter paths under `opt/target/`, written by the original
`flax.nn` code. Our model (`mst.models.musiq`) uses the same names, so importing is: strip the
prefix, undo the two old-flax layout quirks (GroupNorm scale/bias stored as (1, 1, 1, C); an empty
`pre_logits` entry), infer the architecture from the keys and shapes (`architecture`), and check
every key and shape against the model that architecture builds. Anything wrong is reported in one
`CheckpointError` that names the file and lists every problem, so a bad file is fixed in one round
trip, not one per key.
"""

from __future__ import annotations

import os
import re
import zipfile
from typing import Any, Mapping

import flax.traverse_util
import jax
import numpy as np

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


class CheckpointError(ValueError):
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
# Reading the archive.


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


def _open_npz(path: str) -> np.lib.npyio.NpzFile:
  if paths.is_url(path):
    try:
      source = paths.read_url(path)
    except FileNotFoundError:
      raise CheckpointError(f"{path}: no such checkpoint file") from None
    except OSError as e:
      raise CheckpointError(str(e)) from None
  elif not os.path.isfile(path):
    raise CheckpointError(f"{path}: no such checkpoint file")
  else:
    source = path
  try:
    archive = np.load(source, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise CheckpointError(f"{path}: not a numpy .npz archive ({e})") from e
  if not isinstance(archive, np.lib.npyio.NpzFile):
    raise CheckpointError(f"{path}: a single .npy array, not an .npz archive of named parameters")
  return archive


def _read_arrays(path: str) -> tuple[FlatParams, list[str], list[str]]:
  """Loads the parameter entries of an archive without unpickling anything.

  Returns (arrays by parameter name, stray entry names, "name: why" for unreadable entries).
  A bare `pre_logits` entry (old flax's empty identity layer, possibly a pickled `{}`) is skipped
  unread; object arrays elsewhere are refused, since unpickling a downloaded file runs its code.
  """
  with _open_npz(path) as archive:
    names, strays = _entry_names(list(archive.files))
    names.pop(_PRE_LOGITS, None)
    arrays, unreadable = {}, []
    for name, entry in sorted(names.items()):
      try:
        arrays[name] = archive[entry]
      except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        unreadable.append(f"{name}: {e}")
  return arrays, strays, unreadable


def _normalise_layout(arrays: FlatParams) -> FlatParams:
  """Undoes old-flax storage: (1,1,1,C) GroupNorm params -> (C,); empty `pre_logits/*` dropped."""
  out = {}
  for name, value in arrays.items():
    if _GROUPNORM_PARAM.search(name) and value.ndim == 4 and value.shape[:3] == (1, 1, 1):
      value = value.reshape(value.shape[-1])
    out[name] = value
  pre_logits = [name for name in out if name.startswith(_PRE_LOGITS + "/")]
  if pre_logits and all(out[name].size == 0 for name in pre_logits):
    for name in pre_logits:
      del out[name]
  return out



# ---------------------------------------------------------------------------------------------
# Checking a file against the model its architecture builds.


def _problems(flat: FlatParams, expected: Mapping[str, jax.ShapeDtypeStruct],
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
    CheckpointError: the file is missing, not an .npz, holds pickled objects, or its keys and
      shapes do not make a MUSIQ model; the message lists every problem found.
  """
  path = os.fspath(path)
  arrays, strays, unreadable = _read_arrays(path)
  flat = _normalise_layout(arrays)
  unreadable_names = {item.split(":", 1)[0] for item in unreadable}
  problems = {"unreadable entries": unreadable, "stray entries outside opt/": strays}
  try:
    cfg = architecture.infer_model_config(flat, **overrides)
  except (architecture.NeedKeys, ValueError) as e:
    problems["cannot infer the architecture"] = [
        f"missing {e}" if isinstance(e, architecture.NeedKeys) else str(e)]
    raise _report(path, problems, "architecture unknown") from None
  expected = architecture.expected_shapes(cfg)
  problems.update(_problems(flat, expected, unreadable_names))
  if any(problems.values()):
    raise _report(path, problems, f"compared with the model of {cfg}")
  params = {name: np.asarray(value, dtype=expected[name].dtype) for name, value in flat.items()}
  return flat_to_params(params), cfg


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
