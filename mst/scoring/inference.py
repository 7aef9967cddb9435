"""Scoring images with a loaded checkpoint: what `mst-predict`, `mst-eval` and `mst-visualize`
share.

Owns the single-image model input (all native patches plus the checkpoint's resized scales,
padded to a sequence-length bucket: a few buckets per octave, so a folder of many sizes compiles a
handful of times, not once per image), the check that preprocessing fits the model, and the step
from logits to a result (`outputs`: a score, a distribution, or a class). `Predictor` scores
files; `score_files` batches them per bucket while the next images are decoded in threads.
"""

import collections
import concurrent.futures
import dataclasses
import sys
import threading
from typing import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from mst.checkpoints import loader
from mst.data import image_io
from mst.data import host_preprocess
from mst.data import multiscale
from mst.models import musiq
from mst.runtime import traced_cache

# The code a stored trace of the forward depends on: the network's and this module's.
SOURCES = musiq.SOURCES + (sys.modules[__name__],)
DEFAULT_MAX_TOKENS = 16384  # about 16 megapixels at P = 32; docs/scoring.md, "Speed and memory"


def outputs(logits: jax.Array, head: str, mos_scale: float = 1.0) -> dict[str, jax.Array]:
  """What a head's logits [B, C] mean, per example; jittable.

  score head: `score` [B]; distribution head: `score` (the expected bin, 1..C) and
  `distribution` [B, C]; both scores times `mos_scale` (a workdir's model predicts MOS divided
  by its dataset's `mos_scale`). classification head: `class` [B] and its `probability` [B].
  """
  if head == "classification":
    probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return {"class": jnp.argmax(logits, axis=-1), "probability": jnp.max(probabilities, axis=-1)}
  out = {"score": musiq.scores(logits, head) * mos_scale}
  if head == "distribution":
    out["distribution"] = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  return out


def as_result(row: dict[str, np.ndarray]) -> dict:
  """One example of `outputs` as JSON-ready Python values (mst-predict's keys)."""
  result = {}
  for key, value in row.items():
    value = np.asarray(value)
    result[key] = value.tolist() if value.ndim else value.item()
  return result


@dataclasses.dataclass
class Prepared:
  """One image, preprocessed, or the error that stopped it."""
  path: str
  features: dict[str, np.ndarray] | None = None
  error: str | None = None


class Predictor:
  """Scores preprocessed images with fixed params; compiles once per (bucket, batch size)."""

  def __init__(self, params, model_config: musiq.ModelConfig,
               pp_config: multiscale.MultiScaleConfig, max_tokens: int = DEFAULT_MAX_TOKENS,
               mos_scale: float = 1.0):
    check_compatible(model_config, pp_config)
    self.model_config = model_config
    self.pp_config = pp_config
    self.max_tokens = max_tokens
    self.params = jax.device_put(params)
    model = musiq.Musiq(model_config)
    self._forward = jax.jit(lambda p, batch: outputs(
        model.apply({"params": p}, batch), model_config.head, mos_scale))
    self._identity = (model_config, mos_scale)
    self._programs = {}  # (batch, length) -> the forward compiled at that shape
    self._compiling = threading.Lock()  # batches may run in threads: each shape compiles once

  @property
  def compiled_shapes(self) -> set[tuple[int, int]]:
    """The (batch, length) shapes compiled so far."""
    return set(self._programs)

  @classmethod
  def from_checkpoint(cls, path: str, dtype: str = "float32",
                      longer_side_lengths: tuple[int, ...] | None = None,
                      max_tokens: int = DEFAULT_MAX_TOKENS) -> "Predictor":
    """An official `.npz` file or an mst-train workdir, ready to score.

    Raises:
      loader.CheckpointError: the checkpoint cannot be read.
      ValueError: `longer_side_lengths` do not fit the model.
    """
    loaded = loader.load_for_inference(path, dtype=dtype, longer_side_lengths=longer_side_lengths)
    return cls(loaded.params, loaded.model_config, loaded.pp_config, max_tokens=max_tokens,
               mos_scale=loaded.mos_scale)

  def prepare(self, path: str) -> Prepared:
    """Reads and preprocesses one file; never raises for a bad image."""
    try:
      image = read_checked(path, self.pp_config, self.max_tokens)
      return Prepared(path, bucketed_features(image, self.pp_config, self.max_tokens, path))
    except image_io.ImageError as e:
      return Prepared(path, error=str(e))

  def predict(self, features: list[dict[str, np.ndarray]]) -> list[dict]:
    """Results for images of one bucket length: score (and distribution), or class."""
    batch = {key: np.stack([f[key] for f in features]) for key in features[0]}
    batch = _pad_batch(batch, _batch_bucket(len(features)))
    out = jax.device_get(self._program(batch)(self.params, batch))
    return [as_result({key: value[i] for key, value in out.items()})
            for i in range(len(features))]

  def _program(self, batch: dict[str, np.ndarray]):
    """The forward compiled for `batch`'s shape; a second start reads the traced model from the
    cache and the compiled one from the compilation cache."""
    shape = batch["patches"].shape[:2]
    with self._compiling:
      if shape not in self._programs:
        traced = traced_cache.jit_cached(self._forward, SOURCES, self._identity, self.params,
                                          batch)
        self._programs[shape] = traced.lower(self.params, batch).compile()
      return self._programs[shape]


