"""Your own data: an image folder plus a CSV `image,mos[,split]`, as a tfds builder driven by paths.

The trainer's `config.dataset.csv` and `config.dataset.image_dir` become a `CustomConfig`; its name
is a hash of the CSV's path and content, the image dir and the split seed, so each CSV gets its own
folder `<data_dir>/custom/csv_<hash>/<version>/` and editing the CSV prepares a fresh dataset rather
than reusing a stale one (edits to the images alone are not noticed: delete the folder). Load it
again with `mst.data.datasets.build` and the same paths (the name is recomputed from them), or with
`tfds.builder_from_directory(<that folder>)`.
"""

import dataclasses
import hashlib
import os
import unicodedata

import tensorflow_datasets as tfds

from mst.data.datasets import common

DEFAULT_CSV = "labels.csv"
FRACTIONS = (("train", 0.8), ("validation", 0.1), ("test", 0.1))
MAX_PROBLEMS = common.MAX_PROBLEMS  # listed in one error; the count says how many more

_INSTRUCTIONS = f"""\
Give the CSV and the image folder as a config: mst.data.datasets.build("custom", data_dir,
csv=..., image_dir=...) or `mst-datasets build custom --data-dir D --config
'{{"csv": "/path/labels.csv", "image_dir": "/path/images"}}'`. Or, with the default config, put
{DEFAULT_CSV} in the manual dir, with image paths relative to it.
The CSV has a header with columns `image` (a path relative to the image dir, or absolute) and `mos`
(any scale), and optionally `split` (train / validation / test; without it: a seeded 80/10/10
split). Other columns are ignored.
"""


@dataclasses.dataclass(eq=False)
class CustomConfig(tfds.core.BuilderConfig):
  """A CSV and its image folder (default: the CSV's folder); the name is derived when not given.

  An empty `csv` means `labels.csv` in the manual dir (the `manual_dir` config).
  """
  name: str = ""
  csv: str = ""
  image_dir: str = ""
  split_seed: int = 0

  def __post_init__(self):
    if self.csv:
      self.csv = os.path.abspath(os.path.expanduser(self.csv))
      self.image_dir = os.path.abspath(os.path.expanduser(
          self.image_dir or os.path.dirname(self.csv)))
      if not self.name:
        self.name = config_name(self.csv, self.image_dir, self.split_seed)
      if not self.description:
        self.description = f"Labels {self.csv}, images in {self.image_dir}."
    elif not self.name:
      raise ValueError("CustomConfig needs `csv` (or a `name` for the manual-dir config).")


def config_name(csv_path: str, image_dir: str, split_seed: int) -> str:
  """`csv_<16 hex digits>` from the CSV's path and bytes, the image dir and the split seed."""
  try:
    content = common.read_file(csv_path)  # a regular file of at most common.MAX_FILE_BYTES
  except FileNotFoundError:
    raise FileNotFoundError(f"custom dataset: no CSV file at {csv_path}") from None
  except common.UnreadableFile as e:
    raise LabelFileError(f"custom dataset: labels CSV {e}") from None
  digest = hashlib.sha256(f"{csv_path}\0{image_dir}\0{split_seed}\0".encode() + content)
  return "csv_" + digest.hexdigest()[:16]


class Custom(common.ImageQualityBuilder):
  """Images listed in a CSV with their MOS; the CSV's split column or a seeded 80/10/10 split."""
  name = "custom"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = [CustomConfig(
      name="manual_dir", description=f"{DEFAULT_CSV} in the manual dir; images relative to it.")]
  DESCRIPTION = """\
Your own images with mean opinion scores from a CSV `image,mos[,split]`. `mos` is on the CSV's own
scale; `name` is the CSV's `image` value. Splits: the `split` column (train / validation / test)
when there is one, else a seeded 80/10/10 train / validation / test split (numpy
RandomState(split_seed) permutation of the sorted image names; split_seed defaults to 0). Missing
and undecodable images are skipped and listed in skipped_images.txt. Bad rows (an empty image
name, a MOS that is not a finite float32 number, an image listed twice, also as `./a.jpg` or
`A.JPG` beside `a.jpg`, an unknown split) stop the preparation with one error listing each of
them as `file:line: problem`."""

  @classmethod
  def config_from_kwargs(cls, config=None, csv=None, image_dir=None, split_seed=0):
    """The config for `mst.data.datasets.build`: `csv` (and `image_dir`, `split_seed`), or
    `config`."""
    if csv is None:
      if image_dir is not None:
        raise ValueError("custom dataset: `image_dir` given without `csv`")
      return config
    if config is not None:
      raise ValueError("custom dataset: give either `config` or `csv`, not both")
    return CustomConfig(csv=csv, image_dir=image_dir or "", split_seed=split_seed)

  def _label_features(self):
    return {"mos": common.mos_feature("Mean opinion score, on the CSV's scale.")}

  @property
  def needs_manual_dir(self) -> bool:
    return not self.builder_config.csv

  def _read_entries(self, manual_dir):
    config = self.builder_config
    if config.csv:
      csv_path, image_dir = config.csv, config.image_dir
    else:
      csv_path = common.require(manual_dir, DEFAULT_CSV, _INSTRUCTIONS)
      image_dir = os.path.dirname(csv_path)
    entries = read_labels(csv_path, config.split_seed)
    splits = {split: [] for split in common.SPLITS}
    for name, mos, split in entries:
      splits[split].append(common.Entry(name=name, labels={"mos": mos}))
    return common.FolderSource(image_dir), splits


