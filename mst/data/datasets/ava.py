"""AVA: ~255k photos from dpchallenge.com with 10-point aesthetic vote histograms, built from the
manual download (`AVA.txt`, `images/`, `aesthetics_image_lists/generic_test.jpgl`)."""

import os

import numpy as np
import tensorflow_datasets as tfds

from mst.data.datasets import common

LABELS_TXT = "AVA.txt"
IMAGES_DIR = "images"
TEST_LIST = os.path.join("aesthetics_image_lists", "generic_test.jpgl")
BINS = 10
NUM_COLUMNS = 15
SPLIT_SEED = 0
VALIDATION_FRACTION = 0.05

_INSTRUCTIONS = f"""\
Download AVA (e.g. through github.com/imfing/ava_downloader) into the manual dir so that it holds
  {LABELS_TXT}
  {IMAGES_DIR}/<image id>.jpg
  {TEST_LIST}
(a single top folder around them, e.g. AVA_dataset/, is fine).
"""


class Ava(common.ImageQualityBuilder):
  """AVA with the official test list and a seeded 5% validation hold-out from the rest (train on
  `train+validation` for every non-test image, as the paper)."""
  name = "ava"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  HOMEPAGE = "https://github.com/imfing/ava_downloader"
  DESCRIPTION = f"""\
AVA (Murray et al. 2012): aesthetic ratings of ~255k photos, each voted on by ~200 people on a
1-10 scale. From `{LABELS_TXT}` (15 space-separated columns: index, image id, vote counts for
scores 1..10, two semantic tag ids, challenge id): `counts` are the votes, `dist` the same
normalised to sum to 1, `mos` = sum(i * count_i) / sum(count_i) on the 1-10 scale, `num_votes`
their sum. Splits: `test` =
the ids in `{TEST_LIST}`; of the rest, `validation` is a seeded {VALIDATION_FRACTION:.0%} hold-out
(numpy RandomState({SPLIT_SEED}) permutation of the sorted image names) and `train` the remainder.
The paper trains on every non-test image: the split `train+validation`, which configs/ava.py
trains on by default (the hold-out is for a validation curve, `configs/ava.py:holdout`).
Missing and corrupt images (there are some, e.g. ids 440774, 179118, 371434, 277832, 230701,
729377) are skipped and listed in skipped_images.txt."""
  CITATION = """\
@inproceedings{murray2012ava,
  title={AVA: A large-scale database for aesthetic visual analysis},
  author={Murray, Naila and Marchesotti, Luca and Perronnin, Florent},
  booktitle={CVPR}, pages={2408--2415}, year={2012}}"""

  def _label_features(self):
    return {
        "mos": common.mos_feature("Mean vote, 1-10."),
        "dist": tfds.features.Tensor(shape=(BINS,), dtype=np.float32,
                                     doc="Share of votes for scores 1..10; sums to 1."),
        "counts": tfds.features.Tensor(shape=(BINS,), dtype=np.int32,
                                       doc="Number of votes for scores 1..10."),
        "num_votes": tfds.features.Scalar(np.int32, doc="Total number of votes."),
        "image_id": tfds.features.Scalar(np.int64, doc="AVA image id."),
        "semantic_tags": tfds.features.Tensor(
            shape=(2,), dtype=np.int32, doc="The two semantic tag ids (0: no tag)."),
        "challenge_id": tfds.features.Scalar(np.int32, doc="dpchallenge.com challenge id."),
    }

  def _read_entries(self, manual_dir):
    labels_path = common.require(manual_dir, LABELS_TXT, _INSTRUCTIONS)
    images = common.require(manual_dir, IMAGES_DIR, _INSTRUCTIONS)
    test_ids = read_test_ids(common.require(manual_dir, TEST_LIST, _INSTRUCTIONS))
    rows = read_labels(labels_path)
    rest = [name for name, labels in rows if labels["image_id"] not in test_ids]
    split_of = common.seeded_split(
        rest, [("train", 1 - VALIDATION_FRACTION), ("validation", VALIDATION_FRACTION)],
        SPLIT_SEED)
    splits = {split: [] for split in common.SPLITS}
    for name, labels in rows:
      split = "test" if labels["image_id"] in test_ids else split_of[name]
      if labels["num_votes"] <= 0:
        self._skipped.add(split, name, "no votes")
        continue
      splits[split].append(common.Entry(name=name, labels=labels))
    return common.FolderSource(images), splits


# The columns of AVA.txt, as error messages name them, and the largest value each may hold (stored
# as int32, the image id as int64).
COLUMNS = (("index", 2**63 - 1), ("image id", 2**63 - 1),
           *((f"votes for score {i}", common.INT32_MAX) for i in range(1, BINS + 1)),
           ("semantic tag 1", common.INT32_MAX), ("semantic tag 2", common.INT32_MAX),
           ("challenge id", common.INT32_MAX))


def read_labels(path: str) -> list[tuple[str, dict]]:
  """(file name `<id>.jpg`, label features) per line of AVA.txt; a LabelFileError naming the file,
  the line, the column and the value for a field that is not a whole number in its column's
  range (NaN, inf, 1e39 and 3.5 votes among them) and for a line whose votes sum past int32."""
  out = []
  for line_number, line in enumerate(common.read_text(path).splitlines(), start=1):
    fields = line.split()
    if not fields:
      continue
    if len(fields) != NUM_COLUMNS:
      raise common.LabelFileError.at(path, line_number, f"expected {NUM_COLUMNS} columns, got "
                                                        f"{len(fields)}")
    values = _whole_numbers(fields, path, line_number)
    if sum(values[2:2 + BINS]) > common.INT32_MAX:
      raise common.LabelFileError.at(path, line_number, f"the votes sum to "
                                     f"{sum(values[2:2 + BINS])}, over {common.INT32_MAX}")
    out.append((f"{values[1]}.jpg", _labels(values)))
  return out


def _whole_numbers(fields: list[str], path: str, line: int) -> list[int]:
  """The fields of a line as ints in their columns' ranges, or an error naming the first bad one
  (a fast path for the ~255k good lines, then `common.whole_label` for the message)."""
  try:
    values = [int(field) for field in fields]
    if all(0 <= value <= high for value, (_, high) in zip(values, COLUMNS)):
      return values
  except ValueError:
    pass
  return [common.whole_label(field, path, line, column, high)
          for field, (column, high) in zip(fields, COLUMNS)]


def _labels(values: list[int]) -> dict:
  counts = np.array(values[2:2 + BINS], dtype=np.int64)
  total = int(counts.sum())
  scores = np.arange(1, BINS + 1)
  return {
      "mos": float((scores * counts).sum() / total) if total else 0.0,
      "dist": (counts / max(total, 1)).astype(np.float32),
      "counts": counts.astype(np.int32),
      "num_votes": total,
      "image_id": values[1],
      "semantic_tags": np.array(values[12:14], dtype=np.int32),
      "challenge_id": values[14],
  }


def read_test_ids(path: str) -> set[int]:
  """The image ids of the official test list, one per line (`<id>` or `<id>.jpg`)."""
  ids = set()
  for number, line in enumerate(common.read_text(path).splitlines(), start=1):
    if line.strip():
      field = line.split()[0].removesuffix(".jpg")
      ids.add(common.whole_label(field, path, number, "image id", 2**63 - 1))
  return ids
