"""Config files and flat overrides: load a config file by path, apply
`{"model.spatial_embedding": "none", ...}` with the types of the base config, and write the same
overrides as `mst-train` command-line flags. `mst-train`, `mst-eval` and the sweeps all use it.

Every check runs before anything trains: an unknown key fails listing it (and the closest real
key), and so does a value of the wrong type (a string for a number, an int for a bool).
"""

import ast
import difflib
import importlib.util
import os
import pathlib
import shlex
from typing import Any

import ml_collections

# A source checkout's root, where `configs/` lives: config paths resolve from here too.
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
Overrides = dict[str, Any]


def resolve_config_path(path: str) -> pathlib.Path:
  """`path` as given, else relative to the repository root (so `configs/ava.py` works anywhere)."""
  for candidate in (pathlib.Path(path), REPO_ROOT / path):
    if candidate.is_file():
      return candidate.resolve()
  raise FileNotFoundError(f"config file {path!r} not found (nor under {REPO_ROOT})")


def load_config(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file at `path` (`--config=path:arg` on the command line).

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file is not Python source, has a syntax error, or defines no `get_config`.
  """
  file = resolve_config_path(path)
  if file.suffix != ".py":
    raise ValueError(f"config file {str(file)!r} is not a Python file (.py) defining get_config()")
  spec = importlib.util.spec_from_file_location(f"_mst_config_{file.stem}", file)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ValueError(f"config file {str(file)!r}, line {e.lineno}: {e.msg}") from None
  if not callable(getattr(module, "get_config", None)):
    raise ValueError(f"config file {str(file)!r} defines no get_config(arg) function")
  return module.get_config(arg)


def _all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  keys = []
  for name, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      keys += _all_keys(value, f"{prefix}{name}.")
    else:
      keys.append(prefix + name)
  return keys


def check_keys(config: ml_collections.ConfigDict, keys) -> None:
  """Raises KeyError listing every key of `keys` that is not a leaf of `config`."""
  known = _all_keys(config)
  unknown = [key for key in keys if key not in known]
  if unknown:
    hints = [f"{key} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(
        key, known, n=1)) else key for key in unknown]
    raise KeyError(f"unknown config key(s): {', '.join(hints)}")


def _check_type(key: str, value: Any, default: Any) -> None:
  if isinstance(default, bool) or isinstance(value, bool):
    ok = isinstance(value, bool) and isinstance(default, bool)
  elif isinstance(default, float):
    ok = isinstance(value, (int, float))
  elif isinstance(default, (tuple, list)):
    ok = isinstance(value, (tuple, list))
  else:
    ok = isinstance(value, type(default))
  if not ok:
    raise TypeError(f"config key {key}: {value!r} ({type(value).__name__}) does not fit the "
                    f"default {default!r} ({type(default).__name__})")


def apply_overrides(config: ml_collections.ConfigDict, overrides: Overrides
                    ) -> ml_collections.ConfigDict:
  """A copy of `config` with `overrides` set; unknown keys and mistyped values raise."""
  check_keys(config, overrides)
  result = config.copy_and_resolve_references()
  for key, value in overrides.items():
    *sections, name = key.split(".")
    node = result
    for section in sections:
      node = node[section]
    _check_type(key, value, node[name])
    node[name] = tuple(value) if isinstance(value, list) else value
  result.lock()
  return result


def parse_assignment(config: ml_collections.ConfigDict, text: str) -> tuple[str, Any]:
  """`key=value` from the command line: the value as a Python literal ("0.1", "(384, 224)",
  "False"), else as a string ("none"); "true"/"false" for bool keys."""
  key, sep, raw = text.partition("=")
  if not sep:
    raise ValueError(f"--set takes key=value, got {text!r}")
  check_keys(config, [key])
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    value = raw
  default = config
  for part in key.split("."):
    default = default[part]
  if isinstance(default, bool) and raw.lower() in ("true", "false"):
    value = raw.lower() == "true"
  elif isinstance(default, str):
    value = raw  # a path or name is never re-read as a number
  return key, value


def flag_value(value: Any) -> str:
  """`value` as ml_collections' config flags parse it back: tuples as Python literals."""
  if isinstance(value, (tuple, list)):
    return repr(tuple(value))
  return str(value)


def as_flags(overrides: Overrides) -> list[str]:
  """`--config.a.b=v` shell words, each value quoted for a POSIX shell where it needs it."""
  return [f"--config.{key}={shlex.quote(flag_value(value))}" for key, value in overrides.items()]


def workdir_join(root: str, name: str) -> str:
  """`root/name` for local paths and gs:// URLs alike."""
  return f"{root.rstrip('/')}/{name}" if "://" in root else os.path.join(root, name)