LabelFileError = common.LabelFileError  # the one class mst-train and mst-eval exit 2 on


def read_labels(path: str, split_seed: int) -> list[tuple[str, float, str]]:
  """(image, mos, split) of every row of the CSV, the split from its `split` column or seeded
  80/10/10. Raises LabelFileError for a file that is empty, not UTF-8 text, holds a NUL byte or a
  field over the csv module's limit, a header without `image` and `mos`, no rows, or, listing
  them all, every empty image name, MOS that is not a finite float32 number (NaN, inf, 1e39),
  image listed twice and unknown split value. Missing images are not checked here: preparing
  skips and lists them.

  Two names of one file are refused too: `./a.jpg` beside `a.jpg`, and `A.JPG` (or another Unicode
  normalisation of it) beside `a.jpg`, which is the same file on case-insensitive file systems
  (macOS, Windows). Refused on every system, so that a CSV means the same dataset everywhere: the
  error lists the rows, to rename or drop one of each pair.
  """
  try:
    rows = common.read_csv(path, ["image", "mos"])
  except FileNotFoundError:
    raise LabelFileError(f"{path}: no such labels CSV file") from None
  except LabelFileError:
    raise
  except ValueError as e:
    raise LabelFileError(str(e), [(1, str(e))]) from None
  if not rows:
    raise LabelFileError(f"{path}:2: no label rows below the header", [(2, "no label rows")])
  problems, first_line, first_name, out = [], {}, {}, []
  with_split = "split" in rows[0]
  for row in rows:
    line, name = int(row["_line"]), row["image"]
    problem = _name_problem(name, first_line, first_name)
    if problem:
      problems.append((line, problem))
    elif name:
      first_line[name], first_name[_same_file(name)] = line, name
    mos, problem = common.label_problem(row["mos"])
    if problem:
      problems.append((line, f"mos {row['mos']!r} {problem}"))
    split = row["split"] if with_split else ""
    if with_split and split not in common.SPLITS:
      problems.append((line, f"split {split!r} is not one of {list(common.SPLITS)}"))
    out.append((name, mos, split))
  if problems:
    raise LabelFileError.of_rows(f"{len(problems)} problem(s) in the labels CSV {path} (columns "
                                 "image,mos[,split]):", path, problems)
  if not with_split:
    split_of = common.seeded_split([name for name, _, _ in out], FRACTIONS, split_seed)
    out = [(name, mos, split_of[name]) for name, mos, _ in out]
  return out


def _same_file(name: str) -> str:
  """A key equal for names of one file on any file system: `./` and `//` dropped, case folded
  (macOS and Windows ignore case), Unicode composed (macOS ignores the difference)."""
  return unicodedata.normalize("NFC", os.path.normpath(name)).casefold()


def _name_problem(name: str, first_line: dict[str, int], first_name: dict[str, str]) -> str:
  """What is wrong with image `name` given the names before it ('' if nothing)."""
  if not name:
    return "empty `image` value"
  if name in first_line:
    return f"image {name!r} is listed again (first on line {first_line[name]})"
  other = first_name.get(_same_file(name))
  if other is None:
    return ""
  line = first_line[other]
  if os.path.normpath(name) == os.path.normpath(other):
    return f"image {name!r} is the same file as {other!r} (line {line}); drop one"
  return (f"image {name!r} is the same file as {other!r} (line {line}) on case-insensitive file "
          "systems (macOS, Windows); rename or drop one")
