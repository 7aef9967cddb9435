"""The prepared input pipeline: a split's deterministic preprocessing done once and stored, so
training reads pixels instead of decoding and resizing every image every epoch.

With a flip as the only image augmentation (the paper's fine-tuning), everything before the flip
is the same every epoch: the decode, the normalisation and the Gaussian resizes. `prepare` runs
them once per (dataset, split, preprocessing) and stores, for every example of the split, one
file under `<prepared_dir>/<dataset>/<split>-<key>/`:
  - the native image as uint8, only the rows whose patches the first l tokens (raster order) use;
  - each resized copy (ascending L_k) twice, as float16: resized from the image and from its
    mirror image. The Gaussian resize does not commute with a flip (its taps and sums are not
    mirror-symmetric in float32: up to 1.6e-2 apart for 1024x768 -> 224), so the flipped copy is
    made the way the decoding pipeline makes it, from the flipped image;
  - the tokens' `spatial_idx`, `scale_idx` (int32) and `mask` (uint8), which a flip leaves alone.
Arrays are raw little-endian bytes, one after the other. `index.npz` holds every example's sizes
and labels; `manifest.json`, written last, marks a complete folder. The key hashes what the stored
arrays depend on (the tfds dataset and its folder, the split, P, G, l and the L_k), so every run,
seed and ablation row that shares them reuses one folder, and a changed one gets its own. Files go
through tf.io.gfile: gs:// works.

At training time `pipeline.train_dataset` shuffles example indices exactly as it shuffles encoded
examples (tf.data's shuffle order depends only on the seed, the buffer and the count), reads each
example's file, mirrors it when today's flip draw says so, cuts patches and batches them as
float16: half the bytes of float32 to copy into batches and onto the devices, where
mst.training.data widens them. The batches equal the decoding pipeline's: positions, scale ids,
masks and labels exactly, pixels to float16 rounding (at most 2^-12 on the [-1, 1] scale, 1/32 of
a grey level).
"""

import dataclasses
import hashlib
import io
import json
import os

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mst.data import augmentation
from mst.data import multiscale
from mst.data import pipeline
from mst.data import preprocess

FORMAT = 1  # bump when what a file holds changes: older folders are then not reused
MANIFEST, INDEX = "manifest.json", "index.npz"
# Stored after the pixels, as int32, int32 and uint8: one flat table per example is read faster
# than computed (it is a third of the work of the small images of AVA).
POSITIONS = ("spatial_idx", "scale_idx", "mask")
Features = dict[str, tf.Tensor]


def folder_of(builder: tfds.core.DatasetBuilder, split: str, pp: multiscale.MultiScaleConfig,
              root: str) -> str:
  """Where the prepared split lives: one folder per (dataset, split, what the pixels depend on)."""
  key = {"format": FORMAT, "dataset": builder.info.full_name, "data_dir": str(builder.data_dir),
         "split": split, "patch_size": pp.patch_size, "grid_size": pp.grid_size,
         "native_tokens": pp.max_seq_len_from_original_res,
         "longer_side_lengths": list(pp.longer_side_lengths)}
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  safe_split = "".join(c if c.isalnum() or c in "-_" else "_" for c in split)
  return os.path.join(root, builder.info.full_name.replace("/", "_"), f"{safe_split}-{digest}")


