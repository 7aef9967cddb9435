"""KADID-10k: 10,125 images made from 81 references with 25 distortion types at 5 levels, rated on
1-5, built from `kadid10k.zip` (zipped or extracted)."""

import re

from mst.data.datasets import common
from mst.data.datasets import iqa

LABELS_CSV = "dmos.csv"
IMAGES_DIR = "images"
COLUMNS = ("dist_img", "ref_img", "dmos", "var")
_NAME = re.compile(r"(I\d{1,4})_(\d{1,4})_(\d{1,4})\.png", re.IGNORECASE)

_INSTRUCTIONS = f"""\
Download kadid10k.zip (http://database.mmsp-kn.de/kadid-10k-database.html) into the manual dir;
keep it zipped, or extract it so that the manual dir (or a folder directly below it, e.g.
kadid10k/) holds
  {LABELS_CSV}   (columns {",".join(COLUMNS)})
  {IMAGES_DIR}/I01_01_01.png ... {IMAGES_DIR}/I81_25_05.png   (and the references I01.png ...)
"""


class Kadid10k(iqa.IqaBuilder):
  """KADID-10k; `full` and a seeded 80/20 train/test split by reference image."""
  name = "kadid10k"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  HOMEPAGE = "http://database.mmsp-kn.de/kadid-10k-database.html"
  DESCRIPTION = f"""\
KADID-10k (Lin et al. 2019): 10,125 images, each of 81 reference images (`I01` ... `I81`) with 25
distortion types at 5 levels, rated by 30 crowd workers per image. `mos` is the `dmos` column of
`{LABELS_CSV}`: despite its name a mean opinion score on 1-5, higher is better (used as it is);
`var` is the ratings' variance. `name` is the distorted image's file name (`Ixx_yy_zz.png`),
`reference` its reference id (`Ixx`), `distortion` the type (1-25) and `level` (1-5) the ones the
name spells. Splits: `full` (all 10,125, the cross-dataset protocol) and a seeded 80/20
`train`/`test` split of the 81 references (no reference in both)."""
  CITATION = """\
@inproceedings{lin2019kadid,
  title={KADID-10k: A Large-scale Artificially Distorted IQA Database},
  author={Lin, Hanhe and Hosu, Vlad and Saupe, Dietmar},
  booktitle={QoMEX}, pages={1--3}, year={2019}}"""

  def _label_features(self):
    return {
        "mos": common.mos_feature(f"Mean opinion score, 1-5, higher is better (the `dmos` "
                                  f"column of {LABELS_CSV}, a MOS despite its name)."),
        "var": common.mos_feature("Variance of the ratings, 1-5 scale."),
        **iqa.numbered_distortions("I01 ... I81 (its file name without .png).", 25, 5),
    }

  def _read_rated(self, manual_dir):
    source = common.open_download(manual_dir, LABELS_CSV, _INSTRUCTIONS)
    data, where = self._label_file(source, LABELS_CSV)
    entries = []
    for row in common.read_csv(where, COLUMNS, data=data):
      name, match = row["dist_img"], _NAME.fullmatch(row["dist_img"])
      if match is None:
        raise common.LabelFileError.at(
            where, row["_line"],
            f"dist_img {name!r} is not a distorted image name Ixx_yy_zz.png (reference, type, "
            "level)")
      reference, distortion, level = match.groups()
      entries.append(common.Entry(name=name, path=f"{IMAGES_DIR}/{name}", labels={
          "mos": common.to_float(row, "dmos", where), "var": common.to_float(row, "var", where),
          "reference": reference.upper(), "distortion": int(distortion), "level": int(level)}))
    return source, entries
