"""KonIQ-10k: 10,073 in-the-wild 1024x768 JPEGs with 5-point ratings, built from the manual download
(labels CSVs plus `koniq10k_1024x768.zip`, zipped or extracted).

`mos` is on 0-100: the `MOS` column of koniq10k_distributions_sets.csv, the scale the released
koniq_ckpt.npz predicts on and the one KonIQ's authors train their own models on. The 1-5 MOS of
the scores CSV and the 0-100 z-score MOS are kept as features (`mos_1to5`, `mos_zscore`).
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from mst.data.datasets import common

SCORES_CSV = "koniq10k_scores_and_distributions.csv"
SETS_CSV = "koniq10k_distributions_sets.csv"
IMAGES_ZIP = "koniq10k_1024x768.zip"
IMAGES_DIR = "1024x768"
# How the `set` column of koniq10k_distributions_sets.csv spells the splits (short forms tolerated).
SET_TO_SPLIT = {"training": "train", "train": "train", "validation": "validation",
                "val": "validation", "test": "test"}
BINS = 5

_INSTRUCTIONS = f"""\
Download from http://database.mmsp-kn.de/koniq-10k-database.html into the manual dir:
  {IMAGES_ZIP}   (keep it zipped, or extract it so that {IMAGES_DIR}/<image>.jpg exists)
  {SCORES_CSV}
  {SETS_CSV}   (the official split; from github.com/subpic/koniq, metadata/)
"""


class Koniq10k(common.ImageQualityBuilder):
  """KonIQ-10k with the official 7058 / 1000 / 2015 train / validation / test split."""
  name = "koniq10k"
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "First release.",
      "1.1.0": "`mos` on 0-100 (MOS of the sets CSV, the released model's scale); the 1-5 MOS "
               "is `mos_1to5`.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  HOMEPAGE = "http://database.mmsp-kn.de/koniq-10k-database.html"
  DESCRIPTION = f"""\
KonIQ-10k (Hosu et al. 2020): 10,073 in-the-wild images at 1024x768, each rated by ~120 crowd
workers on a 1-5 scale. `mos` is the `MOS` column of {SETS_CSV}, on a 0-100 scale (the scale
of the released MUSIQ koniq_ckpt.npz); `mos_1to5` is the `MOS` column of {SCORES_CSV}, on the 1-5
scale; `mos_zscore` is `MOS_zscore` (0-100, from z-scored ratings); `sd` is the ratings' standard
deviation (1-5 scale); `counts` are the votes c1..c5 and `dist` the same normalised to sum to 1.
Splits are the official ones, the `set` column of {SETS_CSV} (training / validation / test:
7058 / 1000 / 2015). Images are the original JPEG bytes; some are greyscale."""
  CITATION = """\
@article{hosu2020koniq,
  title={KonIQ-10k: An ecologically valid database for deep learning of blind image quality
         assessment},
  author={Hosu, Vlad and Lin, Hanhe and Sziranyi, Tamas and Saupe, Dietmar},
  journal={IEEE Transactions on Image Processing}, volume={29}, pages={4041--4056}, year={2020}}"""

  def _label_features(self):
    return {
        "mos": common.mos_feature(f"Mean opinion score on 0-100 (MOS of {SETS_CSV})."),
        "mos_1to5": common.mos_feature("Mean opinion score, 1 (bad) to 5 (excellent)."),
        "mos_zscore": common.mos_feature("MOS from z-scored ratings, rescaled to 0-100."),
        "sd": common.mos_feature("Standard deviation of the ratings, 1-5 scale."),
        "dist": tfds.features.Tensor(shape=(BINS,), dtype=np.float32,
                                     doc="Share of votes for scores 1..5; sums to 1."),
        "counts": tfds.features.Tensor(shape=(BINS,), dtype=np.int32,
                                       doc="Number of votes for scores 1..5 (c1..c5)."),
    }

  def _read_entries(self, manual_dir):
    scores_path = common.require(manual_dir, SCORES_CSV, _INSTRUCTIONS)
    sets_path = common.require(manual_dir, SETS_CSV, _INSTRUCTIONS)
    source = _image_source(manual_dir)
    split_of, mos_of = _read_sets(sets_path)
    splits = {split: [] for split in common.SPLITS}
    scored = set()
    for row in common.read_csv(scores_path, ["image_name", "MOS", "SD", "MOS_zscore"] +
                               [f"c{i}" for i in range(1, BINS + 1)]):
      name = row["image_name"]
      scored.add(name)
      split = split_of.get(name)
      if split is None:
        self._skipped.add("unassigned", name, f"not in {SETS_CSV}")
        continue
      labels = _labels(row, scores_path, mos_of[name])
      if labels is None:
        self._skipped.add(split, name, "no votes (c1..c5 are all 0)")
        continue
      splits[split].append(common.Entry(name=name, labels=labels))
    for name in sorted(set(split_of) - scored):
      self._skipped.add(split_of[name], name, f"not in {SCORES_CSV}")
    if mos_of and max(mos_of.values()) <= 5:
      raise ValueError(f"{sets_path}: every MOS is <= 5, but this file's MOS is on 0-100 (the "
                       f"1-5 MOS is in {SCORES_CSV}): is it the right file?")
    return source, splits


def _image_source(manual_dir: str):
  """The extracted `1024x768/` folder if there is one, else the zip."""
  folder = common.find(manual_dir, IMAGES_DIR)
  if folder is None:
    folder = common.find(manual_dir, os.path.join(IMAGES_ZIP[:-4], IMAGES_DIR))
  if folder is not None and os.path.isdir(folder):
    return common.FolderSource(folder)
  return common.ZipSource(common.require(manual_dir, IMAGES_ZIP, _INSTRUCTIONS))


def _read_sets(path: str) -> tuple[dict[str, str], dict[str, float]]:
  """(image_name -> split from the `set` column, image_name -> the 0-100 `MOS`)."""
  split_of, mos_of = {}, {}
  for row in common.read_csv(path, ["image_name", "MOS", "set"]):
    split = SET_TO_SPLIT.get(row["set"].lower())
    if split is None:
      raise common.LabelFileError.at(path, row["_line"], f"unknown set {row['set']!r}; expected "
                                                         f"one of {sorted(SET_TO_SPLIT)}")
    split_of[row["image_name"]] = split
    mos_of[row["image_name"]] = common.to_float(row, "MOS", path)
  return split_of, mos_of


def _labels(row: dict[str, str], path: str, mos: float) -> dict | None:
  """The label features of one row of the scores CSV (`mos` from the sets CSV), or None if it
  has no votes."""
  counts = np.array([common.whole_label(row[f"c{i}"], path, row["_line"], f"c{i}")
                     for i in range(1, BINS + 1)], dtype=np.int64)
  if counts.sum() <= 0:
    return None
  return {
      "mos": mos,
      "mos_1to5": common.to_float(row, "MOS", path),
      "mos_zscore": common.to_float(row, "MOS_zscore", path),
      "sd": common.to_float(row, "SD", path),
      "dist": (counts / counts.sum()).astype(np.float32),
      "counts": counts.astype(np.int32),
  }

