"""Model checkpoints: the official MUSIQ `.npz` files (import, export) and orbax training state.

The released MUSIQ files (koniq_ckpt.npz, ava_ckpt.npz, imagenet_pretrain.npz, ...) are flat numpy
archives whose keys are `/`-joined parameter paths under `opt/target/`, written by the original
`flax.nn` code. Our model (`mst.models.musiq`) uses the same names, so importing is: strip the
prefix, undo the two old-flax layout quirks (GroupNorm scale/bias stored as (1, 1, 1, C); an empty
`pre_logits` entry), infer the architecture from the keys and shapes, and check every key and shape
against the model that architecture builds. Anything wrong is reported in one `CheckpointError` that
names the file and lists every problem, so a bad file is fixed in one round trip, not one per key.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import zipfile
from typing import Any, Mapping

import flax.traverse_util
import jax
import numpy as np

from mst.models import musiq
from mst.models import patch_encoders

Params = dict[str, Any]
FlatParams = dict[str, np.ndarray]

OFFICIAL_PREFIX = "opt/target/"
# Full training files may also hold optimiser state (`opt/state/...`): not parameters, not loaded.
_OPTIMIZER_PREFIX = "opt/"
_PRE_LOGITS = "pre_logits"
# Old flax.nn GroupNorm stored scale/bias as (1, 1, 1, C); ours are (C,). Matches gn_root, gn1..gn3,
# gn_proj.
_GROUPNORM_PARAM = re.compile(r"(^|/)gn[^/]*/(scale|bias)$")
_ENCODER_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/")
_HEAD_FOR_CLASSES = {1: "score", 10: "distribution"}  # anything else: "classification"
# The paper's resized longer sides for a given number of scales (resized copies + native).
_DEFAULT_LONGER_SIDES = {1: (), 3: (224, 384)}


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
  if not os.path.isfile(path):
    raise CheckpointError(f"{path}: no such checkpoint file")
  try:
    archive = np.load(path, allow_pickle=False)
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
# The architecture from keys and shapes.


class _NeedKeys(Exception):
  """Inference needed one of these keys and the file has none of them."""


def _shape(flat: Mapping[str, np.ndarray], *names: str) -> tuple[int, ...]:
  for name in names:
    if name in flat:
      return flat[name].shape
  raise _NeedKeys(" or ".join(names))


def _spatial_embedding(flat) -> dict[str, Any]:
  """`hse` with G from the (1, G*G, D) table, `fixed` with its length, else `sinusoid`.

  A file cannot tell `sinusoid` from `none` (neither stores a table); `sinusoid` is the official
  code's only table-free option. Pass `spatial_embedding="none"` to the loader to override.
  """
  if "Transformer/posembed_input/pos_embedding" in flat:
    rows = _shape(flat, "Transformer/posembed_input/pos_embedding")[1]
    grid = math.isqrt(rows)
    if grid * grid != rows:
      raise ValueError(f"posembed_input has {rows} rows, not a square G*G grid")
    return {"spatial_embedding": "hse", "grid_size": grid}
  if "Transformer/posembed_fixed/pos_embedding" in flat:
    rows = _shape(flat, "Transformer/posembed_fixed/pos_embedding")[1]
    return {"spatial_embedding": "fixed", "max_positions": rows}
  return {"spatial_embedding": "sinusoid"}


def _scale_embedding(flat) -> dict[str, Any]:
  """SCE rows = number of scales (resized copies + native); no table means SCE is off."""
  if "Transformer/scaleembed_input/scale_embedding" not in flat:
    return {"use_scale_embedding": False}
  rows = _shape(flat, "Transformer/scaleembed_input/scale_embedding")[1]
  return {"use_scale_embedding": True, "num_scales": rows}


def _patch_encoder(flat) -> dict[str, Any]:
  """The encoder from which modules exist; P from the `embedding` kernel's rows.

  resnet rows = (P/4)^2 * 256, conv rows = (P/4)^2 * 64, linear rows = P*P*3.
  """
  if any(name.startswith("block1/") for name in flat):
    per_pixel = patch_encoders.ROOT_FEATURES * patch_encoders.BOTTLENECK_EXPANSION
    encoder, side_factor = "resnet", 4
  elif any(name.startswith("conv_root/") for name in flat):
    encoder, per_pixel, side_factor = "conv", patch_encoders.ROOT_FEATURES, 4
  else:
    encoder, per_pixel, side_factor = "linear", 3, 1
  rows = _shape(flat, "embedding/kernel")[0]
  patch = math.isqrt(rows // per_pixel) * side_factor
  if patch < 1 or patch_encoders.feature_size(encoder, patch) != rows:
    raise ValueError(f"embedding/kernel has {rows} rows: no patch size fits the {encoder} encoder")
  return {"patch_encoder": encoder, "patch_size": patch}


def _head(flat) -> dict[str, Any]:
  classes = _shape(flat, "head/kernel", "head/bias")[-1]
  fields = {"num_classes": classes, "head": _HEAD_FOR_CLASSES.get(classes, "classification")}
  fields["representation_size"] = (
      _shape(flat, "pre_logits/kernel")[1] if "pre_logits/kernel" in flat else None)
  return fields


def _transformer(flat) -> dict[str, Any]:
  """Layers from the block indices, D and heads from the (D, heads, head_dim) query kernel."""
  indices = [int(m.group(1)) for m in map(_ENCODER_BLOCK.match, flat) if m]
  if not indices:
    raise _NeedKeys("Transformer/encoderblock_0/...")
  block = f"Transformer/encoderblock_{min(indices)}"
  hidden, heads, _ = _shape(flat, f"{block}/SelfAttention_0/query/kernel")
  mlp_dim = _shape(flat, f"{block}/MlpBlock_0/Dense_0/kernel")[1]
  return {"num_layers": max(indices) + 1, "hidden_size": hidden, "num_heads": heads,
          "mlp_dim": mlp_dim}


def infer_model_config(flat: Mapping[str, np.ndarray], **overrides: Any) -> musiq.ModelConfig:
  """The `ModelConfig` a flat parameter dict was made by; `overrides` set what files can't tell.

  Raises `_NeedKeys` or `ValueError` (turned into `CheckpointError` by the loader), and
  `TypeError` for overrides that are not `ModelConfig` fields.
  """
  known = {field.name for field in dataclasses.fields(musiq.ModelConfig)}
  if unknown := sorted(set(overrides) - known):
    raise TypeError(f"not ModelConfig fields: {unknown}")
  fields: dict[str, Any] = {}
  for part in (_transformer, _spatial_embedding, _scale_embedding, _patch_encoder, _head):
    fields.update(part(flat))
  fields = {name: value for name, value in fields.items() if name in known}
  return musiq.ModelConfig(**(fields | overrides))


# ---------------------------------------------------------------------------------------------
# Checking a file against the model its config builds.


def expected_shapes(cfg: musiq.ModelConfig) -> dict[str, jax.ShapeDtypeStruct]:
  """Every parameter's shape and dtype for `cfg`, via `jax.eval_shape` (nothing is computed)."""
  params = jax.eval_shape(functools.partial(musiq.init_params, cfg), jax.random.key(0))
  return flax.traverse_util.flatten_dict(params, sep="/")


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
    cfg = infer_model_config(flat, **overrides)
  except (_NeedKeys, ValueError) as e:
    problems["cannot infer the architecture"] = [
        f"missing {e}" if isinstance(e, _NeedKeys) else str(e)]
    raise _report(path, problems, "architecture unknown") from None
  expected = expected_shapes(cfg)
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


