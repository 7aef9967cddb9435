"""`mst-predict`: score image files and folders with a MUSIQ checkpoint, one JSON line per image.

Images are scored at native resolution with all patches (plus the checkpoint's resized scales).
Sequence lengths are rounded up to a few buckets per octave, so a folder of many sizes compiles a
handful of times, not once per image. Decoding and preprocessing of the next images overlap the
model's work on the current batch.
"""

import argparse
import collections
import concurrent.futures
import dataclasses
import json
import os
import sys
import time
from typing import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from mst import checkpoint
from mst import image_io
from mst import preprocess
from mst.models import musiq

DEFAULT_MAX_TOKENS = 16384  # about 16 megapixels at P = 32; see README for the memory it needs


@dataclasses.dataclass
class Prepared:
  """One image, preprocessed, or the error that stopped it."""
  path: str
  features: dict[str, np.ndarray] | None = None
  error: str | None = None


class Predictor:
  """Scores preprocessed images with fixed params; compiles once per (bucket, batch size)."""

  def __init__(self, params, model_config: musiq.ModelConfig,
               pp_config: preprocess.MultiScaleConfig, max_tokens: int = DEFAULT_MAX_TOKENS,
               score_scale: float = 1.0):
    check_compatible(model_config, pp_config)
    self.model_config = model_config
    self.pp_config = pp_config
    self.max_tokens = max_tokens
    self.score_scale = score_scale  # a trained workdir's model predicts MOS / mos_scale
    self.params = jax.device_put(params)
    self.compiled_shapes = set()
    model = musiq.Musiq(model_config)
    self._forward = jax.jit(lambda p, batch: model.apply({"params": p}, batch))

  def prepare(self, path: str) -> Prepared:
    """Reads and preprocesses one file; never raises for a bad image."""
    try:
      image = image_io.read_image(path)
      return Prepared(path, bucketed_features(image, self.pp_config, self.max_tokens, path))
    except image_io.ImageError as e:
      return Prepared(path, error=str(e))

  def predict(self, features: list[dict[str, np.ndarray]]) -> list[dict]:
    """Results for images of one bucket length: score (and distribution, or class)."""
    batch = {key: np.stack([f[key] for f in features]) for key in features[0]}
    batch = _pad_batch(batch, _batch_bucket(len(features)))
    self.compiled_shapes.add(batch["patches"].shape[:2])
    logits = np.asarray(self._forward(self.params, batch))[:len(features)]
    return [self._result(row) for row in logits]

  def _result(self, logits: np.ndarray) -> dict:
    head = self.model_config.head
    if head == "classification":
      probabilities = jax.nn.softmax(logits)
      return {"class": int(np.argmax(logits)), "probability": float(np.max(probabilities))}
    score = float(musiq.scores(jnp.asarray(logits[None]), head)[0]) * self.score_scale
    result = {"score": score}
    if head == "distribution":
      result["distribution"] = [float(p) for p in jax.nn.softmax(logits)]
    return result


def bucketed_features(image: np.ndarray, pp_config: preprocess.MultiScaleConfig,
                      max_tokens: int, name: str) -> dict[str, np.ndarray]:
  """The model input of one decoded image, padded to its sequence-length bucket.

  Raises:
    image_io.ImageError: the image makes more than `max_tokens` tokens (named `name`).
  """
  height, width = image.shape[:2]
  tokens = pp_config.seq_len(height, width)
  if tokens > max_tokens:
    raise image_io.ImageError(
        f"{name}: {width}x{height} makes {tokens} tokens, more than --max-tokens {max_tokens}; "
        "raise it if you have the memory, or downscale the image")
  features = preprocess.multiscale_patches(tf.constant(image), pp_config)
  features = preprocess.pad_to_length(features, preprocess.bucket_length(tokens))
  return {key: value.numpy() for key, value in features.items()}


def check_compatible(model_config: musiq.ModelConfig, pp_config: preprocess.MultiScaleConfig):
  """Fails early, with the fix, where the preprocessing would index past the model's tables."""
  if pp_config.patch_size != model_config.patch_size:
    raise ValueError(f"patches of {pp_config.patch_size} px, but the model takes "
                     f"{model_config.patch_size} px patches")
  if pp_config.grid_size != model_config.grid_size:
    raise ValueError(f"HSE grid {pp_config.grid_size}, but the model's grid is "
                     f"{model_config.grid_size}")
  if model_config.use_scale_embedding and pp_config.num_scales != model_config.num_scales:
    raise ValueError(f"{len(pp_config.longer_side_lengths)} resized scales + native make "
                     f"{pp_config.num_scales} scales, but the model has {model_config.num_scales} "
                     f"scale embeddings")


def _batch_bucket(size: int) -> int:
  """Batch sizes compile as powers of two, so a partial last batch adds few compilations."""
  return 1 << (size - 1).bit_length()


