"""One way to load parameters from either kind of checkpoint: an official `.npz` file or an
`mst-train` workdir. Fine-tuning (`merge_pretrained`), `mst-predict`, `mst-eval` and
`mst-visualize` all come through here, so "which kind is this path?" is decided in one place.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from absl import logging
import flax.traverse_util

from mst import errors
from mst.checkpoints import npz
from mst.checkpoints import paths
from mst.data import multiscale
from mst.models import musiq

CheckpointError = npz.CheckpointError
Params = dict[str, Any]
# The paper's resized longer sides for a given number of scales (resized copies + native).
_DEFAULT_LONGER_SIDES = {1: (), 3: multiscale.MultiScaleConfig.longer_side_lengths}
# Where the released MUSIQ checkpoints are (imagenet_pretrain.npz, koniq_ckpt.npz, ...).
MUSIQ_RELEASE = ("https://github.com/google-research/google-research/tree/master/musiq, whose "
                 "README links the checkpoints: "
                 "https://console.cloud.google.com/storage/browser/gresearch/musiq")


def is_workdir(path: str) -> bool:
  """A folder (local, or a URL such as gs://bucket/run) is an mst-train workdir; anything else
  is taken for an `.npz` file. CheckpointError where a URL cannot be checked."""
  try:
    return paths.isdir(path)
  except OSError as e:
    raise CheckpointError(str(e)) from None


def load_params(path: str) -> Params:
  """The parameters of an official `.npz` file, or the best (else latest) of a workdir."""
  path = os.path.expanduser(path)
  if is_workdir(path):
    from mst.checkpoints import workdirs  # pylint: disable=g-import-not-at-top  (orbax: slow)
    return workdirs.load_params(path)[0]
  return npz.load_official_npz(path)[0]


class PretrainedMissing(errors.BadInput, FileNotFoundError):
  """The pre-trained checkpoint a config starts from is not there."""


def require_pretrained(path: str) -> None:
  """Raises PretrainedMissing, saying where to get the file and how to train from scratch on
  purpose, if the pre-trained `path` (`config.init.checkpoint`) does not exist. Cloud paths
  (gs://...) are checked there too."""
  try:
    if paths.exists(path):
      return
  except OSError as e:  # a URL that cannot be checked: no permission, an unknown scheme
    raise PretrainedMissing(f"config.init.checkpoint: {e}") from None
  raise PretrainedMissing(
      f"config.init.checkpoint={path!r} does not exist. The paper fine-tunes from the ImageNet "
      f"pre-trained MUSIQ: download imagenet_pretrain.npz from the MUSIQ release, "
      f"{MUSIQ_RELEASE}, to {path} (or pass --config.init.checkpoint=/where/it/is). To train "
      "from scratch on purpose, pass --config.init.checkpoint=none.")


def merge_pretrained(fresh: dict, path: str) -> dict:
  """`fresh` parameters with every one that `path` holds in the same shape replaced by its value.

  Those that differ (a head with another number of outputs, a scale embedding for other scales, a
  grid of another size) stay freshly initialised, and the log says which, so fine-tuning from
  `imagenet_pretrain.npz` replaces the 1000-class head with a new one.
  """
  pretrained = flax.traverse_util.flatten_dict(load_params(path), sep="/")
  merged = {}
  for name, value in flax.traverse_util.flatten_dict(fresh, sep="/").items():
    loaded = pretrained.pop(name, None)
    if loaded is not None and loaded.shape == value.shape:
      merged[name] = loaded.astype(value.dtype)
    else:
      merged[name] = value
      why = "absent" if loaded is None else f"shape {loaded.shape} there, {value.shape} here"
      logging.warning("Pre-trained %s: %s: %s, initialised afresh", path, name, why)
  for name in pretrained:
    logging.warning("Pre-trained %s: %s is not in this model, ignored", path, name)
  return flax.traverse_util.unflatten_dict(merged, sep="/")


def preprocess_config_for(model_cfg: musiq.ModelConfig,
                          longer_side_lengths: tuple[int, ...] | None = None
                          ) -> multiscale.MultiScaleConfig:
  """The `multiscale.MultiScaleConfig` an imported model expects (single-image evaluation).

  P and G come from the model; the resized longer sides are the paper's (224, 384) for 3 scales
  and none for single-scale files. Other scale counts must pass their lengths: files don't store
  them.
  """
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
  return multiscale.MultiScaleConfig(
      patch_size=model_cfg.patch_size, grid_size=model_cfg.grid_size,
      longer_side_lengths=tuple(longer_side_lengths), max_seq_len_from_original_res=-1)


@dataclasses.dataclass
class Loaded:
  """Parameters with what scoring needs: the model, its preprocessing (all native patches), and
  the factor that turns the model's output into the dataset's MOS scale."""
  params: Params
  model_config: musiq.ModelConfig
  pp_config: multiscale.MultiScaleConfig
  mos_scale: float = 1.0


def load_for_inference(path: str, dtype: str = "float32",
                       longer_side_lengths: tuple[int, ...] | None = None) -> Loaded:
  """An official `.npz` file (architecture from the file, output as is) or an `mst-train` workdir
  (its best, else latest, parameters, its own preprocessing and MOS scale)."""
  path = os.path.expanduser(path)
  if not is_workdir(path):
    params, model_cfg = npz.load_official_npz(path, dtype=dtype)
    return Loaded(params, model_cfg, preprocess_config_for(model_cfg, longer_side_lengths))
  # Imported here: orbax and the config rules (which import TensorFlow) are slow to import, and
  # scoring with an .npz file needs neither.
  from mst.checkpoints import workdirs  # pylint: disable=g-import-not-at-top
  from mst.config import model as model_lib  # pylint: disable=g-import-not-at-top
  from mst.config import schema  # pylint: disable=g-import-not-at-top
  try:
    params, config = workdirs.load_params(path)
  except (FileNotFoundError, workdirs.WorkdirCheckpointError, schema.NewerWorkdirError) as e:
    raise CheckpointError(str(e)) from None
  model_cfg = dataclasses.replace(model_lib.model_config(config), dtype=dtype)
  pp_config = model_lib.preprocess_config(config, train=False)
  if longer_side_lengths is not None:
    pp_config = dataclasses.replace(pp_config, longer_side_lengths=tuple(longer_side_lengths))
  return Loaded(params, model_cfg, pp_config, float(config.dataset.mos_scale))
