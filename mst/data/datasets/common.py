"""What the dataset builders share: the base builder, image sources, the decodability check, the
skip list, seeded splits and label-file readers.

Every builder stores each image's encoded bytes exactly as shipped (decoding to 3 channels happens
in the input pipeline), the file name, `mos` on the dataset's own scale and the dataset's other
labels. An image that is missing or that TensorFlow cannot decode is skipped, never a crash or a
silent drop: it is counted in the log and in `info.metadata['skipped']`, and listed with its reason
in `skipped_images.txt` beside the prepared dataset (`<data_dir>/<name>[/<config>]/<version>/`).

The decodability check is a full `tf.io.decode_image(channels=3)`, the decoder the input pipeline
uses: a header check (PIL `Image.verify()`, ~100x cheaper) misses truncated JPEGs, which then fail
mid-training. A full decode costs ~3-6 ms for a 1024x768 JPEG and ~60-100 ms for SPAQ's 4000x3000
ones, i.e. ~10-25 CPU-minutes for AVA's ~255k images or SPAQ's 11k, paid once when preparing and
spread over a thread pool (TF's decoder releases the GIL).
"""

import concurrent.futures
import csv
import dataclasses
import io
import os
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mst.runtime import progress

SKIPPED_FILE = "skipped_images.txt"
CHECK_THREADS = min(16, os.cpu_count() or 1)
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Entry:
  """One labelled image before its bytes are read: `name` is the example key and the stored `name`
  feature; `path` is what the image source reads (default: `name`); `labels` are the remaining
  feature values."""
  name: str
  labels: dict[str, Any]
  path: str = ""


class FolderSource:
  """Reads image files below a folder (a relative path is joined to it, an absolute one is kept).

  With `ignore_case`, a path whose exact spelling is absent is matched case-insensitively, one
  folder level at a time (TID2013 lists `i25_01_1.bmp` and ships `I25_01_1.BMP`).
  """

  def __init__(self, root: str, ignore_case: bool = False):
    self.root, self.ignore_case = root, ignore_case
    self._listings: dict[str, dict[str, str] | None] = {}

  def location(self, path: str) -> str:
    """Where `path` is, for messages."""
    return os.path.join(self.root, path)

  def read(self, path: str) -> bytes:
    full = os.path.join(self.root, path)
    if self.ignore_case and not os.path.exists(full):
      full = self._match_case(path) or full
    with open(full, "rb") as f:
      return f.read()

  def _match_case(self, path: str) -> str | None:
    current = self.root
    for part in path.split("/"):
      if current not in self._listings:  # A race lists a folder twice, harmlessly.
        try:
          self._listings[current] = {n.lower(): n for n in sorted(os.listdir(current))}
        except OSError:
          self._listings[current] = None
      actual = (self._listings[current] or {}).get(part.lower())
      if actual is None:
        return None
      current = os.path.join(current, actual)
    return current


class ZipSource:
  """Reads files from a zip archive. Without `root`, by base name, wherever the archive puts them
  (KonIQ ships `1024x768/<name>` inside `koniq10k_1024x768.zip`); with it, by the path below the
  archive's folder `root` (e.g. `kadid10k/`). `ignore_case` matches names case-insensitively."""

  def __init__(self, zip_path: str, root: str | None = None, ignore_case: bool = False):
    self.zip_path, self._root, self._ignore_case = zip_path, root, ignore_case
    try:
      self._zip = zipfile.ZipFile(zip_path)  # Reads are thread-safe: members share a locked file.
    except zipfile.BadZipFile as e:
      raise ValueError(f"{zip_path}: not a readable zip archive ({e})") from None
    self._members = {}
    for info in self._zip.infolist():
      if not info.is_dir() and (root is None or info.filename.startswith(root)):
        self._members.setdefault(self._key(info.filename[len(root or ""):]), info.filename)

  def _key(self, path: str) -> str:
    key = os.path.basename(path) if self._root is None else path
    return key.lower() if self._ignore_case else key

  def location(self, path: str) -> str:
    """Where `path` is, for messages: `<zip>:<member>`."""
    return f"{self.zip_path}:{self._members.get(self._key(path), (self._root or '') + path)}"

  def read(self, path: str) -> bytes:
    member = self._members.get(self._key(path))
    if member is None:
      raise FileNotFoundError(path)
    return self._zip.read(member)


