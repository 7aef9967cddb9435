"""A checkpoint as a TensorFlow SavedModel that serves like TF Hub's MUSIQ models.

The SavedModel holds the whole path from encoded image bytes to a score: TF's decoder, mst's
multi-scale preprocessing (`mst.data.preprocess`, already TF ops), padding to mst-predict's
sequence-length bucket, and the Flax model exported once with a symbolic batch size and sequence
length (one program serves every image size: nothing is retraced), as StableHLO at a version the
supported TensorFlow reads (`xla_call`). It loads with `tf.saved_model.load` or TF Serving, in a
process without JAX or mst.

Signatures, as TF Hub's `google/musiq/*`:
  serving_default(image_bytes_tensor: string []) -> {"output_0": float32 []}
  score_batch(image_bytes_tensor: string [B])    -> {"output_0": float32 [B]}
Distribution heads (AVA) add "distribution" ([C], [B, C]).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
import tensorflow as tf

from mst.checkpoints import loader
from mst.checkpoints import paths
from mst.data import multiscale
from mst.data import preprocess
from mst.scoring import inference
from mst.scoring import xla_call
from mst.models import musiq

INPUT_NAME = "image_bytes_tensor"  # the argument name TF Hub's MUSIQ signatures use
BATCH_SIGNATURE = "score_batch"
# The XLA platforms the model is lowered for; TF picks the one it runs on when serving.
PLATFORMS = ("cpu", "cuda", "tpu")
_SEQUENCE_SPEC = {"patches": "(b, n, _)", "spatial_idx": "(b, n)", "scale_idx": "(b, n)",
                  "mask": "(b, n)"}


def bucket_length(num_tokens: tf.Tensor) -> tf.Tensor:
  """`multiscale.bucket_length` as TF ops on an int32 scalar (4 steps per octave, CLS included)."""
  positions = num_tokens + 1
  powers = tf.constant([1 << k for k in range(31)], tf.int32)
  bits = tf.reduce_sum(tf.cast(powers <= positions, tf.int32))  # int.bit_length()
  step = tf.bitwise.left_shift(1, tf.maximum(bits - 3, 0))
  rounded = (positions + step - 1) // step * step - 1
  return tf.where(num_tokens <= multiscale.MIN_BUCKET, multiscale.MIN_BUCKET, rounded)


def pad_tokens(features: preprocess.Features, length: tf.Tensor) -> preprocess.Features:
  """Pads a [..., N, ...] token sequence (axis -2 for patches, -1 otherwise) to `length`."""
  def pad(key, value):
    axis = value.shape.rank - (2 if key == "patches" else 1)
    padding = [[0, 0]] * value.shape.rank
    padding[axis] = [0, length - tf.shape(value)[axis]]
    return tf.pad(value, padding)
  return {key: pad(key, value) for key, value in features.items()}


def image_features(data: tf.Tensor, pp_config: multiscale.MultiScaleConfig
                   ) -> preprocess.Features:
  """Encoded bytes -> mst's model input, unpadded (decoded as `image_io.read_image` decodes)."""
  image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
  return preprocess.multiscale_patches(image, pp_config)


def _example_batch(pp_config: multiscale.MultiScaleConfig) -> dict[str, np.ndarray]:
  """One token of one image: the dtypes and ranks `_SEQUENCE_SPEC` makes symbolic."""
  width = pp_config.patch_size ** 2 * 3
  return {"patches": np.zeros((1, 1, width), np.float32),
          "spatial_idx": np.zeros((1, 1), np.int32), "scale_idx": np.zeros((1, 1), np.int32),
          "mask": np.ones((1, 1), bool)}


