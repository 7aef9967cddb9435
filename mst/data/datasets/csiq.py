"""CSIQ: 866 distorted images made from 30 references with 6 distortion types, rated as DMOS on
0-1, built from the download (`csiq.DMOS.xlsx` and `dst_imgs/`, the images zipped or extracted);
the workbook is read with openpyxl."""

import os

import numpy as np
import tensorflow_datasets as tfds

from mst.data.datasets import common
from mst.data.datasets import iqa

LABELS_XLSX = "csiq.DMOS.xlsx"
SHEET = "all_by_image"
IMAGES_DIR = "dst_imgs"
IMAGES_ZIP = "dst_imgs.zip"
COLUMNS = ("image", "dst_type", "dst_lev", "dmos_std", "dmos")
HEADER_ROWS = 10  # the header is on row 4; it is looked for in the first rows
# The workbook's dst_type (lower case, spaces removed) -> (the folder in dst_imgs/, the file
# name's token): dst_imgs/awgn/1600.AWGN.1.png.
DISTORTIONS = {"noise": ("awgn", "AWGN"), "awgn": ("awgn", "AWGN"), "jpeg": ("jpeg", "JPEG"),
               "jpeg2000": ("jpeg2000", "jpeg2000"), "fnoise": ("fnoise", "fnoise"),
               "blur": ("blur", "BLUR"), "contrast": ("contrast", "contrast")}
MOS_FROM_DMOS = 1.0  # mos = MOS_FROM_DMOS - dmos

_INSTRUCTIONS = f"""\
Download CSIQ (https://s2.smu.edu/~eclarson/csiq.html; {LABELS_XLSX} and the distorted images)
into the manual dir so that it (or a folder directly below it) holds
  {LABELS_XLSX}   (sheet {SHEET}, header on row 4: {", ".join(COLUMNS)})
  {IMAGES_DIR}/<type>/<image>.<TYPE>.<level>.png, e.g. {IMAGES_DIR}/awgn/1600.AWGN.1.png
    (or {IMAGES_ZIP} as it ships)
"""


class Csiq(iqa.IqaBuilder):
  """CSIQ; `full` and a seeded 80/20 train/test split by reference image."""
  name = "csiq"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  HOMEPAGE = "https://s2.smu.edu/~eclarson/csiq.html"
  DESCRIPTION = f"""\
CSIQ (Larson and Chandler 2010): 866 images made from 30 reference images with additive white
noise, JPEG, JPEG2000, pink noise, blur and contrast change at 4-5 levels. Labels: sheet `{SHEET}`
of `{LABELS_XLSX}` (header on row 4; `image` is the reference, sometimes a number such as 1600).
`dmos` is the raw difference MOS (0-1, higher is worse) and `dmos_std` its standard deviation;
`mos = {MOS_FROM_DMOS:g} - dmos`, so higher is better like every mst `mos` (correlations with it
are those with dmos, negated). `name` is the file name (`1600.AWGN.1.png`, in `{IMAGES_DIR}/awgn/`),
`reference` the `image` value, `distortion` the folder (awgn, jpeg, jpeg2000, fnoise, blur,
contrast) and `level` `dst_lev`. Splits: `full` (all 866, the cross-dataset protocol) and a seeded
80/20 `train`/`test` split of the 30 references."""
  CITATION = """\
@article{larson2010most,
  title={Most apparent distortion: full-reference image quality assessment and the role of
         strategy},
  author={Larson, Eric C and Chandler, Damon M},
  journal={Journal of Electronic Imaging}, volume={19}, number={1}, pages={011006}, year={2010}}"""

  def _label_features(self):
    return {
        "mos": common.mos_feature(f"{MOS_FROM_DMOS:g} - dmos: higher is better."),
        "dmos": common.mos_feature("Difference mean opinion score as shipped, 0-1, higher is "
                                   "worse."),
        "dmos_std": common.mos_feature("Standard deviation of the DMOS."),
        "reference": iqa.reference_feature("the workbook's `image` (src_imgs/<id>.png)."),
        "distortion": tfds.features.Text(
            doc=f"The distortion's folder in {IMAGES_DIR}/: awgn, jpeg, jpeg2000, fnoise, blur, "
                "contrast."),
        "level": tfds.features.Scalar(np.int32, doc="Distortion level (dst_lev), 1 (mild) up."),
    }

  def _read_rated(self, manual_dir):
    labels = common.open_download(manual_dir, LABELS_XLSX, _INSTRUCTIONS)
    data, where = self._label_file(labels, LABELS_XLSX)
    entries = []
    for row, values in _read_sheet(data, where):
      values["_line"] = f"{SHEET} row {row}"
      kind = str(values["dst_type"]).lower().replace(" ", "")
      if kind not in DISTORTIONS:
        raise common.LabelFileError.at(where, values["_line"], f"unknown dst_type "
                                       f"{values['dst_type']!r}; known: {sorted(DISTORTIONS)}")
      folder, token = DISTORTIONS[kind]
      number = {c: common.to_float(values, c, where) for c in ("dmos", "dmos_std")}
      level = common.whole_label(values["dst_lev"], where, values["_line"], "dst_lev")
      reference = _image_id(values["image"])
      name = f"{reference}.{token}.{level}.png"
      entries.append(common.Entry(name=name, path=f"{folder}/{name}", labels={
          "mos": MOS_FROM_DMOS - number["dmos"], "dmos": number["dmos"],
          "dmos_std": number["dmos_std"], "reference": reference, "distortion": folder,
          "level": level}))
    return _image_source(manual_dir), entries


def _image_source(manual_dir: str):
  """The extracted `dst_imgs/` folder if there is one (paths `<folder>/<name>`), else the zip (by
  file name); names match whatever their case."""
  folder = common.find(manual_dir, IMAGES_DIR)
  if folder is not None and os.path.isdir(folder):
    return common.FolderSource(folder, ignore_case=True)
  return common.ZipSource(common.require(manual_dir, IMAGES_ZIP, _INSTRUCTIONS), ignore_case=True)


def _read_sheet(data: bytes, where: str):
  """Yields (row number, {column: value}) for the rows below the header of sheet `SHEET`."""
  book = common.load_workbook(where, data)
  try:
    if SHEET not in book.sheetnames:
      raise ValueError(f"{where}: no sheet {SHEET!r}; the sheets are {book.sheetnames}")
    rows = book[SHEET].iter_rows(values_only=True)
    for number, cells in enumerate(rows, start=1):
      header = [str(c).strip().lower() if c is not None else "" for c in cells]
      if all(c in header for c in COLUMNS):
        break
      if number == HEADER_ROWS:
        raise ValueError(f"{where}: sheet {SHEET} has no header row naming {list(COLUMNS)} in "
                         f"its first {HEADER_ROWS} rows (CSIQ's is row 4)")
    else:
      raise ValueError(f"{where}: sheet {SHEET} has no header row naming {list(COLUMNS)}")
    index = {c: header.index(c) for c in COLUMNS}
    for row, cells in enumerate(rows, start=number + 1):
      values = {c: cells[i] if i < len(cells) else None for c, i in index.items()}
      if values["image"] is not None and str(values["image"]).strip():
        yield row, values
  finally:
    book.close()


def _image_id(value) -> str:
  """The `image` cell as the reference id: 1600 (a number cell) -> `1600`."""
  if isinstance(value, float) and value.is_integer():
    value = int(value)
  return str(value).strip()

