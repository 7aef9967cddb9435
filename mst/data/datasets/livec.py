"""LIVE In the Wild Image Quality Challenge (LIVE Challenge, "LIVEC"): 1,162 authentically
distorted photos rated on 0-100, built from `ChallengeDB_release.zip` (zipped or extracted)."""

import re

from mst.data.datasets import common
from mst.data.datasets import iqa

NAMES_MAT = "Data/AllImages_release.mat"
MOS_MAT = "Data/AllMOS_release.mat"
STD_MAT = "Data/AllStdDev_release.mat"
IMAGES_DIR = "Images"
TRAINING_IMAGES = 7  # t1.bmp ... t7.bmp, listed first: the raters' practice images
_TRAINING_NAME = re.compile(r"t\d+\.bmp", re.IGNORECASE)

_INSTRUCTIONS = f"""\
Download ChallengeDB_release.zip (https://live.ece.utexas.edu/research/ChallengeDB/index.html)
into the manual dir; keep it zipped, or extract it so that the manual dir (or a folder directly
below it, e.g. ChallengeDB_release/) holds
  {NAMES_MAT}, {MOS_MAT}, {STD_MAT}
  {IMAGES_DIR}/<image>.bmp|.JPG   (and {IMAGES_DIR}/trainingImages/t1.bmp ..., not used)
"""


class Livec(iqa.IqaBuilder):
  """LIVE Challenge without its 7 training images; `full` and a seeded 80/20 train/test split."""
  name = "livec"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  HOMEPAGE = "https://live.ece.utexas.edu/research/ChallengeDB/index.html"
  DESCRIPTION = f"""\
LIVE In the Wild Image Quality Challenge (Ghadiyaram and Bovik 2016): 1,162 photos from mobile
devices with authentic distortions, rated by ~8,100 crowd workers. `mos` is `AllMOS_release` (0-100,
higher is better) and `std` the ratings' standard deviation (`AllStdDev_release`); `name` is the
file name in `{IMAGES_DIR}/` (`AllImages_release`). The {TRAINING_IMAGES} training images the
label files list first (`trainingImages/t*.bmp`) are dropped, as everyone does. Splits: `full` (all
1,162, the cross-dataset protocol) and a seeded 80/20 `train`/`test` split of the image names."""
  CITATION = """\
@article{ghadiyaram2016massive,
  title={Massive online crowdsourced study of subjective and objective picture quality},
  author={Ghadiyaram, Deepti and Bovik, Alan C},
  journal={IEEE Transactions on Image Processing}, volume={25}, number={1}, pages={372--387},
  year={2016}}"""

  def _label_features(self):
    return {
        "mos": common.mos_feature("Mean opinion score, 0-100, higher is better."),
        "std": common.mos_feature("Standard deviation of the ratings, 0-100 scale."),
    }

  def _read_rated(self, manual_dir):
    source = common.open_download(manual_dir, MOS_MAT, _INSTRUCTIONS)
    names_mat, names_at = self._mat(source, NAMES_MAT, ("AllImages_release",))
    names = iqa.mat_strings(names_at, "AllImages_release", names_mat["AllImages_release"])
    columns = []
    for path, key in ((MOS_MAT, "AllMOS_release"), (STD_MAT, "AllStdDev_release")):
      mat, where = self._mat(source, path, (key,))
      columns.append(iqa.mat_numbers(where, key, mat[key], len(names)))
    practice = names[:TRAINING_IMAGES]
    if not all(_TRAINING_NAME.fullmatch(n) for n in practice):
      raise ValueError(f"{names_at}: the first {TRAINING_IMAGES} names should be the training "
                       f"images t1.bmp ... t{TRAINING_IMAGES}.bmp, not {practice}")
    entries = [common.Entry(name=name, path=f"{IMAGES_DIR}/{name}",
                            labels={"mos": mos, "std": std})
               for name, mos, std in list(zip(names, *columns))[TRAINING_IMAGES:]]
    return source, entries