def _native_rows(height: tf.Tensor, width: tf.Tensor, pp: multiscale.MultiScaleConfig
                 ) -> tf.Tensor:
  """Rows of the native image inside the patches of its first l tokens (raster order)."""
  p, native = pp.patch_size, pp.max_seq_len_from_original_res
  count_h, count_w = (height + p - 1) // p, (width + p - 1) // p
  top = (count_h * p - height) // 2
  patch_rows = tf.minimum(count_h, (native + count_w - 1) // count_w)
  return tf.clip_by_value(patch_rows * p - top, 0, height)


def _stored(example: Features, pp: multiscale.MultiScaleConfig) -> Features:
  """One example's arrays as stored: sizes, the native rows, the resized copies both ways."""
  image = pipeline.decode(example["image"])
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  rows = _native_rows(height, width, pp)
  out = {"native": image[:rows], "size": tf.stack([height, width, rows])}
  plain = preprocess.normalize(image)
  mirrored = preprocess.normalize(tf.reverse(image, axis=[1]))
  positions = []
  for k, (length, m_k) in enumerate(zip(pp.longer_side_lengths, pp.scaled_lengths)):
    out[f"scale_{k}"] = tf.cast(preprocess.resize_longer_side(plain, length), tf.float16)
    out[f"mirrored_{k}"] = tf.cast(preprocess.resize_longer_side(mirrored, length), tf.float16)
    rh, rw = preprocess.resized_size(height, width, length)
    positions.append(_positions(rh, rw, rh, k, m_k, pp))
  if pp.max_seq_len_from_original_res:
    positions.append(_positions(height, width, rows, len(positions),
                                pp.max_seq_len_from_original_res, pp))
  for key in POSITIONS:
    out[key] = tf.concat([part[key] for part in positions], axis=0)
  return {**out, **pipeline.labels_of(example)}


@dataclasses.dataclass(frozen=True)
class PreparedSplit:
  """A prepared split: its folder, the preprocessing it was made for, every example's (height,
  width, stored native rows) and labels (as `pipeline.labels_of` gives them)."""
  folder: str
  pp: multiscale.MultiScaleConfig
  sizes: np.ndarray  # [n, 3] int32
  labels: dict[str, np.ndarray]

  def host_part(self, builder: tfds.core.DatasetBuilder, split: str,
                host: pipeline.Host) -> tf.data.Dataset:
    """The indices of the host's even share of the split (`pipeline.read_split`'s examples)."""
    start = sum(pipeline.num_examples(builder, split, pipeline.Host(i, host.count))
                for i in range(host.index))
    return tf.data.Dataset.range(start, start + pipeline.num_examples(builder, split, host))

  def features(self, index: tf.Tensor, augment: augmentation.Augment, seed: tf.Tensor
               ) -> Features:
    """What the decoding pipeline makes of example `index` with the example seed `seed`, but
    with float16 `patches`: half the bytes to batch and to copy to the devices, which widen them
    (mst.training.data)."""
    data = tf.io.decode_raw(tf.io.read_file(_file(self.folder, index)), tf.uint8)
    height, width, rows = tf.unstack(tf.gather(tf.constant(self.sizes), index))
    native_bytes = rows * width * 3
    # The decoding pipeline's own flip of the native image; whether it flipped tells which
    # stored copy of each resized image is the one it would have made.
    native = tf.reshape(data[:native_bytes], [rows, width, 3])
    native = tf.cast(preprocess.normalize(augmentation.augment_image(native, augment, seed)),
                     tf.float16)
    flipped = augmentation.augment_image(tf.constant([[[0], [1]]]), augment, seed)[0, 0, 0] > 0
    p, blocks, offset = self.pp.patch_size, [], native_bytes
    for length, m_k in zip(self.pp.longer_side_lengths, self.pp.scaled_lengths):
      rh, rw = preprocess.resized_size(height, width, length)
      size = rh * rw * 3 * 2
      start = offset + tf.where(flipped, size, 0)
      pixels = tf.bitcast(tf.reshape(data[start:start + size], [-1, 2]), tf.float16)
      blocks += _patches(tf.reshape(pixels, [rh, rw, 3]), rh, m_k, p)
      offset += 2 * size
    if self.pp.max_seq_len_from_original_res:
      blocks += _patches(native, height, self.pp.max_seq_len_from_original_res, p)
    # One concat of the scales' patches and padding: every byte of the example written once.
    total = sum(self.pp.scaled_lengths) + self.pp.max_seq_len_from_original_res
    tokens = {"patches": tf.ensure_shape(tf.concat(blocks, 0), [total, p * p * 3])}
    for key, width_in_bytes in zip(POSITIONS, (4, 4, 1)):
      values = tf.reshape(data[offset:offset + total * width_in_bytes], [total, width_in_bytes])
      tokens[key] = tf.bitcast(values, tf.int32) if width_in_bytes == 4 else values[:, 0] > 0
      offset += total * width_in_bytes
    return {**tokens, **{key: tf.gather(tf.constant(value), index)
                         for key, value in self.labels.items()}}


def _file(folder: str, index) -> tf.Tensor:
  return tf.strings.join([folder, "/", tf.strings.as_string(index, width=8, fill="0"), ".bin"])


def _grid(height: tf.Tensor, width: tf.Tensor, rows: tf.Tensor, p: int):
  """(count_h, count_w, top, left, patch_rows) of an image `height` x `width` cut into P x P
  patches with TF 'SAME' padding (top/left get half of it, rounded down), of which the patch rows
  that cover its top `rows` rows are used."""
  count_h, count_w = (height + p - 1) // p, (width + p - 1) // p
  top, left = (count_h * p - height) // 2, (count_w * p - width) // 2
  return count_h, count_w, top, left, (top + rows + p - 1) // p


def _patches(image: tf.Tensor, height: tf.Tensor, length: int, p: int) -> list[tf.Tensor]:
  """The first `length` patches (`preprocess.extract_patches`' layout) of an image `height` rows
  high from its top rows `image`: the real ones, then the zero ones that pad them to `length`."""
  rows, width = tf.shape(image)[0], tf.shape(image)[1]
  _, count_w, top, left, patch_rows = _grid(height, width, rows, p)
  padded = tf.pad(image, [[top, patch_rows * p - top - rows],
                          [left, count_w * p - left - width], [0, 0]])
  patches = tf.transpose(tf.reshape(padded, [patch_rows, p, count_w, p, 3]), [0, 2, 1, 3, 4])
  n = tf.minimum(patch_rows * count_w, length)
  patches = tf.reshape(patches, [-1, p * p * 3])[:n]
  return [patches, tf.zeros([length - n, p * p * 3], image.dtype)]


def _positions(height: tf.Tensor, width: tf.Tensor, rows: tf.Tensor, scale_id: int, length: int,
               pp: multiscale.MultiScaleConfig) -> Features:
  """`spatial_idx`, `scale_idx` and `mask` of the tokens `_patches` makes, padded to `length`."""
  count_h, count_w, _, _, patch_rows = _grid(height, width, rows, pp.patch_size)
  n = tf.minimum(patch_rows * count_w, length)
  tokens = {"spatial_idx": preprocess.hash_spatial_index(count_h, count_w, pp.grid_size)[:n],
            "scale_idx": tf.fill([n], tf.constant(scale_id, tf.int32)),
            "mask": tf.ones([n], tf.bool)}
  return {key: tf.pad(value, [[0, length - n]]) for key, value in tokens.items()}


def prepare(builder: tfds.core.DatasetBuilder, split: str, pp: multiscale.MultiScaleConfig,
            root: str) -> PreparedSplit:
  """The prepared `split` under `root`, made now unless a complete folder for it exists.

  Processes preparing the same folder at once write identical files (each file is written to a
  temporary name and renamed), so the folder ends complete either way.
  """
  if pp.max_seq_len_from_original_res < 0:
    raise ValueError("a prepared split is for training at a fixed native length: set "
                     "max_seq_len_from_original_res (l) >= 0, not "
                     f"{pp.max_seq_len_from_original_res}")
  folder = folder_of(builder, split, pp, os.path.expanduser(root))
  if tf.io.gfile.exists(os.path.join(folder, MANIFEST)):
    logging.info("Reading the prepared %s split from %s", split, folder)
  else:
    logging.info("Preparing the %s split of %s in %s, once for every run with this "
                 "preprocessing", split, builder.info.full_name, folder)
    _write(builder, split, pp, folder)
  return load(folder, pp)


def load(folder: str, pp: multiscale.MultiScaleConfig) -> PreparedSplit:
  """The prepared split in `folder` (made for `pp`): its sizes and labels; pixels stay on disk."""
  with tf.io.gfile.GFile(os.path.join(folder, INDEX), "rb") as f:
    index = dict(np.load(io.BytesIO(f.read())))
  sizes = index.pop("size")
  return PreparedSplit(folder, pp, sizes, index)


def _write(builder: tfds.core.DatasetBuilder, split: str, pp: multiscale.MultiScaleConfig,
           folder: str) -> None:
  """Decodes and resizes every example of `split` (in parallel, in split order) and writes one
  file per example, then the index and, last, the manifest."""
  tf.io.gfile.makedirs(folder)
  options = tf.data.Options()
  options.deterministic = True
  examples = pipeline.read_split(builder, split, pipeline.Host()).map(
      lambda e: _stored(e, pp), num_parallel_calls=tf.data.AUTOTUNE).with_options(options)
  sizes, labels = [], {}
  for index, example in enumerate(examples.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()):
    arrays = [example["native"]]
    for k in range(len(pp.longer_side_lengths)):
      arrays += [example[f"scale_{k}"], example[f"mirrored_{k}"]]
    arrays += [example[key] for key in POSITIONS]
    path = _file(folder, index).numpy().decode()
    _write_atomically(path, b"".join(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"))
                                     .tobytes() for a in arrays))
    sizes.append(example["size"])
    for key in pipeline.LABELS:
      if key in example:
        labels.setdefault(key, []).append(example[key])
  buffer = io.BytesIO()
  np.savez(buffer, size=np.array(sizes, np.int32).reshape(-1, 3),
           **{key: np.stack(value) for key, value in labels.items()})
  _write_atomically(os.path.join(folder, INDEX), buffer.getvalue())
  manifest = {"format": FORMAT, "dataset": builder.info.full_name, "split": split,
              "examples": len(sizes), "preprocess": dataclasses.asdict(pp)}
  _write_atomically(os.path.join(folder, MANIFEST), json.dumps(manifest, indent=1).encode())


def _write_atomically(path: str, data: bytes) -> None:
  temporary = f"{path}.tmp-{os.getpid()}"
  with tf.io.gfile.GFile(temporary, "wb") as f:
    f.write(data)
  tf.io.gfile.rename(temporary, path, overwrite=True)