def preprocess_config_for(model_cfg: musiq.ModelConfig,
                          longer_side_lengths: tuple[int, ...] | None = None):
  """The `preprocess.MultiScaleConfig` an imported model expects (single-image evaluation).

  P and G come from the model; the resized longer sides are the paper's (224, 384) for 3 scales
  and none for single-scale files. Other scale counts must pass their lengths: files don't store
  them.
  """
  from mst import preprocess  # Lazy: preprocess imports TensorFlow, which loading does not need.

  resized = model_cfg.num_scales - 1
  if longer_side_lengths is None:
    if model_cfg.num_scales not in _DEFAULT_LONGER_SIDES:
      raise ValueError(
          f"a model with num_scales={model_cfg.num_scales} takes {resized} resized copies whose "
          "longer sides the checkpoint does not record: pass longer_side_lengths")
    longer_side_lengths = _DEFAULT_LONGER_SIDES[model_cfg.num_scales]
  if len(longer_side_lengths) != resized:
    raise ValueError(f"num_scales={model_cfg.num_scales} needs {resized} longer_side_lengths, "
                     f"got {tuple(longer_side_lengths)}")
  return preprocess.MultiScaleConfig(
      patch_size=model_cfg.patch_size, grid_size=model_cfg.grid_size,
      longer_side_lengths=tuple(longer_side_lengths), max_seq_len_from_original_res=-1)


# ---------------------------------------------------------------------------------------------
# Orbax training checkpoints (train state: params, optimiser state, step).
# Not implemented yet: to come in its own change (CheckpointManager, async saves finished with
# `wait_until_finished()`, StandardRestore into an abstract target from `jax.eval_shape`).


# ---------------------------------------------------------------------------------------------
# Either kind of checkpoint, for scoring and evaluation.


@dataclasses.dataclass
class Loaded:
  """Parameters with what scoring needs: the model, its preprocessing (all native patches), and
  the factor that turns the model's output into the dataset's MOS scale."""
  params: Params
  model_config: musiq.ModelConfig
  pp_config: Any
  score_scale: float = 1.0


def load_for_inference(path: str, dtype: str = "float32",
                       longer_side_lengths: tuple[int, ...] | None = None) -> Loaded:
  """An official `.npz` file (architecture from the file, output as is) or an `mst-train` workdir
  (its best, else latest, parameters, its own preprocessing and MOS scale)."""
  from mst import config_utils  # pylint: disable=g-import-not-at-top  # lazy: TF and orbax
  from mst import train_checkpoints  # pylint: disable=g-import-not-at-top
  path = os.path.expanduser(path)
  if not os.path.isdir(path):
    params, model_cfg = load_official_npz(path, dtype=dtype)
    return Loaded(params, model_cfg, preprocess_config_for(model_cfg, longer_side_lengths))
  try:
    params, config = train_checkpoints.load_params(path)
  except FileNotFoundError as e:
    raise CheckpointError(str(e)) from None
  model_cfg = dataclasses.replace(config_utils.model_config(config), dtype=dtype)
  pp_config = config_utils.preprocess_config(config, train=False)
  if longer_side_lengths is not None:
    pp_config = dataclasses.replace(pp_config, longer_side_lengths=tuple(longer_side_lengths))
  return Loaded(params, model_cfg, pp_config, float(config.dataset.mos_scale))