def _pad_batch(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  """Adds all-masked examples up to `size`."""
  extra = size - batch["patches"].shape[0]
  return {key: np.concatenate([value, np.zeros((extra,) + value.shape[1:], value.dtype)])
          for key, value in batch.items()}


def score_files(predictor: Predictor, paths: list[str], batch_size: int,
                workers: int = 2) -> Iterator[tuple[str, dict]]:
  """Yields (path, result) in input order; result has `error` for images that failed.

  Images are batched per sequence-length bucket; a bucket's batch runs when full, and all partial
  batches run at the end. Preprocessing runs `workers` images ahead in threads.
  """
  pending = collections.defaultdict(list)  # bucket length -> [(index, features)]
  done: dict[int, dict] = {}
  next_out = 0

  def run(bucket):
    indices, features = zip(*pending.pop(bucket))
    done.update(zip(indices, predictor.predict(list(features))))

  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for index, prepared in enumerate(_ordered_map(pool, predictor.prepare, paths, workers * 2)):
      if prepared.error:
        done[index] = {"error": prepared.error}
      else:
        bucket = prepared.features["patches"].shape[0]
        pending[bucket].append((index, prepared.features))
        if len(pending[bucket]) >= batch_size:
          run(bucket)
      while next_out in done:
        yield paths[next_out], done.pop(next_out)
        next_out += 1
  while pending:
    run(min(pending, key=lambda b: pending[b][0][0]))  # the batch holding the oldest image first
    while next_out in done:
      yield paths[next_out], done.pop(next_out)
      next_out += 1


def _ordered_map(pool, fn, items, lookahead):
  """pool.map with at most `lookahead` items in flight (bounded memory for huge folders)."""
  futures = collections.deque()
  for item in items:
    futures.append(pool.submit(fn, item))
    if len(futures) > lookahead:
      yield futures.popleft().result()
  while futures:
    yield futures.popleft().result()


# ---------------------------------------------------------------------------------------------
# The command line.

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


def parse_lengths(text: str) -> tuple[int, ...]:
  """"224,384" (or "224 384"; "" for none) -> (224, 384): the --longer-side-lengths syntax."""
  try:
    return tuple(int(x) for x in text.replace(",", " ").split())
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="mst-predict", description=DESCRIPTION, epilog=EPILOG,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("paths", nargs="+", metavar="IMAGE_OR_DIR", help="image files and folders")
  parser.add_argument("--checkpoint", required=True, metavar="PATH",
                      help="an official MUSIQ .npz file (koniq_ckpt.npz, ava_ckpt.npz, ...), whose "
                           "architecture is read from the file, or an mst-train workdir (its best, "
                           "else latest, parameters)")
  parser.add_argument("--batch-size", type=int, default=1,
                      help="images of similar size scored together (default 1; more helps on GPU)")
  parser.add_argument("--longer-side-lengths", type=parse_lengths, default=None, metavar="L1,L2",
                      help="longer sides of the resized scales (default: 224,384 for 3-scale "
                           "checkpoints, none for single-scale ones; '' for none)")
  parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                      help="refuse images that make more tokens than this (memory grows with the "
                           "square of it in attention; default %(default)s)")
  parser.add_argument("--dtype", choices=tuple(musiq.DTYPES), default="float32",
                      help="compute dtype (bfloat16 is faster on GPU/TPU; default float32)")
  parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
  args = parser.parse_args(argv)
  if args.batch_size < 1 or args.max_tokens < 1:
    parser.error("--batch-size and --max-tokens must be positive")
  return args


def load_predictor(args: argparse.Namespace) -> Predictor:
  """The checkpoint named on the command line (an official .npz or a workdir), ready to score."""
  loaded = checkpoint.load_for_inference(args.checkpoint, dtype=args.dtype,
                                         longer_side_lengths=args.longer_side_lengths)
  return Predictor(loaded.params, loaded.model_config, loaded.pp_config,
                   max_tokens=args.max_tokens, score_scale=loaded.score_scale)


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


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    predictor = load_predictor(args)
  except (checkpoint.CheckpointError, ValueError) as e:
    print(f"mst-predict: {e}", file=sys.stderr)
    return 2
  paths, empty_folders = [], []
  for path in args.paths:
    found = image_io.find_images(path)
    paths.extend(found)
    if not found:
      empty_folders.append(path)
  for folder in empty_folders:
    print(json.dumps({"image": folder, "error": f"{folder}: no image files in this folder"}),
          flush=True)
  progress = Progress(len(paths), args.quiet)
  failed = bool(empty_folders)
  for path, result in score_files(predictor, paths, args.batch_size):
    print(json.dumps({"image": path, **result}), flush=True)
    failed |= "error" in result
    progress.update("error" in result)
  progress.summary(len(predictor.compiled_shapes))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