def decode(data: bytes) -> tuple[tf.Tensor | None, str | None]:
  """Decodes `data` the way the input pipeline does: (the (H, W, 3) uint8 image, None), or
  (None, why it cannot be decoded)."""
  if not data:
    return None, "empty file"
  try:
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
    lines = (e.message or type(e).__name__).strip().splitlines()
    return None, "undecodable: " + lines[-1].split("}} ")[-1].replace(" [Op:DecodeImage]", "")
  if image.shape[0] == 0 or image.shape[1] == 0:
    return None, "undecodable: image has no pixels"
  return image, None


class SkipList:
  """The images left out of a dataset, with the split they would have gone to and why."""

  def __init__(self):
    self.rows: list[tuple[str, str, str]] = []

  def add(self, split: str, name: str, reason: str) -> None:
    self.rows.append((split, name, " ".join(reason.split())))

  def counts(self) -> dict[str, int]:
    out: dict[str, int] = {}
    for split, _, _ in self.rows:
      out[split] = out.get(split, 0) + 1
    return out

  def write(self, path: os.PathLike | str) -> None:
    """Writes a tab-separated file with a `split name reason` header (always, even when empty,
    so its presence says the check ran)."""
    with tf.io.gfile.GFile(os.fspath(path), "w") as f:
      f.write("split\tname\treason\n")
      for row in self.rows:
        f.write("\t".join(row) + "\n")


def read_skipped(builder: tfds.core.DatasetBuilder) -> list[dict[str, str]]:
  """The skipped images of a prepared builder: dicts with keys split, name, reason."""
  path = os.path.join(os.fspath(builder.data_dir), SKIPPED_FILE)
  with tf.io.gfile.GFile(path) as f:
    return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def seeded_split(names: Sequence[str], fractions: Sequence[tuple[str, float]],
                 seed: int) -> dict[str, str]:
  """Assigns each name to a split: a seeded permutation of the sorted names cut at the rounded
  cumulative fractions. Depends only on the set of names and the seed (not on their order, nor on
  which images later turn out missing), and `np.random.RandomState` streams are stable across
  numpy versions."""
  ordered = sorted(set(names))
  perm = np.random.RandomState(seed).permutation(len(ordered))
  bounds = np.round(np.cumsum([f for _, f in fractions]) * len(ordered)).astype(int)
  bounds[-1] = len(ordered)
  out, start = {}, 0
  for (split, _), stop in zip(fractions, bounds):
    for i in perm[start:stop]:
      out[ordered[i]] = split
    start = stop
  return out


def read_csv(path: str, required: Sequence[str], text: str | None = None) -> list[dict[str, str]]:
  """Rows of a CSV file with a header (BOM and surrounding spaces tolerated), each row carrying its
  1-based file line as `_line`; fails naming the file (and line 1) if it is empty or a required
  column is absent. `text` is the file's content when it is not on disk (a zip member): `path`
  then only names it."""
  opened = open(path, newline="", encoding="utf-8-sig") if text is None else io.StringIO(
      text.removeprefix("\ufeff"), newline="")
  with opened as f:
    reader = csv.DictReader(f, skipinitialspace=True)
    if reader.fieldnames is None:
      raise ValueError(f"{path}:1: the file is empty; its first line must be a header naming "
                       f"the columns {list(required)}")
    header = [h.strip() for h in reader.fieldnames]
    missing = [c for c in required if c not in header]
    if missing:
      raise ValueError(f"{path}:1: missing column(s) {missing}; the header is {header} (the "
                       f"first line must name the columns {list(required)})")
    rows = []
    for row in reader:
      clean = {(k or "").strip(): (v or "").strip() for k, v in row.items()
               if isinstance(v, str) or v is None}
      if any(clean.values()):
        clean["_line"] = str(reader.line_num)
        rows.append(clean)
  return rows


def to_float(row: dict[str, str], column: str, path: str) -> float:
  """The float in `row[column]`, or an error naming the file, line and column."""
  try:
    return float(row[column])
  except (KeyError, ValueError, TypeError):
    raise ValueError(f"{path}:{row.get('_line', '?')}: column {column!r} is not a number: "
                     f"{row.get(column)!r}") from None


