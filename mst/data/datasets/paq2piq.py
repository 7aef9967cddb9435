"""PaQ-2-PiQ (the FLIVE database): 39,810 in-the-wild pictures with 0-100 quality scores, built from
the manual download (`database/` with its label CSVs and image subfolders)."""

import os

from absl import logging

from mst.data.datasets import common

DATABASE = "database"
LABELS_CSV = os.path.join(DATABASE, "labels_image.csv")
TEST_CSV = os.path.join(DATABASE, "labels640.csv")
VALIDATION_CSV = os.path.join(DATABASE, "labels=640_padded.csv")
SPLIT_SEED = 0
VALIDATION_FRACTION = 0.2

_INSTRUCTIONS = f"""\
Download the FLIVE database (github.com/niu-haoran/FLIVE_Database, images and labels) into the
manual dir so that it holds
  {LABELS_CSV}   (columns name,mos)
  {TEST_CSV}   (the full-size test images; column name_image)
  {VALIDATION_CSV}   (optional: its is_valid column gives the official validation set)
  {DATABASE}/<name> for every name of labels_image.csv, e.g. {DATABASE}/voc_emotic_ava/<file>.jpg
"""


class Paq2piq(common.ImageQualityBuilder):
  """PaQ-2-PiQ images (not patches) with the full-size validation and test sets."""
  name = "paq2piq"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  HOMEPAGE = "https://github.com/niu-haoran/FLIVE_Database"
  DESCRIPTION = f"""\
PaQ-2-PiQ (Ying et al. 2020): 39,810 pictures with `mos` on a 0-100 scale, from `{LABELS_CSV}`;
`name` is the path below `{DATABASE}/` (e.g. `voc_emotic_ava/<file>.jpg`). The images are stored
at their original size, so validation and test are the 'full-size' sets the MUSIQ paper reports.
Splits: `test` = the images listed in `{TEST_CSV}` (1,827 pictures larger than 640 px);
`validation` = the rows flagged `is_valid` in `{VALIDATION_CSV}` (the official ~7.7k validation
set) when that file is present, otherwise a seeded {VALIDATION_FRACTION:.0%} hold-out of the
non-test images (numpy RandomState({SPLIT_SEED}) permutation of the sorted names; which rule was
used is in `info.metadata['validation_rule']`); `train` = the rest. Patch labels
(labels_patch.csv) are not included."""
  CITATION = """\
@inproceedings{ying2020patches,
  title={From patches to pictures (PaQ-2-PiQ): Mapping the perceptual space of picture quality},
  author={Ying, Zhenqiang and Niu, Haoran and Gupta, Praful and Mahajan, Dhruv and
          Ghadiyaram, Deepti and Bovik, Alan},
  booktitle={CVPR}, pages={3575--3585}, year={2020}}"""

  def _label_features(self):
    return {"mos": common.mos_feature("Mean opinion score, 0-100.")}

  def _read_entries(self, manual_dir):
    labels_path = common.require(manual_dir, LABELS_CSV, _INSTRUCTIONS)
    test = set(_names(common.require(manual_dir, TEST_CSV, _INSTRUCTIONS)))
    rows = common.read_csv(labels_path, ["name", "mos"])
    rest = [row["name"] for row in rows if row["name"] not in test]
    split_of = self._validation_rule(manual_dir, rest)
    splits = {split: [] for split in common.SPLITS}
    for row in rows:
      name = row["name"]
      split = "test" if name in test else split_of[name]
      labels = {"mos": common.to_float(row, "mos", labels_path)}
      splits[split].append(common.Entry(name=name, labels=labels))
    database = os.path.dirname(labels_path)
    return common.FolderSource(database), splits

  def _validation_rule(self, manual_dir: str, names: list[str]) -> dict[str, str]:
    """Train or validation for each non-test name, by the official flags when available."""
    path = common.find(manual_dir, VALIDATION_CSV)
    if path is not None:
      valid = {row["name_image"] for row in common.read_csv(path, ["name_image", "is_valid"])
               if row["is_valid"].lower() in ("true", "1")}
      self.info.metadata["validation_rule"] = f"is_valid rows of {VALIDATION_CSV}"
      return {name: "validation" if name in valid else "train" for name in names}
    rule = (f"seeded hold-out: {VALIDATION_FRACTION:.0%} of the non-test images, "
            f"RandomState({SPLIT_SEED})")
    logging.warning("paq2piq: %s not found; validation is a %s", VALIDATION_CSV, rule)
    self.info.metadata["validation_rule"] = rule
    return common.seeded_split(
        names, [("train", 1 - VALIDATION_FRACTION), ("validation", VALIDATION_FRACTION)],
        SPLIT_SEED)


def _names(path: str) -> list[str]:
  """The image names of a PaQ-2-PiQ label CSV (`name_image`, or `name` in labels_image.csv)."""
  rows = common.read_csv(path, [])
  column = "name_image" if rows and "name_image" in rows[0] else "name"
  if rows and column not in rows[0]:
    raise common.LabelFileError.at(path, 1, "no column name_image (nor name); the header is "
                                            f"{[c for c in rows[0] if c != '_line']}")
  return [row[column] for row in rows]