def bucketed_features(image: np.ndarray, pp_config: multiscale.MultiScaleConfig,
                      max_tokens: int, name: str) -> dict[str, np.ndarray]:
  """The model input of one decoded image, padded to its sequence-length bucket.

  Raises:
    image_io.ImageError: the image makes more than `max_tokens` tokens (named `name`).
  """
  tokens = check_tokens(*image.shape[:2], pp_config, max_tokens, name)
  features = host_preprocess.multiscale_patches(image, pp_config)
  return host_preprocess.pad_to_length(features, multiscale.bucket_length(tokens))


def read_checked(path: str, pp_config: multiscale.MultiScaleConfig, max_tokens: int
                 ) -> np.ndarray:
  """`image_io.read_image` of `path`, refused (ImageError) from its header's size, before any
  pixel is decoded, when it makes more than `max_tokens` tokens."""
  return image_io.read_image(path, lambda height, width: check_tokens(
      height, width, pp_config, max_tokens, path))


def check_tokens(height: int, width: int, pp_config: multiscale.MultiScaleConfig,
                 max_tokens: int, name: str) -> int:
  """The token count of a height x width image; ImageError naming `name` above `max_tokens`."""
  tokens = pp_config.seq_len(height, width)
  if tokens > max_tokens:
    raise image_io.ImageError(
        f"{name}: {width}x{height} makes {tokens} tokens, more than --max-tokens {max_tokens}; "
        "raise it if you have the memory, or downscale the image")
  return tokens


def check_compatible(model_config: musiq.ModelConfig, pp_config: multiscale.MultiScaleConfig):
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


def concurrent_batches_default() -> int:
  """Batches in flight at once: 2 on CPU, where XLA runs each convolution on one core, so a second
  forward keeps the other cores busy (on 2 cores, 1.15-1.4x the images/s in 4 runs of
  experiments/benchmark.py); 1 on GPU and TPU, which run one program at a time anyway."""
  return 2 if jax.default_backend() == "cpu" else 1


def score_files(predictor: Predictor, paths: Iterable[str], batch_size: int,
                workers: int = 2, concurrent_batches: int | None = None
                ) -> Iterator[tuple[str, dict]]:
  """Yields (path, result) in input order; result has `error` for images that failed.

  Images are batched per sequence-length bucket; a bucket's batch runs when full, or early when
  its oldest image is more than `16 * batch_size` images behind the newest, and all partial
  batches run at the end. `paths` is read lazily, so it may be a generator over millions of files:
  memory holds only the images in flight, the batches filling and the results waiting for their
  turn, all bounded. Preprocessing runs `workers` images ahead in threads, overlapping the model
  (on a 2-core CPU neither this nor preprocessing in line was measurably faster:
  experiments/benchmark.py shows both). Up to `concurrent_batches` batches (default
  `concurrent_batches_default()`) run at once, each holding its own activations.
  """
  calls = concurrent_batches or concurrent_batches_default()
  pending = collections.defaultdict(list)  # bucket length -> [(index, Prepared)]
  running = collections.deque()  # (indices, prepared, future of their results), oldest first
  done: dict[int, tuple[str, dict]] = {}
  next_out = 0
  max_lag = 16 * batch_size

  def run(bucket, model_pool):
    if len(running) >= calls:
      collect(wait=True)
    indices, prepared = zip(*pending.pop(bucket))
    future = model_pool.submit(predictor.predict, [p.features for p in prepared])
    running.append((indices, prepared, future))

  def collect(wait):
    """Moves finished batches' results to `done`: the oldest batch waited for, if `wait`."""
    while running and (wait or running[0][2].done()):
      indices, prepared, future = running.popleft()
      done.update((i, (p.path, r)) for i, p, r in zip(indices, prepared, future.result()))
      wait = False

  def ready():
    nonlocal next_out
    collect(wait=False)
    while next_out in done:
      yield done.pop(next_out)
      next_out += 1

  def oldest_bucket():
    return min(pending, key=lambda b: pending[b][0][0])

  with (concurrent.futures.ThreadPoolExecutor(max(workers, 1)) as pool,
        concurrent.futures.ThreadPoolExecutor(calls) as model_pool):
    prepared_files = (_ordered_map(pool, predictor.prepare, paths, workers * 2) if workers
                      else map(predictor.prepare, paths))
    for index, prepared in enumerate(prepared_files):
      if prepared.error:
        done[index] = (prepared.path, {"error": prepared.error})
      else:
        bucket = prepared.features["patches"].shape[0]
        pending[bucket].append((index, prepared))
        if len(pending[bucket]) >= batch_size:
          run(bucket, model_pool)
      if pending and index - pending[oldest_bucket()][0][0] >= max_lag:
        run(oldest_bucket(), model_pool)
      yield from ready()
    while pending:
      run(oldest_bucket(), model_pool)
      yield from ready()
    while running:
      collect(wait=True)
      yield from ready()


def _ordered_map(pool, fn, items, lookahead):
  """pool.map with at most `lookahead` items in flight (bounded memory for huge folders)."""
  futures = collections.deque()
  for item in items:
    futures.append(pool.submit(fn, item))
    if len(futures) > lookahead:
      yield futures.popleft().result()
  while futures:
    yield futures.popleft().result()