def find(manual_dir: str, relpath: str) -> str | None:
  """`relpath` under the manual dir, or under one of its direct subfolders (an archive extracted
  into its own top folder), or None."""
  candidates = [os.path.join(manual_dir, relpath)]
  if os.path.isdir(manual_dir):
    candidates += [os.path.join(manual_dir, d, relpath) for d in sorted(os.listdir(manual_dir))]
  return next((c for c in candidates if os.path.exists(c)), None)


def require(manual_dir: str, relpath: str, instructions: str) -> str:
  """Like `find`, but fails fast with the download instructions when the file is absent."""
  path = find(manual_dir, relpath)
  if path is None:
    raise FileNotFoundError(f"{relpath} not found in the manual dir {manual_dir} (nor in a "
                            f"folder directly below it).\n{instructions}")
  return path


def open_download(manual_dir: str, marker: str, instructions: str):
  """A source reading a download by the paths below its top folder, the one that holds `marker`
  (a label file such as `kadid10k/dmos.csv`'s `dmos.csv`): that folder extracted in the manual dir
  or in a folder directly below it, else a zip directly in the manual dir that holds it (as the
  set ships). Names match case-insensitively. Fails fast with the instructions when neither is
  there."""
  path = find(manual_dir, marker)
  if path is not None:
    return FolderSource(path[:len(path) - len(marker)], ignore_case=True)
  for name in sorted(os.listdir(manual_dir)) if os.path.isdir(manual_dir) else []:
    if name.lower().endswith(".zip") and zipfile.is_zipfile(os.path.join(manual_dir, name)):
      with zipfile.ZipFile(os.path.join(manual_dir, name)) as z:
        member = next((m for m in z.namelist() if m == marker or m.endswith("/" + marker)), None)
      if member is not None:
        return ZipSource(os.path.join(manual_dir, name), member[:len(member) - len(marker)],
                         ignore_case=True)
  raise FileNotFoundError(f"{marker} not found in the manual dir {manual_dir} (nor in a folder "
                          f"directly below it, nor in a zip there).\n{instructions}")


def mos_feature(doc: str) -> tfds.features.Scalar:
  """A float32 score; `doc` states its scale."""
  return tfds.features.Scalar(np.float32, doc=doc)


class ImageQualityBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the mst builders: subclasses give their label features and read their label files.

  Subclasses set `VERSION`, `DESCRIPTION`, `HOMEPAGE`, `CITATION`, `MANUAL_DOWNLOAD_INSTRUCTIONS`
  and implement `_label_features()` and `_read_entries(manual_dir)`.
  """
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  SPLITS = SPLITS  # the splits it can have, known before preparing (configs are checked on them)
  DESCRIPTION = ""
  HOMEPAGE = ""
  CITATION = ""

  def _label_features(self) -> dict[str, tfds.features.FeatureConnector]:
    raise NotImplementedError

  def _read_entries(self, manual_dir: str) -> tuple[Any, dict[str, list[Entry]]]:
    """Returns (an image source with `read(path) -> bytes`, entries per split)."""
    raise NotImplementedError

  def _encode(self, data: bytes, image: tf.Tensor) -> bytes:
    """The bytes to store for an image that decodes to `image`; by default the original ones."""
    del image
    return data

  def _info(self) -> tfds.core.DatasetInfo:
    # Built here, not from README/CITATIONS files: these builders live in plain modules.
    description = self.DESCRIPTION
    if self.builder_config is not None and self.builder_config.description:
      description += "\n\nConfig: " + self.builder_config.description
    features = {
        "image": tfds.features.Tensor(
            shape=(), dtype=tf.string, doc="The encoded image file, bytes as shipped."),
        "name": tfds.features.Text(doc="The image's file name in the original download."),
    }
    features.update(self._label_features())
    return tfds.core.DatasetInfo(
        builder=self, description=description, features=tfds.features.FeaturesDict(features),
        supervised_keys=("image", "mos"), homepage=self.HOMEPAGE, citation=self.CITATION,
        metadata=tfds.core.MetadataDict())

  # tfds prints these in bold on stdout; mst reports preparation with `mst.runtime.progress`
  # instead.
  def _log_download_bytes(self) -> None:
    logging.info("%s: preparing in %s", self.name, self.data_dir)

  def _log_download_done(self) -> None:
    logging.info("%s: prepared in %s", self.name, self.data_dir)

  def _download_and_prepare(self, dl_manager, download_config=None):
    self._skipped = SkipList()
    super()._download_and_prepare(dl_manager, download_config)
    # data_dir is tfds's temporary `incomplete.*` folder until preparation succeeds.
    self._skipped.write(os.path.join(os.fspath(self.data_dir), SKIPPED_FILE))
    counts = self._skipped.counts()
    self.info.metadata["skipped"] = counts
    self.info.metadata["skipped_file"] = SKIPPED_FILE
    total = len({name for _, name, _ in self._skipped.rows})  # an image may be in 2 splits
    final_dir = os.path.join(os.path.dirname(os.fspath(self.data_dir)), str(self.version))
    (logging.warning if total else logging.info)(
        "%s: skipped %d image(s) (missing or undecodable), listed in %s", self.name, total,
        os.path.join(final_dir, SKIPPED_FILE))

  @classmethod
  def config_from_kwargs(cls, config=None):
    """The builder config `mst.data.datasets.build` passes on: a config name, object or None."""
    return config

  @property
  def needs_manual_dir(self) -> bool:
    """Whether preparing reads the manual dir (the original downloads)."""
    return True

  def _manual_dir(self, dl_manager) -> str | None:
    if not self.needs_manual_dir:
      return None
    return os.fspath(dl_manager.manual_dir)  # Fails fast when missing or empty.

  def _split_generators(self, dl_manager):
    source, splits = self._read_entries(self._manual_dir(dl_manager))
    splits = self._drop_duplicates(splits)
    for split, entries in splits.items():
      logging.info("%s: %d labelled images in split %s", self.name, len(entries), split)
    return {split: self._generate_examples(split, entries, source)
            for split, entries in splits.items() if entries}

  def _drop_duplicates(self, splits: dict[str, list[Entry]]) -> dict[str, list[Entry]]:
    """Keeps the first entry of each name in a split (tfds needs unique keys; an image may be in
    several splits, as in `full` and `test`); later ones are skipped."""
    out = {}
    for split, entries in splits.items():
      out[split], seen = [], set()
      for entry in entries:
        if entry.name in seen:
          self._skipped.add(split, entry.name, "duplicate label row (kept the first)")
        else:
          seen.add(entry.name)
          out[split].append(entry)
    return out

  def _load(self, source, entry: Entry) -> tuple[bytes | None, str | None]:
    """(bytes to store, None) or (None, why the image is skipped)."""
    try:
      data = source.read(entry.path or entry.name)
    except FileNotFoundError:
      return None, "missing file"
    except OSError as e:
      return None, f"unreadable file: {e.strerror or e}"
    image, reason = decode(data)
    if reason:
      return None, reason
    try:
      return self._encode(data, image), None
    except (ValueError, OSError, tf.errors.OpError) as e:
      return None, f"cannot re-encode: {e}"

  def _generate_examples(self, split: str, entries: list[Entry], source) -> Iterator[tuple]:
    """Yields (name, example) for the entries whose image reads and decodes; reads and checks run
    on a thread pool, in chunks so memory stays bounded, keeping the entries' order."""
    chunk, kept, skipped, reasons = 4 * CHECK_THREADS, 0, 0, []
    bar = progress.Progress(f"prepare {self.name} {split}", len(entries), "images")
    with concurrent.futures.ThreadPoolExecutor(CHECK_THREADS) as pool:
      for start in range(0, len(entries), chunk):
        batch = entries[start:start + chunk]
        for entry, (data, reason) in zip(batch, pool.map(lambda e: self._load(source, e), batch)):
          skipped += bool(reason)
          bar.update(skipped=skipped)
          if reason:
            self._skipped.add(split, entry.name, reason)
            reasons = reasons[:2] + [f"{entry.name}: {reason}"]
            continue
          kept += 1
          yield entry.name, {"image": data, "name": entry.name, **entry.labels}
    bar.close()
    if not kept:  # tfds cannot write an empty split; and it means the images are not there.
      raise FileNotFoundError(
          f"{self.name}: none of the {len(entries)} images of split {split!r} could be used, "
          f"e.g. {reasons}. Are the images in place?\n"
          f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
