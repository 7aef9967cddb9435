"""`mst-export --checkpoint PATH --output DIR`: a TF SavedModel that serves like TF Hub's MUSIQ."""

from __future__ import annotations

import sys
from typing import Sequence

from mst.cli import exits
from mst.cli import flags

DESCRIPTION = """\
Export a checkpoint (an official .npz file or an mst-train workdir) as a TensorFlow SavedModel
with mst's preprocessing inside: it takes the encoded bytes of an image (JPEG, PNG, BMP, GIF; any
size) and returns its score, as TF Hub's google/musiq models do, and loads with
tf.saved_model.load or TF Serving, without JAX or mst installed. Signatures:
  serving_default: a scalar string -> {"output_0": score}
  score_batch:     a 1-D string tensor -> {"output_0": scores}
Distribution heads (AVA) also return "distribution"."""

EPILOG = """\
examples:
  mst-export --checkpoint koniq_ckpt.npz --output exported/koniq/1
  mst-export --checkpoint runs/koniq --output exported/mine/1 --platforms cpu"""


def parse_args(argv: Sequence[str] | None):
  parser = flags.Parser("mst-export", DESCRIPTION, EPILOG)
  parser.add_argument("--checkpoint", required=True, metavar="PATH",
                      help="an official MUSIQ .npz file or an mst-train workdir")
  parser.add_argument("--output", required=True, metavar="DIR",
                      help="the SavedModel folder to write (TF Serving wants <name>/<version>)")
  parser.add_argument("--longer-side-lengths", type=flags.int_list, default=None, metavar="L1,L2",
                      help="longer sides of the resized scales (default: as mst-predict)")
  flags.add_dtype(parser)
  parser.add_argument("--platforms", default="cpu,cuda,tpu", metavar="P1,P2",
                      help="XLA platforms to lower the model for (default %(default)s)")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
  flags.add_verbosity(parser)
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  return exits.run("mst-export", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
  args = parse_args(argv)
  flags.setup_logging(args.verbosity)
  from mst.scoring import export  # pylint: disable=g-import-not-at-top

  platforms = tuple(p for p in args.platforms.replace(",", " ").split())
  with exits.exit_status(exits.USAGE, FileExistsError, ValueError):
    path = export.export_saved_model(args.checkpoint, args.output, dtype=args.dtype,
                                     longer_side_lengths=args.longer_side_lengths,
                                     platforms=platforms, overwrite=args.overwrite)
  print(f"SavedModel written to {path} (signatures: serving_default, "
        f"{export.BATCH_SIGNATURE})", flush=True)
  return exits.OK


if __name__ == "__main__":
  sys.exit(main())
