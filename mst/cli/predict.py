"""`mst-predict`: score image files and folders with a MUSIQ checkpoint, one JSON line per image."""

from __future__ import annotations

import json
import sys
import time
from typing import Sequence

from mst.checkpoints import loader
from mst.cli import flags
from mst.data import image_io
from mst import compilation_cache
from mst import inference
from mst.models import musiq

DESCRIPTION = """\
Score images with a MUSIQ checkpoint. Prints one JSON object per line to stdout:
  {"image": "<path>", "score": <float>}        (distribution heads add "distribution": [...])
  {"image": "<path>", "error": "<what is wrong>"}  for a file that cannot be scored.
Folders are searched recursively for .jpg .jpeg .png .bmp .webp files. Progress and timing go to
stderr. The exit status is 1 if any image failed, 2 for a bad checkpoint or option."""

EPILOG = """\
examples:
  mst-predict --checkpoint koniq_ckpt.npz photo.jpg
  mst-predict --checkpoint ava_ckpt.npz --batch-size 8 photos/ > scores.jsonl
  mst-predict --checkpoint spaq_ckpt.npz --longer-side-lengths '' photos/   # native scale only"""


def parse_args(argv: Sequence[str] | None):
  parser = flags.Parser("mst-predict", DESCRIPTION, EPILOG)
  parser.add_argument("paths", nargs="+", metavar="IMAGE_OR_DIR", help="image files and folders")
  parser.add_argument("--checkpoint", required=True, metavar="PATH",
                      help="an official MUSIQ .npz file (koniq_ckpt.npz, ava_ckpt.npz, ...), whose "
                           "architecture is read from the file, or an mst-train workdir (its best, "
                           "else latest, parameters)")
  parser.add_argument("--batch-size", type=flags.positive_int, default=1,
                      help="images of similar size scored together (default 1; more helps on GPU)")
  parser.add_argument("--longer-side-lengths", type=flags.int_list, default=None, metavar="L1,L2",
                      help="longer sides of the resized scales (default: 224,384 for 3-scale "
                           "checkpoints, none for single-scale ones; '' for none)")
  parser.add_argument("--max-tokens", type=flags.positive_int, default=inference.DEFAULT_MAX_TOKENS,
                      help="refuse images that make more tokens than this (memory grows with the "
                           "square of it in attention; default %(default)s)")
  parser.add_argument("--dtype", choices=tuple(musiq.DTYPES), default="float32",
                      help="compute dtype (bfloat16 is faster on GPU/TPU; default float32)")
  parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
  return parser.parse_args(argv)


class Progress:
  """Occasional progress lines and a final summary on stderr."""

  def __init__(self, total: int, quiet: bool, every_s: float = 2.0):
    self.total, self.quiet, self.every_s = total, quiet, every_s
    self.start = self.last = time.perf_counter()
    self.done = self.failed = 0

  def update(self, failed: bool):
    self.done += 1
    self.failed += failed
    now = time.perf_counter()
    if not self.quiet and (now - self.last >= self.every_s or self.done == self.total):
      rate = self.done / (now - self.start)
      eta = (self.total - self.done) / rate
      print(f"[{self.done}/{self.total}] {rate:.2f} images/s, {self.failed} failed, "
            f"ETA {eta:.0f} s", file=sys.stderr, flush=True)
      self.last = now

  def summary(self, compiled: int):
    if self.quiet:
      return
    elapsed = time.perf_counter() - self.start
    scored = self.done - self.failed
    print(f"scored {scored} of {self.total} images ({self.failed} failed) in {elapsed:.1f} s, "
          f"{elapsed / max(self.done, 1):.3f} s/image including {compiled} compilations",
          file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  compilation_cache.enable()
  try:
    predictor = inference.Predictor.from_checkpoint(
        args.checkpoint, dtype=args.dtype, longer_side_lengths=args.longer_side_lengths,
        max_tokens=args.max_tokens)
  except (loader.CheckpointError, ValueError) as e:
    print(f"mst-predict: {e}", file=sys.stderr)
    return 2
  paths, empty_folders = image_io.find_all(args.paths)
  for folder in empty_folders:
    print(json.dumps({"image": folder, "error": f"{folder}: no image files in this folder"}),
          flush=True)
  progress = Progress(len(paths), args.quiet)
  failed = bool(empty_folders)
  for path, result in inference.score_files(predictor, paths, args.batch_size):
    print(json.dumps({"image": path, **result}), flush=True)
    failed |= "error" in result
    progress.update("error" in result)
  progress.summary(len(predictor.compiled_shapes))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