class MusiqModule(tf.Module):
  """The parameters as variables and the two serving functions."""

  def __init__(self, loaded: loader.Loaded, platforms: tuple[str, ...] = PLATFORMS):
    super().__init__()
    head = loaded.model_config.head
    if head == "classification":
      raise ValueError("this checkpoint has a classification head (a pre-training checkpoint?): "
                       "mst-export exports quality models, whose heads give a score")
    # Plain XLA ops, not the CPU-only chunked loops, whose block counts depend on the length.
    model = musiq.Musiq(dataclasses.replace(loaded.model_config, chunked_on_cpu=False))
    forward = lambda params, batch: inference.outputs(
        model.apply({"params": params}, batch), head, loaded.mos_scale)
    params = jax.device_get(loaded.params)
    self._forward = xla_call.XlaCall(forward, (params, _example_batch(loaded.pp_config)),
                                     [None, _SEQUENCE_SPEC], platforms)
    self._params = tf.nest.map_structure(tf.Variable, params)
    self._pp_config = loaded.pp_config
    self._head = head

  def _results(self, out: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    results = {"output_0": out["score"]}
    if self._head == "distribution":
      results["distribution"] = out["distribution"]
    return results

  @tf.function(input_signature=[tf.TensorSpec([], tf.string, name=INPUT_NAME)],
               autograph=False)
  def score(self, image_bytes_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
    """One encoded image (JPEG, PNG, BMP, GIF; any size) -> its score."""
    features = image_features(image_bytes_tensor, self._pp_config)
    features = pad_tokens(features, bucket_length(tf.shape(features["mask"])[0]))
    out = self._forward(self._params, {key: value[None] for key, value in features.items()})
    return {key: value[0] for key, value in self._results(out).items()}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)],
               autograph=False)
  def score_batch(self, image_bytes_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
    """A batch of encoded images of any sizes -> their scores, padded to a common length."""
    width = self._pp_config.patch_size ** 2 * 3
    signature = {
        "patches": tf.RaggedTensorSpec([None, width], tf.float32, ragged_rank=0),
        "spatial_idx": tf.RaggedTensorSpec([None], tf.int32, ragged_rank=0),
        "scale_idx": tf.RaggedTensorSpec([None], tf.int32, ragged_rank=0),
        "mask": tf.RaggedTensorSpec([None], tf.bool, ragged_rank=0),
    }
    ragged = tf.map_fn(lambda data: image_features(data, self._pp_config), image_bytes_tensor,
                       fn_output_signature=signature)
    features = {key: value.to_tensor() for key, value in ragged.items()}
    features = pad_tokens(features, bucket_length(tf.shape(features["mask"])[1]))
    return self._results(self._forward(self._params, features))


def export_saved_model(checkpoint: str, output_dir: str, dtype: str = "float32",
                       longer_side_lengths: tuple[int, ...] | None = None,
                       platforms: tuple[str, ...] = PLATFORMS, overwrite: bool = False) -> str:
  """Writes the SavedModel of `checkpoint` (an official `.npz` or a workdir) to `output_dir`.

  The model is written beside `output_dir` first and moved into place when complete.
  `output_dir` may be a URL (gs://bucket/models/koniq/1, where a serving platform reads it).

  Raises:
    loader.CheckpointError: the checkpoint cannot be read.
    FileExistsError: `output_dir` exists and `overwrite` is False.
    ValueError: a classification head, or scales that do not fit the model.
  """
  if not paths.is_url(output_dir):
    output_dir = os.path.abspath(os.path.expanduser(output_dir))
  gfile = tf.io.gfile
  if gfile.exists(output_dir) and not overwrite:
    raise FileExistsError(f"{output_dir} exists; pass overwrite (--overwrite) to replace it")
  loaded = loader.load_for_inference(checkpoint, dtype=dtype,
                                     longer_side_lengths=longer_side_lengths)
  inference.check_compatible(loaded.model_config, loaded.pp_config)
  module = MusiqModule(loaded, platforms)
  partial = output_dir + ".partial"
  if gfile.exists(partial):  # left by an export that was killed
    gfile.rmtree(partial)
  tf.saved_model.save(module, partial, signatures={
      "serving_default": module.score, BATCH_SIGNATURE: module.score_batch})
  if gfile.exists(output_dir):
    gfile.rmtree(output_dir)
  gfile.rename(partial, output_dir)
  return output_dir
