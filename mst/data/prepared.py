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
Arrays are raw little-endian bytes, one after the other. `index.npz` holds every example's sizes,
labels and file hash; `manifest.json`, written last, marks a complete folder and holds the hash of
`index.npz`. The key hashes what the stored arrays depend on (the tfds dataset, its folder and its
files' names, sizes and modification times, the split, P, G, l and the L_k), so every run, seed and
ablation row that shares them reuses one folder, and a changed one, or a dataset rebuilt with
`mst-datasets build X --overwrite`, gets its own. Files go through tf.io.gfile: gs:// works.

Nothing read back is taken on trust: a file whose hash (FarmHash Fingerprint64, the one TF computes
natively at 8 GB/s; checked the first time this process reads the file) or size is not the stored
one, or whose positions are out of range, stops training with an error naming the file and the
folder to delete. One process per machine prepares a folder (a lock file beside it); another that
arrives meanwhile waits for it and reads the finished folder.

At training time `pipeline.train_dataset` shuffles example indices exactly as it shuffles encoded
examples (tf.data's shuffle order depends only on the seed, the buffer and the count), reads each
example's file, mirrors it when today's flip draw says so, cuts patches and batches them as
float16: half the bytes of float32 to copy into batches and onto the devices, where
mst.training.data widens them. The batches equal the decoding pipeline's: positions, scale ids,
masks and labels exactly, pixels to float16 rounding (at most 2^-12 on the [-1, 1] scale, 1/32 of
a grey level).
"""

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import tempfile
import time

from absl import logging
import filelock
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mst import errors
from mst.data import augmentation
from mst.data import multiscale
from mst.data import pipeline
from mst.data import preprocess

FORMAT = 2  # bump when what a file holds changes: older folders are then not reused
MANIFEST, INDEX = "manifest.json", "index.npz"
HASH = "file_hash"  # index.npz's every-file hashes, beside "size" and the labels
_BUCKETS = 2 ** 63 - 1  # tf.strings.to_hash_bucket_fast of this many buckets: 63 bits of the hash
WAIT_LOG_S = 60  # how often a process waiting for another one's preparation says so
# How long the other hosts of a pod wait for process 0's preparation (a large split, such as AVA's
# 230,000 images, takes hours on one host), and how often they look.
HOST_WAIT_S = 24 * 3600
_POLL_S = 2.0
# Stored after the pixels, as int32, int32 and uint8: one flat table per example is read faster
# than computed (it is a third of the work of the small images of AVA).
POSITIONS = ("spatial_idx", "scale_idx", "mask")
Features = dict[str, tf.Tensor]


def folder_of(builder: tfds.core.DatasetBuilder, split: str, pp: multiscale.MultiScaleConfig,
              root: str) -> str:
  """Where the prepared split lives: one folder per (dataset and its files, split, what the pixels
  depend on)."""
  key = {"format": FORMAT, "dataset": builder.info.full_name, "data_dir": str(builder.data_dir),
         "dataset_files": dataset_files(builder), "split": split, "patch_size": pp.patch_size,
         "grid_size": pp.grid_size, "native_tokens": pp.max_seq_len_from_original_res,
         "longer_side_lengths": list(pp.longer_side_lengths)}
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  safe_split = "".join(c if c.isalnum() or c in "-_" else "_" for c in split)
  return os.path.join(root, builder.info.full_name.replace("/", "_"), f"{safe_split}-{digest}")


def dataset_files(builder: tfds.core.DatasetBuilder) -> list[list]:
  """[name, bytes, modification time in ns] of each file of the prepared tfds dataset: cheap (one
  listing, one stat per file) and changed by a rebuild, which rewrites every file."""
  data_dir = os.fspath(builder.data_dir)
  names = sorted(name for name in tf.io.gfile.listdir(data_dir) if not name.endswith("/"))
  with concurrent.futures.ThreadPoolExecutor(16) as pool:  # gs://: one request per file
    stats = list(pool.map(lambda name: tf.io.gfile.stat(os.path.join(data_dir, name)), names))
  return [[name, stat.length, stat.mtime_nsec] for name, stat in zip(names, stats)
          if not stat.is_directory]


def file_hash(data: bytes) -> int:
  """The hash the read path checks (`PreparedSplit.features`), of a file's bytes."""
  return int(tf.strings.to_hash_bucket_fast(data, _BUCKETS).numpy())


class DamagedError(errors.RunFailed, ValueError):
  """A prepared folder that does not hold what it was prepared with."""


def _damaged_message(folder: str) -> str:
  # No quotes: TF's assertion messages (the read path's) escape them.
  return (f": the prepared folder is damaged or was changed. Fix: delete the folder {folder} "
          "and run again, which prepares it anew")


def _damaged(path: str, problem: str, folder: str) -> DamagedError:
  return DamagedError(f"{path} {problem}{_damaged_message(folder)}")


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
  width, stored native rows), labels (as `pipeline.labels_of` gives them) and file hash."""
  folder: str
  pp: multiscale.MultiScaleConfig
  sizes: np.ndarray  # [n, 3] int32
  labels: dict[str, np.ndarray]
  hashes: np.ndarray  # [n] int64, `file_hash` of each example's file
  # Which files this process has read and checked against `hashes` (once each: see `_verified`).
  _checked: tf.Variable = dataclasses.field(init=False, repr=False, compare=False)

  def __post_init__(self):
    with tf.device("/cpu:0"):  # where tf.data runs
      checked = tf.Variable(tf.zeros([len(self.sizes)], tf.bool), trainable=False)
    object.__setattr__(self, "_checked", checked)

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
    (mst.training.data). The file's bytes and positions are checked first (`_verified`,
    `_check_length`, `_check_positions`)."""
    path = _file(self.folder, index)
    data = tf.io.decode_raw(self._verified(tf.io.read_file(path), index, path), tf.uint8)
    height, width, rows = tf.unstack(tf.gather(tf.constant(self.sizes), index))
    native_bytes = rows * width * 3
    resized = [preprocess.resized_size(height, width, length)
               for length in self.pp.longer_side_lengths]
    data = self._check_length(data, native_bytes, resized, path)
    # The decoding pipeline's own flip of the native image; whether it flipped tells which
    # stored copy of each resized image is the one it would have made.
    native = tf.reshape(data[:native_bytes], [rows, width, 3])
    native = tf.cast(preprocess.normalize(augmentation.augment_image(native, augment, seed)),
                     tf.float16)
    flipped = augmentation.augment_image(tf.constant([[[0], [1]]]), augment, seed)[0, 0, 0] > 0
    p, blocks, offset = self.pp.patch_size, [], native_bytes
    for (rh, rw), m_k in zip(resized, self.pp.scaled_lengths):
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
      tokens[key] = tf.bitcast(values, tf.int32) if width_in_bytes == 4 else values[:, 0]
      offset += total * width_in_bytes
    tokens = self._check_positions(tokens, [tf.shape(real)[0] for real in blocks[::2]], path)
    return {**tokens, **{key: tf.gather(tf.constant(value), index)
                         for key, value in self.labels.items()}}

  def _verified(self, raw: tf.Tensor, index: tf.Tensor, path: tf.Tensor) -> tf.Tensor:
    """`raw`, the bytes of example `index`'s file, once their hash is the stored one: checked the
    first time this process reads the file (0.4 ms for 3.4 MB), not on every epoch."""
    def check():
      same = tf.equal(tf.strings.to_hash_bucket_fast(raw, _BUCKETS),
                      tf.gather(tf.constant(self.hashes), index))
      same = self._require(same, path, f"does not hold the bytes it was prepared with (its hash "
                           f"is not the one in {INDEX}: truncated or changed)")
      with tf.control_dependencies([same]):
        done = self._checked.scatter_update(tf.IndexedSlices(tf.constant([True]),
                                                             tf.reshape(index, [1])))
      with tf.control_dependencies([done]):
        return tf.identity(same)
    checked = tf.cond(tf.gather(self._checked, index), lambda: tf.constant(True), check)
    with tf.control_dependencies([checked]):
      return tf.identity(raw)

  def _check_length(self, data: tf.Tensor, native_bytes: tf.Tensor,
                    resized: list[tuple[tf.Tensor, tf.Tensor]], path: tf.Tensor) -> tf.Tensor:
    """`data`, once its length is what the example's sizes say (each read: a file damaged after
    its first read is still not cut into patches)."""
    total = sum(self.pp.scaled_lengths) + self.pp.max_seq_len_from_original_res
    expected = native_bytes + sum(rh * rw * 3 * 2 * 2 for rh, rw in resized) + total * (4 + 4 + 1)
    ok = self._require(tf.equal(tf.size(data), expected), path,
                       f"is not as long as its sizes in {INDEX} say")
    with tf.control_dependencies([ok]):
      return tf.identity(data)

  def _check_positions(self, tokens: Features, real: list[tf.Tensor], path: tf.Tensor
                       ) -> Features:
    """`tokens` with a boolean mask, once their positions are sane: `spatial_idx` in [0, G*G),
    and `mask` 1 and `scale_idx` k on exactly the `real[k]` real patches of each scale k (0 on
    the padding). A few comparisons of l + sum(m_k) numbers: checked on every read."""
    lengths = list(self.pp.scaled_lengths) + (
        [self.pp.max_seq_len_from_original_res] if self.pp.max_seq_len_from_original_res else [])
    scale_of = tf.constant(np.repeat(np.arange(len(lengths), dtype=np.int32), lengths))
    within = tf.constant(np.concatenate([np.arange(n, dtype=np.int32) for n in lengths]))
    is_real = within < tf.gather(tf.stack(real), scale_of)
    g2 = self.pp.grid_size ** 2
    spatial, scale, mask = (tokens[key] for key in POSITIONS)
    checks = [
        (tf.reduce_all((spatial >= 0) & (spatial < g2)),
         f"has a spatial_idx outside [0, G*G = {g2})"),
        (tf.reduce_all(tf.equal(scale, tf.where(is_real, scale_of, 0))),
         f"has a scale_idx other than the scale of its token (0 to {len(lengths) - 1}, 0 on "
         "padding)"),
        (tf.reduce_all(tf.equal(mask, tf.cast(is_real, tf.uint8))),
         "has a mask that is not 1 on exactly its real patches")]
    with tf.control_dependencies([self._require(ok, path, problem) for ok, problem in checks]):
      return {**tokens, "spatial_idx": tf.identity(spatial), "scale_idx": tf.identity(scale),
              "mask": tf.equal(mask, 1)}

  def _require(self, ok: tf.Tensor, path: tf.Tensor, problem: str) -> tf.Tensor:
    """`ok`, after an error naming the file, the problem and the folder to delete when it is
    false (the message is built only then)."""
    def fail():
      message = tf.strings.join([path, f" {problem}{_damaged_message(self.folder)}"])
      with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
        return tf.identity(ok)
    return tf.cond(ok, lambda: ok, fail)


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
            root: str, writer: bool = True,
            wait_s: float = HOST_WAIT_S) -> PreparedSplit:
  """The prepared `split` under `root`, made now unless a complete folder for it exists.

  One process per machine prepares a folder (`_one_at_a_time`); one that arrives meanwhile waits
  and reads the finished folder. On a pod whose hosts share `root`, only one host is the
  `writer`: the others wait (up to `wait_s`) for its manifest (`mst.training.data` chooses).
  """
  if pp.max_seq_len_from_original_res < 0:
    raise ValueError("a prepared split is for training at a fixed native length: set "
                     "max_seq_len_from_original_res (l) >= 0, not "
                     f"{pp.max_seq_len_from_original_res}")
  folder = folder_of(builder, split, pp, os.path.expanduser(root))
  if tf.io.gfile.exists(os.path.join(folder, MANIFEST)):
    logging.info("Reading the prepared %s split from %s", split, folder)
    return load(folder, pp)
  if not writer:
    _wait_for_manifest(folder, wait_s)
    return load(folder, pp)
  with _one_at_a_time(folder):
    if tf.io.gfile.exists(os.path.join(folder, MANIFEST)):
      logging.info("Reading the %s split another process prepared meanwhile in %s", split, folder)
    else:
      logging.info("Preparing the %s split of %s in %s, once for every run with this "
                   "preprocessing", split, builder.info.full_name, folder)
      _write(builder, split, pp, folder)
  return load(folder, pp)


