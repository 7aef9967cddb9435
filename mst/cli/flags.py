"""What every console script shares: the parser, one flag spelling, config files with
`--config.KEY=VALUE` overrides, and logging.

One flag library (argparse) for all five scripts. Multi-word flags are spelled with dashes
(`--output-dir`); the underscore spelling (`--output_dir`, as absl flags were written before) is
accepted for every flag, so older scripts keep working. Config keys keep their underscores
(`--config.model.grid_size=15`): they name config fields, not flags.
"""

from __future__ import annotations

import argparse
import logging as python_logging
import sys
from typing import Sequence

from absl import flags as absl_flags
from absl import logging
import ml_collections

from mst.configure import overrides

CONFIG_PREFIX = "--config."
VERBOSITIES = ("debug", "info", "warning", "error")
# Libraries whose INFO lines drown a run's own (orbax logs every checkpoint file it touches).
_CHATTY = ("/orbax/", "/tensorflow_datasets/", "/etils/", "/jax/_src/")

SPELLING_NOTE = ("Flags may also be written with underscores (--output_dir for --output-dir), as "
                 "in earlier versions.")


def dashed(argv: Sequence[str]) -> list[str]:
  """`argv` with every flag name spelled with dashes (`--data_dir=x` -> `--data-dir=x`).

  Values, positional arguments, everything after `--`, and `--config.KEY` overrides (whose keys
  are config field names) are left as they are.
  """
  out, flags_done = [], False
  for token in argv:
    if token == "--":
      flags_done = True
    elif not flags_done and token.startswith("--") and not token.startswith(CONFIG_PREFIX):
      name, sep, value = token.partition("=")
      token = "--" + name[2:].replace("_", "-") + sep + value
    out.append(token)
  return out


class Parser(argparse.ArgumentParser):
  """argparse with mst's conventions: raw description and epilog, no abbreviated flags, and
  underscore spellings of flags accepted."""

  def __init__(self, prog: str, description: str, epilog: str | None = None):
    epilog = f"{epilog}\n\n{SPELLING_NOTE}" if epilog else SPELLING_NOTE
    super().__init__(prog=prog, description=description, epilog=epilog, allow_abbrev=False,
                     formatter_class=argparse.RawDescriptionHelpFormatter)

  def parse_known_args(self, args=None, namespace=None):
    return super().parse_known_args(dashed(sys.argv[1:] if args is None else args), namespace)


def positive_int(text: str) -> int:
  """An argparse type: an integer >= 1."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
  return value


def int_list(text: str) -> tuple[int, ...]:
  """"224,384" (or "224 384"; "" for none) -> (224, 384)."""
  try:
    return tuple(int(x) for x in text.replace(",", " ").split())
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


# ---------------------------------------------------------------------------------------------
# Config files.


def add_config(parser: argparse.ArgumentParser, what: str, required: bool = True) -> None:
  """`--config FILE[:VARIANT]`; `--config.KEY=VALUE` overrides come with it."""
  parser.add_argument(
      "--config", required=required, metavar="FILE[:VARIANT]",
      help=f"{what} (configs/*.py, loaded by path), optionally with variants after a colon "
           "(configs/koniq.py:runlocal). Any key can then be overridden: "
           "--config.model.grid_size=15 --config.preprocess.longer_side_lengths='(384, 224)'")


def _assignments(parser: argparse.ArgumentParser, extra: list[str]) -> list[str]:
  """`KEY=VALUE` of each `--config.KEY=VALUE` (or `--config.KEY VALUE`) left over by argparse."""
  assignments, rest = [], list(extra)
  while rest:
    token = rest.pop(0)
    if not token.startswith(CONFIG_PREFIX):
      parser.error(f"unrecognized arguments: {' '.join([token] + rest)}")
    key, sep, value = token[len(CONFIG_PREFIX):].partition("=")
    if not sep:
      if not rest:
        parser.error(f"{token} needs a value")
      value = rest.pop(0)
    assignments.append(f"{key}={value}")
  return assignments


def parse_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None
                      ) -> tuple[argparse.Namespace, ml_collections.ConfigDict]:
  """The parsed flags and the config they name, overrides applied and the result locked.

  A missing config file, an unknown key or a value of the wrong type is a usage error (exit
  status 2) naming it.
  """
  args, extra = parser.parse_known_args(argv)
  assignments = _assignments(parser, extra)
  path, _, variant = args.config.partition(":")
  try:
    config = overrides.load_config(path, variant or None)
    values = dict(overrides.parse_assignment(config, text) for text in assignments)
    config = overrides.apply_overrides(config, values)
  except (FileNotFoundError, KeyError, TypeError, ValueError) as e:
    parser.error(f"--config {args.config}: {e}")
  return args, config


def add_dtype(parser: argparse.ArgumentParser, note: str = "") -> None:
  """--dtype, the compute dtype, defaulting to the model's (parameters stay float32)."""
  from mst.models import musiq  # pylint: disable=g-import-not-at-top  (JAX: not for mst-train)
  parser.add_argument("--dtype", choices=tuple(musiq.DTYPES), default=musiq.ModelConfig.dtype,
                      help=f"compute dtype ({note}default %(default)s)")


# ---------------------------------------------------------------------------------------------
# Logging.


def add_verbosity(parser: argparse.ArgumentParser, default: str = "warning") -> None:
  parser.add_argument("--verbosity", choices=VERBOSITIES, default=default,
                      help="how much the log says (default %(default)s; warning: progress and "
                           "results; info: also mst's log lines and the libraries' warnings; "
                           "debug: also the INFO lines of TensorFlow, tfds, orbax and JAX)")


def _quiet_libraries(record: python_logging.LogRecord) -> bool:
  return (record.levelno >= python_logging.WARNING
          or not any(part in record.pathname for part in _CHATTY))


def _silent_libraries(record: python_logging.LogRecord) -> bool:
  return (record.levelno >= python_logging.ERROR
          or not any(part in record.pathname for part in _CHATTY))


def setup_logging(verbosity: str = "warning") -> None:
  """absl logging to stderr at `verbosity`; at info chatty libraries say only warnings, at
  warning (the default) only errors: their routine warnings are not the user's business."""
  absl_flags.FLAGS.mark_as_parsed()  # else absl warns that logging precedes flag parsing
  logging.set_verbosity(verbosity)
  logging.use_absl_handler()
  handler = logging.get_absl_handler().python_handler  # ABSLHandler hands records straight to it
  handler.removeFilter(_quiet_libraries)
  handler.removeFilter(_silent_libraries)
  if verbosity in ("warning", "error"):
    handler.addFilter(_silent_libraries)
  elif verbosity != "debug":
    handler.addFilter(_quiet_libraries)
