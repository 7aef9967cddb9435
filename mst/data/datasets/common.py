"""What the dataset builders share: the base builder, image sources, the decodability check, the
skip list, seeded splits and label-file readers.

Every builder stores each image's encoded bytes exactly as shipped (decoding to 3 channels happens
in the input pipeline), the file name, `mos` on the dataset's own scale and the dataset's other
labels. An image that is missing, refused (over MAX_FILE_BYTES, not a regular file, a corrupt zip
member) or that TensorFlow cannot decode is skipped, never a crash or a silent drop: it is counted
in the log and in `info.metadata['skipped']`, and listed with its reason in `skipped_images.txt`
beside the prepared dataset (`<data_dir>/<name>[/<config>]/<version>/`).

The decodability check is a full `tf.io.decode_image(channels=3)`, the decoder the input pipeline
uses: a header check (PIL `Image.verify()`, ~100x cheaper) misses truncated JPEGs, which then fail
mid-training. A full decode costs ~3-6 ms for a 1024x768 JPEG and ~60-100 ms for SPAQ's 4000x3000
ones, i.e. ~10-25 CPU-minutes for AVA's ~255k images or SPAQ's 11k, paid once when preparing and
spread over a thread pool (TF's decoder releases the GIL).

Hostile input costs nothing: no file or zip member over MAX_FILE_BYTES is read (an image is skipped
and listed, a label file refused), a member cannot inflate past what its header declares, and a
label that is not a finite float32 (NaN, inf, 1e39), a label file that is not UTF-8 text or holds
a NUL byte, and a CSV field over the csv module's limit are errors naming the file and the line
(`LabelFileError`, a ValueError: mst-datasets and mst-train exit 2).
"""

import concurrent.futures
import csv
import dataclasses
import io
import math
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mst import errors
from mst.data import image_io
from mst.runtime import progress

SKIPPED_FILE = "skipped_images.txt"
CHECK_THREADS = min(16, os.cpu_count() or 1)
SPLITS = ("train", "validation", "test")
# The most bytes the builders read from one file or zip member, images and label files alike:
# 256 MiB, ~20x the largest image of the supported sets (SPAQ's 4000x3000 JPEGs, a few MB each) and
# ~20x the largest label file (AVA.txt, ~15 MB). A file or member whose size (for a zip member: its
# header's `file_size`) is over it is not read: an image is skipped and listed in
# skipped_images.txt, a label file refused. So a zip bomb (300 MB of zeros deflates to ~300 KB)
# costs nothing, however many of them an archive holds.
MAX_FILE_BYTES = 256 << 20
FLOAT32_MAX = float(np.finfo(np.float32).max)  # labels are stored as float32: ~3.4e38
INT32_MAX = int(np.iinfo(np.int32).max)  # vote counts and levels are stored as int32
MAX_PROBLEMS = 50  # bad rows listed in one error; the count says how many more