def _wait_for_manifest(folder: str, wait_s: float) -> None:
  """Waits until another host's preparation of `folder` is complete; TimeoutError after
  `wait_s` seconds, saying what to look at."""
  logging.info("Waiting for process 0 to prepare %s (the hosts share it: one prepares it)",
               folder)
  path, start, said = os.path.join(folder, MANIFEST), time.monotonic(), time.monotonic()
  while not tf.io.gfile.exists(path):
    now = time.monotonic()
    if now - start > wait_s:
      raise TimeoutError(
          f"waited {wait_s / 3600:.1f} h for process 0 to prepare {folder}, which still has no "
          f"{MANIFEST}: see process 0's log. If it died, delete that folder and run again")
    if now - said >= WAIT_LOG_S:
      logging.info("Still waiting for process 0 to prepare %s (%.0f min so far)", folder,
                   (now - start) / 60)
      said = now
    time.sleep(_POLL_S)


def lock_path(folder: str) -> str:
  """The lock file of a folder's preparation: beside a local folder; in this machine's temporary
  folder for a gs:// one (locks are local files)."""
  if "://" in folder:
    digest = hashlib.sha256(folder.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"mst-prepared-{digest}.lock")
  return folder.rstrip("/") + ".lock"


@contextlib.contextmanager
def _one_at_a_time(folder: str):
  """Holds `folder`'s lock; while another process holds it, waits and says so every minute."""
  path = lock_path(folder)
  if "://" not in folder:
    os.makedirs(os.path.dirname(path), exist_ok=True)
  lock = filelock.FileLock(path)
  try:
    lock.acquire(timeout=0)
  except filelock.Timeout:
    logging.info("Another process on this machine is preparing %s (it holds %s); waiting for it "
                 "to finish, then reading its folder", folder, path)
    while True:
      try:
        lock.acquire(timeout=WAIT_LOG_S)
        break
      except filelock.Timeout:
        logging.info("Still waiting for the process that prepares %s (lock %s)", folder, path)
  try:
    yield
  finally:
    lock.release()


