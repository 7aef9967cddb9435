"""LIVE Image Quality Assessment Database, release 2: 779 distorted images made from 29 references
with 5 distortion types, rated as DMOS, built from the download (`dmos.mat`, `refnames_all.mat`
and the five distortion folders; zipped or extracted)."""

import os

import tensorflow_datasets as tfds

from mst.data.datasets import common
from mst.data.datasets import iqa

DMOS_MAT = "dmos.mat"
REFNAMES_MAT = "refnames_all.mat"
# The distortion folders and their image counts, in the order of dmos.mat's columns.
FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
ROWS = sum(count for _, count in FOLDERS)  # 982
MOS_FROM_DMOS = 100.0  # mos = MOS_FROM_DMOS - dmos

_INSTRUCTIONS = f"""\
Download LIVE IQA release 2 (https://live.ece.utexas.edu/research/quality/subjective.htm) into
the manual dir; extract it (or keep its zip) so that the manual dir (or a folder directly below
it, e.g. databaserelease2/) holds
  {DMOS_MAT}   (dmos, orgs: 1 x {ROWS})
  {REFNAMES_MAT}   (refnames_all: 1 x {ROWS})
  {", ".join(f"{f}/" for f, _ in FOLDERS)}   (each with img1.bmp ...)
"""


class Live(iqa.IqaBuilder):
  """LIVE IQA release 2 without the reference copies; `full` and a seeded 80/20 train/test split
  by reference image."""
  name = "live"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  HOMEPAGE = "https://live.ece.utexas.edu/research/quality/subjective.htm"
  DESCRIPTION = f"""\
LIVE IQA release 2 (Sheikh et al. 2006): images made from 29 reference images with JPEG2000,
JPEG, white noise, Gaussian blur and fast-fading distortions. `{DMOS_MAT}` holds `dmos` and `orgs`
for {ROWS} images in the folder order {", ".join(f"{f} ({n})" for f, n in FOLDERS)};
`{REFNAMES_MAT}` each one's reference. Rows with `orgs == 1` are copies of the references
(dmos 0) and are left out: 779 distorted images remain. `dmos` is the raw difference MOS (higher
is worse, about 0-100); `mos = {MOS_FROM_DMOS:g} - dmos`, so higher is better like every mst
`mos` (a shift and sign flip: correlations with it are those with dmos, negated). `name` is the
path in the download (`jpeg/img3.bmp`: the file names repeat across folders), `reference` the
reference's file name without `.bmp`, `distortion` the folder. Splits: `full` (all 779, the
cross-dataset protocol) and a seeded 80/20 `train`/`test` split of the 29 references."""
  CITATION = """\
@article{sheikh2006statistical,
  title={A statistical evaluation of recent full reference image quality assessment algorithms},
  author={Sheikh, Hamid R and Sabir, Muhammad F and Bovik, Alan C},
  journal={IEEE Transactions on Image Processing}, volume={15}, number={11}, pages={3440--3451},
  year={2006}}"""

  def _label_features(self):
    return {
        "mos": common.mos_feature(f"{MOS_FROM_DMOS:g} - dmos: higher is better."),
        "dmos": common.mos_feature("Difference mean opinion score as shipped, higher is worse."),
        "reference": iqa.reference_feature("the reference's file name without .bmp."),
        "distortion": tfds.features.Text(
            doc=f"The distortion's folder: {', '.join(f for f, _ in FOLDERS)}."),
    }

  def _read_rated(self, manual_dir):
    source = common.open_download(manual_dir, DMOS_MAT, _INSTRUCTIONS)
    mat, where = self._mat(source, DMOS_MAT, ("dmos", "orgs"))
    dmos = iqa.mat_numbers(where, "dmos", mat["dmos"], ROWS)
    orgs = iqa.mat_numbers(where, "orgs", mat["orgs"], ROWS)
    mat, names_at = self._mat(source, REFNAMES_MAT, ("refnames_all",))
    references = iqa.mat_strings(names_at, "refnames_all", mat["refnames_all"], ROWS)
    names = [f"{folder}/img{i}.bmp" for folder, count in FOLDERS for i in range(1, count + 1)]
    entries = [common.Entry(name=name, labels={
        "mos": MOS_FROM_DMOS - value, "dmos": value,
        "reference": os.path.splitext(reference)[0], "distortion": name.split("/")[0]})
               for name, value, org, reference in zip(names, dmos, orgs, references) if org != 1]
    self.info.metadata["reference_copies_left_out"] = int((orgs == 1).sum())
    return source, entries
