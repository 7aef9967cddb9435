"""`python -m mst.datasets [build] NAME --manual_dir M --data_dir D [--config C ...]`

The `tfds build` command with the mst builders registered. It takes every `tfds build` flag (it
runs tfds's own `build` command), but the `tfds` script itself cannot start in
tensorflow-datasets 4.9.10 without apache_beam installed (its CLI imports the `convert_format`
command, which subclasses `beam.DoFn` at import time); where apache_beam is installed,
`tfds build --imports mst.datasets NAME ...` does the same.
"""

from absl import app
from absl import logging
from tensorflow_datasets.scripts.cli import build as tfds_build
from tensorflow_datasets.scripts.cli import cli_utils

import mst.datasets  # pylint: disable=unused-import  # Registers the builders.

_IMPORT_FLAGS = ("--imports", "-i", "--module_import")

_parse_flags = cli_utils.make_flags_parser(
    tfds_build.Args, description="Prepare mst datasets (tfds build).")


def parse(argv: list[str]) -> tfds_build.Args:
  """The `tfds build` arguments in `argv` (argv[0] is the program; an optional `build` after it
  is dropped). Adds `--imports mst.datasets` so names resolve to the registered builders rather
  than to a same-named script in the working directory."""
  argv = list(argv)
  if len(argv) > 1 and argv[1] == "build":
    del argv[1]
  if not any(a.split("=")[0] in _IMPORT_FLAGS for a in argv[1:]):
    argv.append("--imports=mst.datasets")
  return _parse_flags(argv)


def main(args: tfds_build.Args) -> None:
  logging.set_verbosity(logging.INFO)
  args.execute()


def run() -> None:
  """Console-script entry point."""
  app.run(main, flags_parser=parse)


if __name__ == "__main__":
  run()