def load(folder: str, pp: multiscale.MultiScaleConfig) -> PreparedSplit:
  """The prepared split in `folder` (made for `pp`): its sizes, labels and file hashes, checked
  against the manifest; pixels stay on disk, checked when read (`PreparedSplit.features`)."""
  manifest = _manifest(folder, pp)
  path = os.path.join(folder, INDEX)
  with tf.io.gfile.GFile(path, "rb") as f:
    data = f.read()
  if file_hash(data) != manifest.get("index_hash"):
    raise _damaged(path, f"does not hold the bytes it was prepared with (its hash is not the one "
                   f"in {MANIFEST}: truncated or changed)", folder)
  index = dict(np.load(io.BytesIO(data)))
  if "size" not in index or HASH not in index:
    raise _damaged(path, f"has no size or {HASH} arrays", folder)
  sizes, hashes = index.pop("size"), index.pop(HASH)
  _check_index(path, folder, manifest["examples"], sizes, hashes, index)
  return PreparedSplit(folder, pp, sizes, index, hashes)


def _manifest(folder: str, pp: multiscale.MultiScaleConfig) -> dict:
  """`folder`'s manifest, once it says the folder is complete and made for `pp`."""
  path = os.path.join(folder, MANIFEST)
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      manifest = json.loads(f.read())
  except (ValueError, UnicodeDecodeError) as e:
    raise _damaged(path, f"is not JSON ({e})", folder) from None
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise _damaged(path, f"is not a format-{FORMAT} manifest", folder)
  wanted = json.loads(json.dumps(dataclasses.asdict(pp)))
  if manifest.get("preprocess") != wanted:
    raise _damaged(path, f"says the folder was prepared for {manifest.get('preprocess')}, not "
                   f"{wanted}", folder)
  if not isinstance(manifest.get("examples"), int):
    raise _damaged(path, "has no number of examples", folder)
  return manifest


