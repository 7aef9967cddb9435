"""The version of a workdir's config.json, and how a config written by an earlier mst is read.

A workdir (config.json, checkpoints/, best/) outlives the mst that wrote it, and every later mst
must score, evaluate, export and resume it as that one did (docs/compatibility.md;
tests/system/compat_test.py on tests/data/compat_workdir). So `write_config` records the
`schema_version` of the config's keys and the `mst_version`, and `read_config` upgrades what it
reads to today's keys. A config.json without `schema_version` (every release before this module,
mst 0.1.0 included) is version 1.

The rule for a change to the config keys (mst/config/defaults.py):
  - adding a key: bump SCHEMA_VERSION and add the key to ADDED_KEYS under the new version with the
    value that reproduces what mst did before the key existed (not necessarily its new default);
    an older file then gets that value, not the default;
  - removing a key: nothing here; an older file's value is dropped with a warning;
  - renaming a key or changing what a value means: bump SCHEMA_VERSION and convert older files in
    `upgrade`.
A config.json with a newer schema_version than this mst's is refused (NewerWorkdirError): its new
keys may change what the model computes, and this mst cannot know how.
"""

from collections.abc import Mapping
import json
from typing import Any

from absl import logging
import ml_collections

from mst import errors
from mst.version import __version__ as MST_VERSION
from mst.config import defaults

SCHEMA_VERSION = 3
# A config.json without "schema_version" was written before there was one.
UNVERSIONED = 1
VERSION_KEYS = ("schema_version", "mst_version")
# Schema version that introduced a key -> {"section.key": the value that reproduces what mst did
# before the key existed}, for the keys added since version 1.
ADDED_KEYS: dict[int, dict[str, Any]] = {
    # 2: throughput reporting (mst.training.throughput); neither changes what is computed. Before
    # them no peak was configured and no step was profiled.
    2: {"train.peak_tflops": 0.0, "train.profile_steps": ""},
    # 3: the prepared input pipeline (mst.data.prepared); before it every image was decoded and
    # resized every epoch.
    3: {"data.prepared_dir": ""},
}


class NewerWorkdirError(errors.BadInput):
  """A config.json written by a newer mst, whose keys this one does not know; the message names
  the file and both versions."""


def stamp(config: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
  """What `write_config` writes: the versions, then the config's keys as plain JSON values."""
  if isinstance(config, ml_collections.ConfigDict):
    values = json.loads(config.to_json_best_effort())
  else:
    values = dict(config)
  values = {key: value for key, value in values.items() if key not in VERSION_KEYS}
  return {"schema_version": SCHEMA_VERSION, "mst_version": MST_VERSION, **values}


def upgrade(raw: Mapping[str, Any], source: str,
            added_keys: Mapping[int, Mapping[str, Any]] | None = None
            ) -> ml_collections.ConfigDict:
  """The config a config.json (`raw`, read from `source`) means, in today's keys.

  Keys added since the file's schema version get ADDED_KEYS' values (`added_keys` stands in for
  it in tests); any other key the file lacks gets today's default; keys that today's defaults no
  longer have are dropped with a warning.

  Raises:
    NewerWorkdirError: the file's schema version is newer than SCHEMA_VERSION.
    ValueError: its schema_version is not a positive integer.
  """
  added_keys = ADDED_KEYS if added_keys is None else added_keys
  raw = dict(raw)
  version = raw.pop("schema_version", UNVERSIONED)
  written_by = raw.pop("mst_version", None)
  if isinstance(version, bool) or not isinstance(version, int) or version < 1:
    raise ValueError(f"{source}: schema_version {version!r} is not a positive integer")
  if version > SCHEMA_VERSION:
    raise NewerWorkdirError(
        f"{source} was written by mst {written_by or '(unknown version)'} with config schema "
        f"version {version}; this is mst {MST_VERSION}, which reads schema versions up to "
        f"{SCHEMA_VERSION}. Upgrade mst to at least {written_by or 'that version'} to use it.")
  old_values = {}
  for added_in in sorted(added_keys):
    if added_in > version:
      old_values.update(added_keys[added_in])
  today = defaults.get_config().to_dict()
  return ml_collections.ConfigDict(_merge(raw, today, old_values, source, prefix=""))


def _merge(raw: Mapping[str, Any], today: Mapping[str, Any], old_values: Mapping[str, Any],
           source: str, prefix: str) -> dict[str, Any]:
  """`raw`'s values for the keys `today` has (sections merged recursively); the keys `raw` lacks
  from `old_values` ("section.key" names), else from `today`."""
  merged = {}
  for key, value in raw.items():
    name = prefix + key
    if key not in today:
      logging.warning("%s: %s=%r is not a config key of mst %s (a later version removed it); "
                      "ignored", source, name, value, MST_VERSION)
    elif isinstance(today[key], Mapping) and isinstance(value, Mapping):
      merged[key] = _merge(value, today[key], old_values, source, f"{name}.")
    else:
      merged[key] = value
  for key, default in today.items():
    if key in raw:
      continue
    name = prefix + key
    if isinstance(default, Mapping):
      merged[key] = _merge({}, default, old_values, source, f"{name}.")
    else:
      merged[key] = old_values.get(name, default)
  return merged
