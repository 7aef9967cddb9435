"""`mst-visualize`: where a MUSIQ model looks in each scale, and what its spatial embedding
learned."""

from __future__ import annotations

import os
import sys
import time
from typing import Sequence

from mst.runtime import compilation_cache
from mst.cli import exits
from mst.cli import flags
from mst.data import image_io
from mst.visualization import figures
from mst.visualization import rollout

HSE_FILENAME = "hse_similarity.png"

DESCRIPTION = f"""\
Draw what a MUSIQ checkpoint attends to. For each image, writes <stem>_attention.png to the output
folder: the attention rollout from the CLS token (heads averaged, multiplied through the layers
with the residual) over the image at each scale, one panel per scale, with the predicted score.
Once per run, writes {HSE_FILENAME}: the cosine similarity of the learned hash-based spatial
embedding between every pair of grid positions (models without HSE have none).
Folders are searched recursively for .jpg .jpeg .png .bmp .webp files. Progress and errors go to
stderr, the written file names to stdout. The exit status is 1 if any image failed, 2 for a bad
checkpoint or option."""

EPILOG = """\
examples:
  mst-visualize --checkpoint koniq_ckpt.npz photo.jpg
  mst-visualize --checkpoint workdir/ --output-dir figures/ photos/"""


def parse_args(argv: Sequence[str] | None):
  parser = flags.Parser("mst-visualize", DESCRIPTION, EPILOG)
  parser.add_argument("paths", nargs="+", metavar="IMAGE", help="image files and folders")
  parser.add_argument("--checkpoint", required=True, metavar="PATH",
                      help="an official MUSIQ .npz file or an mst-train workdir (as mst-predict)")
  parser.add_argument("--output-dir", default=".", metavar="DIR",
                      help="where the PNG files go (created if missing; default: here)")
  parser.add_argument("--longer-side-lengths", type=flags.int_list, default=None, metavar="L1,L2",
                      help="longer sides of the resized scales (default: as mst-predict)")
  parser.add_argument("--max-tokens", type=flags.positive_int, default=rollout.DEFAULT_MAX_TOKENS,
                      help="refuse images that make more tokens than this (the rollout holds "
                           "layers x tokens^2 floats; default %(default)s)")
  parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
  return parser.parse_args(argv)


def _output_name(path: str, taken: set[str]) -> str:
  """<stem>_attention.png, with _2, _3 ... for a stem already used in this run."""
  stem = os.path.splitext(os.path.basename(path))[0]
  name, count = f"{stem}_attention.png", 1
  while name in taken:
    count += 1
    name = f"{stem}_{count}_attention.png"
  taken.add(name)
  return name


def _draw_hse(visualizer: rollout.Visualizer, output_dir: str, log) -> None:
  table = figures.hse_table(visualizer.params)
  if table is None:
    log(f"no {HSE_FILENAME}: the model has no hash-based spatial embedding")
    return
  out = os.path.join(output_dir, HSE_FILENAME)
  figures.draw_hse(figures.hse_similarity(table, visualizer.model_config.grid_size), out)
  print(out, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
  return exits.run("mst-visualize", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
  args = parse_args(argv)
  compilation_cache.enable()

  def log(message: str) -> None:
    if not args.quiet:
      print(message, file=sys.stderr, flush=True)

  with exits.exit_status(exits.USAGE, ValueError, OSError):
    visualizer = rollout.Visualizer.from_checkpoint(
        args.checkpoint, longer_side_lengths=args.longer_side_lengths, max_tokens=args.max_tokens)
    os.makedirs(args.output_dir, exist_ok=True)
  _draw_hse(visualizer, args.output_dir, log)
  paths, empty_folders = image_io.find_all(args.paths)
  for folder in empty_folders:
    print(f"mst-visualize: {folder}: no image files in this folder", file=sys.stderr)
  failed = bool(empty_folders)
  taken: set[str] = set()
  for index, path in enumerate(paths, 1):
    start = time.perf_counter()
    try:
      maps, logits = visualizer.attention_maps(visualizer.read_image(path), path)
    except image_io.ImageError as e:
      print(f"mst-visualize: {e}", file=sys.stderr, flush=True)
      failed = True
      continue
    prediction = visualizer.describe(logits)
    out = os.path.join(args.output_dir, _output_name(path, taken))
    figures.draw_attention(maps, visualizer.pp_config.patch_size,
                           f"{os.path.basename(path)}: {prediction}", out)
    print(out, flush=True)
    log(f"[{index}/{len(paths)}] {path}: {prediction} -> {out} "
        f"({time.perf_counter() - start:.1f} s)")
  return exits.FAILED if failed else exits.OK


if __name__ == "__main__":
  sys.exit(main())