def _check_index(path: str, folder: str, count: int, sizes: np.ndarray, hashes: np.ndarray,
                 labels: dict[str, np.ndarray]) -> None:
  """Every example's sizes, hash and labels are there, and its sizes are an image's."""
  if sizes.shape != (count, 3) or hashes.shape != (count,) or any(
      len(value) != count for value in labels.values()):
    raise _damaged(path, f"does not hold sizes, hashes and labels for the manifest's {count} "
                   "examples", folder)
  height, width, rows = sizes.T
  if count and not ((height > 0).all() and (width > 0).all() and (rows >= 0).all()
                    and (rows <= height).all()):
    raise _damaged(path, "has a size that is not an image's (height, width > 0 and "
                   "0 <= rows <= height)", folder)


def _write(builder: tfds.core.DatasetBuilder, split: str, pp: multiscale.MultiScaleConfig,
           folder: str) -> None:
  """Decodes and resizes every example of `split` (in parallel, in split order) and writes one
  file per example, then the index (with each file's hash) and, last, the manifest (with the
  index's hash)."""
  tf.io.gfile.makedirs(folder)
  stored = pipeline.as_written(lambda example: _stored(example, pp))
  examples = pipeline.in_order(pipeline.read_split(builder, split, pipeline.Host()).map(
      stored, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
  sizes, hashes, labels = [], [], {}
  for index, example in enumerate(examples.as_numpy_iterator()):
    arrays = [example["native"]]
    for k in range(len(pp.longer_side_lengths)):
      arrays += [example[f"scale_{k}"], example[f"mirrored_{k}"]]
    arrays += [example[key] for key in POSITIONS]
    data = b"".join(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
                    for a in arrays)
    _write_atomically(_file(folder, index).numpy().decode(), data)
    sizes.append(example["size"])
    hashes.append(file_hash(data))
    for key in pipeline.LABELS:
      if key in example:
        labels.setdefault(key, []).append(example[key])
  buffer = io.BytesIO()
  np.savez(buffer, size=np.array(sizes, np.int32).reshape(-1, 3),
           **{HASH: np.array(hashes, np.int64)},
           **{key: np.stack(value) for key, value in labels.items()})
  _write_atomically(os.path.join(folder, INDEX), buffer.getvalue())
  manifest = {"format": FORMAT, "dataset": builder.info.full_name, "split": split,
              "examples": len(sizes), "preprocess": dataclasses.asdict(pp),
              "dataset_files": dataset_files(builder), "index_hash": file_hash(buffer.getvalue())}
  _write_atomically(os.path.join(folder, MANIFEST), json.dumps(manifest, indent=1).encode())


def _write_atomically(path: str, data: bytes) -> None:
  temporary = f"{path}.tmp-{os.getpid()}"
  with tf.io.gfile.GFile(temporary, "wb") as f:
    f.write(data)
  tf.io.gfile.rename(temporary, path, overwrite=True)