class LabelFileError(errors.BadInput):
  """A label file mst cannot use. The message names the file and the line (or sheet row, or .mat
  entry) of each problem as `file:line: what` (the first MAX_PROBLEMS of them, then how many more),
  so one pass fixes them all; `problems` holds the (line, what) pairs. mst-train and mst-eval exit
  2 on it (they catch it as `custom.LabelFileError`, this class)."""

  def __init__(self, message: str, problems: Sequence[tuple[Any, str]] = ()):
    super().__init__(message)
    self.problems = list(problems)

  @classmethod
  def at(cls, path: str, line: Any, what: str) -> "LabelFileError":
    """The error of one problem at `path:line`."""
    return cls(f"{path}:{line}: {what}", [(line, what)])

  @classmethod
  def of_rows(cls, title: str, path: str, problems: list[tuple[Any, str]]) -> "LabelFileError":
    """The error listing each of `problems` under the first line `title`."""
    lines = [f"{path}:{line}: {what}" for line, what in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
      lines.append(f"... and {len(problems) - MAX_PROBLEMS} more problem(s)")
    return cls(title + "\n" + "\n".join(lines), problems)


class UnreadableFile(errors.BadInput):
  """A file or zip member that is not read, or not used, for safety or because it is corrupt: too
  large, not a regular file, a member that fails to inflate. `reason` says why (what the skip list
  records); the message also says where."""

  def __init__(self, location: str, reason: str):
    super().__init__(f"{location}: {reason}")
    self.reason = reason


def _check_size(location: str, size: int, whose: str) -> None:
  """UnreadableFile unless `size` (bytes, as `whose` gives it) is within MAX_FILE_BYTES."""
  if size > MAX_FILE_BYTES:
    raise UnreadableFile(location, f"too large: {whose} {size} bytes, over the {MAX_FILE_BYTES}-"
                                   "byte limit (common.MAX_FILE_BYTES); not read")


def read_file(path: str) -> bytes:
  """The bytes of the regular file `path`. A FIFO, device or socket (which could block or never
  end) and a file over MAX_FILE_BYTES are refused with UnreadableFile, unread."""
  fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO's open would block
  try:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
      raise UnreadableFile(path, "not a regular file (a folder, FIFO, device or socket); not read")
    _check_size(path, info.st_size, "the file has")
  except BaseException:
    os.close(fd)
    raise
  with os.fdopen(fd, "rb") as f:
    data = f.read(info.st_size + 1)
  if len(data) > info.st_size:
    raise UnreadableFile(path, "the file grew while being read; not used")
  return data


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
    return read_file(full)

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
  archive's folder `root` (e.g. `kadid10k/`). `ignore_case` matches names case-insensitively.

  A member whose header declares over MAX_FILE_BYTES is refused unread, and a member is read asking
  for its declared size plus one byte: zipfile inflates at most what is asked for and stops at the
  declared size, so a member whose header understates its data (a bomb posing as a small image)
  costs no more memory than its claim; it then fails its CRC check and is refused as corrupt.
  """

  def __init__(self, zip_path: str, root: str | None = None, ignore_case: bool = False):
    self.zip_path, self._root, self._ignore_case = zip_path, root, ignore_case
    self._zip = open_zip(zip_path)  # Reads are thread-safe: members share a locked file.
    self._members: dict[str, zipfile.ZipInfo] = {}
    for info in self._zip.infolist():
      if not info.is_dir() and (root is None or info.filename.startswith(root)):
        self._members.setdefault(self._key(info.filename[len(root or ""):]), info)

  def _key(self, path: str) -> str:
    key = os.path.basename(path) if self._root is None else path
    return key.lower() if self._ignore_case else key

  def location(self, path: str) -> str:
    """Where `path` is, for messages: `<zip>:<member>`."""
    info = self._members.get(self._key(path))
    return f"{self.zip_path}:{info.filename if info else (self._root or '') + path}"

  def read(self, path: str) -> bytes:
    info = self._members.get(self._key(path))
    if info is None:
      raise FileNotFoundError(path)
    where = f"{self.zip_path}:{info.filename}"
    _check_size(where, info.file_size, "the zip header says")
    try:
      with self._zip.open(info) as f:
        data = f.read(info.file_size + 1)  # never more than MAX_FILE_BYTES + 1
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
      raise UnreadableFile(where, f"corrupt zip member ({e})") from None
    if len(data) != info.file_size:
      raise UnreadableFile(where, f"corrupt zip member (inflates to {len(data)} bytes, not the "
                                  f"header's {info.file_size})")
    return data


def open_zip(path: str) -> zipfile.ZipFile:
  """The zip archive at `path` opened for reading, or an error naming it."""
  try:
    return zipfile.ZipFile(path)
  except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as e:
    raise ValueError(f"{path}: not a readable zip archive ({e})") from None


def decode(data: bytes) -> tuple[tf.Tensor | None, str | None]:
  """Decodes `data` the way the input pipeline does: (the (H, W, 3) uint8 image, None), or
  (None, why it cannot be decoded)."""
  if not data:
    return None, "empty file"
  # The size from the header first: a decompression bomb is refused, never decoded.
  try:
    height, width = image_io.header_size(data, "image")
  except image_io.ImageError:
    return None, "undecodable: no JPEG, PNG, BMP, GIF or WebP header"
  if height * width > image_io.MAX_PIXELS:
    return None, (f"too large: {width}x{height} is {height * width / 1e6:.0f} megapixels, over "
                  f"the {image_io.MAX_PIXELS / 1e6:.1f} any image may have (image_io.MAX_PIXELS); "
                  "not decoded")
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


def _label_bytes(path: str) -> bytes:
  """`read_file` of a label file, its refusal (too large, not a regular file) a LabelFileError."""
  try:
    return read_file(path)
  except UnreadableFile as e:
    raise LabelFileError(str(e)) from None


def read_text(path: str, data: bytes | None = None) -> str:
  """The text of the label file `path` (read from disk unless its bytes `data` are given, as for a
  zip member): UTF-8, a BOM dropped. LabelFileError naming the file and the line for bytes that
  are not UTF-8 and for a NUL byte (a binary file, or a spreadsheet saved under a text name), and
  for a file over MAX_FILE_BYTES or not a regular file."""
  if data is None:
    data = _label_bytes(path)
  try:
    text = data.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = e.object.count(b"\n", 0, e.start) + 1
    raise LabelFileError.at(path, line, f"not UTF-8 text (byte {e.object[e.start:e.start + 1]!r}"
                                        "); save the file as UTF-8") from None
  nul = text.find("\0")
  if nul >= 0:
    raise LabelFileError.at(path, text.count("\n", 0, nul) + 1,
                            "a NUL byte: not a text file (a binary or spreadsheet file?)")
  return text


def _csv_records(reader: csv.DictReader, path: str) -> Iterator[dict]:
  """The records of `reader`; a CSV error (a field over the csv module's size limit, typically
  from an unbalanced quote) names the file and the lines of the record."""
  lines = reader.reader  # DictReader.line_num is only updated after a record is read
  while True:
    start = lines.line_num + 1
    try:
      yield next(reader)
    except StopIteration:
      return
    except csv.Error as e:
      span = f"line {start}" + (f" to {lines.line_num}" if lines.line_num > start else "")
      raise LabelFileError.at(path, start, f"not readable as CSV ({e}; the record spans {span}; "
                                           "an unbalanced quote?)") from None


def read_csv(path: str, required: Sequence[str], data: bytes | None = None) -> list[dict[str, str]]:
  """Rows of a CSV file with a header (BOM and surrounding spaces tolerated), each row carrying its
  1-based file line as `_line`; LabelFileError naming the file and the line if it is empty, a
  required column is absent, or it is not text `read_text` accepts or CSV the csv module reads.
  `data` is the file's bytes when it is not on disk (a zip member): `path` then only names it."""
  reader = csv.DictReader(io.StringIO(read_text(path, data), newline=""), skipinitialspace=True)
  records = _csv_records(reader, path)
  try:
    fieldnames = reader.fieldnames
  except csv.Error as e:
    raise LabelFileError.at(path, 1, f"not readable as CSV ({e})") from None
  if fieldnames is None:
    raise LabelFileError.at(path, 1, "the file is empty; its first line must be a header naming "
                                     f"the columns {list(required)}")
  header = [h.strip() for h in fieldnames]
  missing = [c for c in required if c not in header]
  if missing:
    raise LabelFileError.at(path, 1, f"missing column(s) {missing}; the header is {header} (the "
                                     f"first line must name the columns {list(required)})")
  rows = []
  for row in records:
    clean = {(k or "").strip(): (v or "").strip() for k, v in row.items()
             if isinstance(v, str) or v is None}
    if any(clean.values()):
      clean["_line"] = str(reader.line_num)
      rows.append(clean)
  return rows


def load_workbook(path: str, data: bytes | None = None):
  """The .xlsx workbook `path` (its bytes `data` when it is not on disk) opened with openpyxl,
  read-only, cell values only. LabelFileError naming the file when it is not a readable workbook,
  or when a part of it declares over MAX_FILE_BYTES: an .xlsx is a zip, whose sheet could be a
  bomb; zipfile stops each part at its declared size."""
  import openpyxl  # pylint: disable=g-import-not-at-top  # only the .xlsx sets need it
  if data is None:
    data = _label_bytes(path)
  try:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
      large = [info for info in z.infolist() if info.file_size > MAX_FILE_BYTES]
    if large:
      raise LabelFileError(f"{path}: part {large[0].filename} declares {large[0].file_size} "
                           f"bytes, over the {MAX_FILE_BYTES}-byte limit; not read")
    return openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
  except LabelFileError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # openpyxl and zipfile raise many kinds
    raise LabelFileError(f"{path}: not a readable .xlsx workbook ({type(e).__name__}: "
                         f"{e})") from None


# No official release of the supported sets is known to hold a NaN, infinite or float32-overflowing
# label, so every builder treats one as an error in the label file, never as a row to skip.
def label_problem(value: Any) -> tuple[float, str | None]:
  """(`value`, a string or a cell, as a float; None) or (NaN, what is wrong with it as a label):
  not a number, NaN or infinite, or beyond float32's range (stored as float32 it would be inf)."""
  try:
    number = float(value.strip() if isinstance(value, str) else value)
  except (TypeError, ValueError, OverflowError):
    return math.nan, "is not a finite number"
  if not math.isfinite(number):
    return math.nan, "is not a finite number"
  if abs(number) > FLOAT32_MAX:
    return math.nan, f"overflows float32 (beyond +-{FLOAT32_MAX:.4g})"
  return number, None


def finite_label(value: Any, path: str, line: Any, column: str) -> float:
  """`value` as a float float32 holds finitely, or a LabelFileError naming the file, the line, the
  column and the value: a NaN or inf label would poison training (a NaN loss) and metrics."""
  number, problem = label_problem(value)
  if problem:
    raise LabelFileError.at(path, line, f"{column} {value!r} {problem}")
  return number


def whole_label(value: Any, path: str, line: Any, column: str, high: int = INT32_MAX) -> int:
  """`value` as a whole number in [0, high] (a vote count, a level, an id), or a LabelFileError
  naming the file, the line, the column and the value."""
  number = _whole(value)
  if number is None:
    raise LabelFileError.at(path, line, f"{column} {value!r} is not a whole number")
  if not 0 <= number <= high:
    raise LabelFileError.at(path, line, f"{column} {value!r} is out of range 0..{high}")
  return number


def _whole(value: Any) -> int | None:
  """`value` (`12`, `12.0`, a number cell) as an int, or None."""
  if isinstance(value, str):
    try:
      return int(value.strip())
    except ValueError:
      pass
  try:
    real = float(value.strip() if isinstance(value, str) else value)
  except (TypeError, ValueError, OverflowError):
    return None
  return int(real) if math.isfinite(real) and real.is_integer() else None


def to_float(row: dict[str, Any], column: str, path: str) -> float:
  """`finite_label` of `row[column]` at the row's `_line`."""
  return finite_label(row.get(column), path, row.get("_line", "?"), column)


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
      with open_zip(os.path.join(manual_dir, name)) as z:
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
        "%s: skipped %d image(s) (missing, refused or undecodable), listed in %s", self.name, total,
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
    except UnreadableFile as e:
      return None, e.reason
    except OSError as e:
      return None, f"unreadable file: {e.strerror or e}"
    except ValueError as e:  # a name open() refuses (an embedded NUL)
      return None, f"unreadable file: {e}"
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
