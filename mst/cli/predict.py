"""`mst-predict`: score image files and folders with a MUSIQ checkpoint, one line per image."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
from typing import Iterator, Sequence

from mst.scoring import api
from mst.cli import exits
from mst.cli import flags
from mst.data import image_io
from mst.runtime import compilation_cache
from mst.runtime import host_memory
from mst.scoring import inference
from mst.runtime import progress
from mst.cli import result_files

DESCRIPTION = """\
Score images with a MUSIQ checkpoint. Prints one JSON object per line (or a CSV row) per image:
  {"image": "<path>", "score": <float>}        (distribution heads add "distribution": [...])
  {"image": "<path>", "error": "<what is wrong>"}  for a file that cannot be scored.
Folders are searched recursively for .jpg .jpeg .png .bmp .webp files (--no-recursive: only the
folder itself). Progress and timing go to stderr. The exit status is 1 if any image failed, 2 for
a bad checkpoint or option."""

EPILOG = """\
examples:
  mst-predict --checkpoint koniq_ckpt.npz photo.jpg
  mst-predict --checkpoint ava_ckpt.npz --batch-size 8 photos/ > scores.jsonl
  mst-predict --checkpoint koniq_ckpt.npz --format csv --output scores.csv photos/
  find /data -name '*.jpg' > list.txt && mst-predict --checkpoint koniq_ckpt.npz --list list.txt
  mst-predict --checkpoint spaq_ckpt.npz --longer-side-lengths '' photos/   # native scale only"""


def parse_args(argv: Sequence[str] | None):
  parser = flags.Parser("mst-predict", DESCRIPTION, EPILOG)
  parser.add_argument("paths", nargs="*", metavar="IMAGE_OR_DIR", help="image files and folders")
  parser.add_argument("--checkpoint", required=True, metavar="PATH",
                      help="an official MUSIQ .npz file (koniq_ckpt.npz, ava_ckpt.npz, ...), whose "
                           "architecture is read from the file, or an mst-train workdir (its best, "
                           "else latest, parameters)")
  parser.add_argument("--list", metavar="FILE",
                      help="a file of image paths, one per line ('-' for stdin), read as it is "
                           "scored (millions of lines are fine); scored after IMAGE_OR_DIR")
  parser.add_argument("--recursive", action=argparse.BooleanOptionalAction, default=True,
                      help="search folders' subfolders too (default; --no-recursive: not)")
  parser.add_argument("--format", choices=result_files.FORMATS, default="jsonl",
                      help="jsonl: one JSON object per line (default); csv: a header, then one "
                           "row per image (distribution heads: columns p1..pN)")
  parser.add_argument("--output", metavar="FILE",
                      help="write the results here instead of stdout; the file appears only "
                           "once complete (written under a temporary name, then renamed)")
  parser.add_argument("--batch-size", type=flags.positive_int, default=1,
                      help="images of similar size scored together (default 1; more helps on GPU)")
  parser.add_argument("--concurrent-batches", type=flags.positive_int, default=None, metavar="N",
                      help="batches scored at the same time (default: 2 on CPU, where it keeps "
                           "both cores busy while XLA runs a convolution on one; 1 on GPU/TPU); "
                           "peak memory grows with it")
  parser.add_argument("--longer-side-lengths", type=flags.int_list, default=None, metavar="L1,L2",
                      help="longer sides of the resized scales (default: 224,384 for 3-scale "
                           "checkpoints, none for single-scale ones; '' for none)")
  parser.add_argument("--max-tokens", type=flags.positive_int, default=inference.DEFAULT_MAX_TOKENS,
                      help="refuse images that make more tokens than this (memory grows with the "
                           "square of it in attention; default %(default)s)")
  flags.add_dtype(parser, "bfloat16 is faster on GPU/TPU; ")
  parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
  flags.add_verbosity(parser)
  args = parser.parse_args(argv)
  if not args.paths and not args.list:
    parser.error("give images or folders to score, or --list FILE")
  return args


def listed_paths(path: str) -> Iterator[str]:
  """The non-empty lines of a list file, read one at a time. A line that is not UTF-8 is read
  as Python reads such a file name (surrogateescape): that image is still scored, and written
  escaped (mst.runtime.safe_output.printable)."""
  with contextlib.ExitStack() as stack:
    if path == "-":
      f = sys.stdin
      if hasattr(f, "reconfigure"):
        f.reconfigure(errors="surrogateescape")
    else:
      f = stack.enter_context(open(path, encoding="utf-8", errors="surrogateescape"))
    for line in f:
      if line.strip():
        yield line.rstrip("\r\n")


def count_lines(path: str) -> int | None:
  """The number of paths in a list file, for the ETA (None for stdin)."""
  if path == "-":
    return None
  with open(path, encoding="utf-8", errors="surrogateescape") as f:
    return sum(1 for line in f if line.strip())


def _check_files(args) -> int | None:
  """The number of paths in --list (None for stdin); fails early for a missing list or folder.

  Raises:
    OSError: the list cannot be read, or --output's folder does not exist.
  """
  if args.output:
    folder = os.path.dirname(os.path.abspath(os.path.expanduser(args.output)))
    if not os.path.isdir(folder):
      raise FileNotFoundError(f"--output {args.output}: no folder {folder}")
  return count_lines(args.list) if args.list else 0


def main(argv: Sequence[str] | None = None) -> int:
  return exits.run("mst-predict", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
  host_memory.keep_freed_memory()  # each forward reuses the last one's buffers: half the sys time
  args = parse_args(argv)
  flags.setup_logging(args.verbosity)
  compilation_cache.enable()
  with exits.exit_status(exits.USAGE, ValueError, OSError):
    listed = _check_files(args)
    scorer = api.load(args.checkpoint, dtype=args.dtype, max_tokens=args.max_tokens,
                      longer_side_lengths=args.longer_side_lengths)
  paths, empty_folders = image_io.find_all(args.paths, args.recursive)
  total = len(paths)
  if args.list:
    total = None if listed is None else total + listed
    paths = itertools.chain(paths, listed_paths(args.list))
  with contextlib.ExitStack() as stack:
    out = (stack.enter_context(result_files.atomic_output(args.output)) if args.output
           else sys.stdout)
    writer = result_files.ResultWriter(
        out, args.format, result_files.csv_columns(scorer.head, scorer.num_classes))
    for folder in empty_folders:
      writer.write({"image": folder, "error": f"{folder}: no image files in this folder"})
    failed = 0
    bar = progress.Progress("predict", total, "images", enabled=not args.quiet)
    for result in scorer.iter_files(paths, args.batch_size, args.concurrent_batches):
      writer.write(result)
      failed += "error" in result
      bar.update(failed=failed)
    bar.close(f"{len(scorer.predictor.compiled_shapes)} compiled shapes"
              + (f"; written to {args.output}" if args.output else ""))
  return exits.FAILED if failed or empty_folders else exits.OK


if __name__ == "__main__":
  sys.exit(main())
