"""`mst-datasets build NAME --manual-dir M --data-dir D`: prepare datasets from their downloads."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from typing import Sequence

from mst import errors
from mst.cli import exits
from mst.cli import flags
from mst.config import defaults
from mst.data import datasets

DESCRIPTION = """\
Turn a dataset's original downloads into a prepared tfds dataset, once; training and evaluation
then read the prepared copy. Nothing is fetched from the network. Images that are missing or
cannot be decoded are skipped, counted, and listed in skipped_images.txt beside the prepared data.
""" + textwrap.fill(f"Datasets: {', '.join(datasets.DATASETS)} (a builder config after a slash: "
                    "spaq/shorter_side_512; kadid10k/seed_1 for the IQA sets' train/test seed).",
                    100)

EPILOG = """\
examples:
  mst-datasets build koniq10k --manual-dir ~/downloads/koniq --data-dir ~/tensorflow_datasets
  mst-datasets build spaq/shorter_side_512 --manual-dir ~/downloads/spaq
  mst-datasets build custom --config '{"csv": "/data/mine/labels.csv", "image_dir": "/data/mine"}'
  mst-datasets build demo"""


def parse_args(argv: Sequence[str] | None):
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv[:1] == ["build"]:  # `mst-datasets build NAME`, as `tfds build NAME`; optional
    del argv[0]
  parser = flags.Parser("mst-datasets", DESCRIPTION, EPILOG)
  parser.usage = "mst-datasets [build] NAME [NAME ...] [--data-dir DIR] [--manual-dir DIR] ..."
  parser.add_argument("names", nargs="+", metavar="NAME",
                      help=f"datasets to prepare: {', '.join(datasets.DATASETS)}")
  parser.add_argument("--data-dir", default=defaults.get_config().dataset.data_dir, metavar="DIR",
                      help="where prepared data goes (default %(default)s; the configs' "
                           "config.dataset.data_dir)")
  parser.add_argument("--manual-dir", metavar="DIR",
                      help="the downloads as they ship (not needed for demo, or for custom, "
                           "which takes --config)")
  parser.add_argument("--config", metavar="NAME_OR_JSON",
                      help="a builder config name (shorter_side_512, seed_1), or a JSON "
                           'object: for custom {"csv": ..., "image_dir": ..., "split_seed": ...}, '
                           'for livec, kadid10k, tid2013, live, csiq {"split_seed": ...}')
  parser.add_argument("--overwrite", action="store_true",
                      help="delete an already prepared version and prepare it again")
  flags.add_verbosity(parser)
  args = parser.parse_args(argv)
  args.builder_kwargs = {}
  if args.config:
    if args.config.lstrip().startswith("{"):
      try:
        args.builder_kwargs = json.loads(args.config)
      except json.JSONDecodeError as e:
        parser.error(f"--config is not valid JSON: {e}")
    else:
      args.builder_kwargs = {"config": args.config}
  return args


def main(argv: Sequence[str] | None = None) -> int:
  return exits.run("mst-datasets", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
  args = parse_args(argv)
  flags.setup_logging(args.verbosity)
  data_dir = os.path.expanduser(args.data_dir)
  manual_dir = os.path.expanduser(args.manual_dir) if args.manual_dir else None
  for name in args.names:
    try:
      builder = datasets.build(name, data_dir, manual_dir, overwrite=args.overwrite,
                               **args.builder_kwargs)
    except (FileNotFoundError, ValueError, TypeError) as e:
      raise errors.BadInput(f"{name}: {e}") from e
    counts = ", ".join(f"{split} {info.num_examples}"
                       for split, info in builder.info.splits.items())
    skipped = len({row["name"] for row in datasets.read_skipped(builder)})
    print(f"{name}: prepared in {builder.data_dir} ({counts}; {skipped} images skipped)",
          flush=True)
  return exits.OK


if __name__ == "__main__":
  sys.exit(main())
