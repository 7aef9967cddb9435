"""TID2013: 3,000 images made from 25 references with 24 distortion types at 5 levels, MOS on 0-9,
built from the extracted download (`mos_with_names.txt`, `mos_std.txt`, `distorted_images/`)."""

import re

from mst.data.datasets import common
from mst.data.datasets import iqa

LABELS_TXT = "mos_with_names.txt"
STD_TXT = "mos_std.txt"
IMAGES_DIR = "distorted_images"
_NAME = re.compile(r"i(\d{1,4})_(\d{1,4})_(\d{1,4})\.bmp", re.IGNORECASE)

_INSTRUCTIONS = f"""\
Download TID2013 (https://www.ponomarenko.info/tid2013.htm) and extract it into the manual dir
so that it (or a folder directly below it, e.g. tid2013/) holds
  {LABELS_TXT}   (`<mos> <image name>` per line)
  {STD_TXT}   (one standard deviation per line, same order)
  {IMAGES_DIR}/i01_01_1.bmp ...   (names match whatever their case)
"""


class Tid2013(iqa.IqaBuilder):
  """TID2013; `full` and a seeded 80/20 train/test split by reference image."""
  name = "tid2013"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  HOMEPAGE = "https://www.ponomarenko.info/tid2013.htm"
  DESCRIPTION = f"""\
TID2013 (Ponomarenko et al. 2015): 3,000 images, each of 25 reference images with 24 distortion
types at 5 levels. `mos` is the first column of `{LABELS_TXT}` (0-9, higher is better) and `std`
the line of `{STD_TXT}` in the same order. `name` is the image name as `{LABELS_TXT}` spells it
(`iXX_YY_Z.bmp`); the files in `{IMAGES_DIR}/` are matched whatever their case (the download has
`I25_01_1.BMP` and `.BMP` extensions where the list says `i25_01_1.bmp`). `reference` is `IXX`,
`distortion` (1-24) and `level` (1-5) are what the name spells. Splits: `full` (all 3,000, the
cross-dataset protocol) and a seeded 80/20 `train`/`test` split of the 25 references."""
  CITATION = """\
@article{ponomarenko2015image,
  title={Image database TID2013: Peculiarities, results and perspectives},
  author={Ponomarenko, Nikolay and Jin, Lina and Ieremeiev, Oleg and Lukin, Vladimir and
          Egiazarian, Karen and Astola, Jaakko and Vozel, Benoit and Chehdi, Kacem and
          Carli, Marco and Battisti, Federica and Kuo, C-C Jay},
  journal={Signal Processing: Image Communication}, volume={30}, pages={57--77}, year={2015}}"""

  def _label_features(self):
    return {
        "mos": common.mos_feature("Mean opinion score, 0-9, higher is better."),
        "std": common.mos_feature(f"Standard deviation of the MOS ({STD_TXT})."),
        **iqa.numbered_distortions("I01 ... I25.", 24, 5),
    }

  def _read_rated(self, manual_dir):
    source = common.open_download(manual_dir, LABELS_TXT, _INSTRUCTIONS)
    lines, where = self._text_lines(source, LABELS_TXT)
    stds, std_where = self._text_lines(source, STD_TXT)
    if len(stds) != len(lines):
      raise ValueError(f"{std_where}: {len(stds)} values for the {len(lines)} images of {where} "
                       "(one per line, in the same order)")
    entries = []
    for (line, text), (std_line, std) in zip(lines, stds):
      fields = text.split()
      match = _NAME.fullmatch(fields[-1]) if len(fields) == 2 else None
      if match is None:
        raise common.LabelFileError.at(where, line, "expected `<mos> <image name iXX_YY_Z.bmp>`, "
                                                    f"got {text!r}")
      reference, distortion, level = match.groups()
      entries.append(common.Entry(name=fields[1], path=f"{IMAGES_DIR}/{fields[1]}", labels={
          "mos": common.finite_label(fields[0], where, line, "mos"),
          "std": common.finite_label(std, std_where, std_line, "std"),
          "reference": f"I{reference}", "distortion": int(distortion), "level": int(level)}))
    return source, entries

