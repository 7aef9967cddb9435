"""SPAQ: 11,125 smartphone photos with quality and attribute scores, built from the manual download
(`TestImage/` and `Annotations/MOS and Image attribute scores.xlsx`); the `.xlsx` is read with
openpyxl. The `shorter_side_512` config stores its resized images as PNG: lossless, so resizing
adds no compression distortion to a quality dataset."""

import dataclasses
import io
import os

import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from mst.data.datasets import common

LABELS_XLSX = os.path.join("Annotations", "MOS and Image attribute scores.xlsx")
IMAGES_DIR = "TestImage"
ATTRIBUTES = ("Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness")
SPLIT_SEED = 0
TRAIN_FRACTION = 0.8  # train + validation; the rest is test, as the paper's random 80/20
VALIDATION_FRACTION = 0.1  # of the 80%: a hold-out for model selection
SPLIT_FRACTIONS = (("train", TRAIN_FRACTION * (1 - VALIDATION_FRACTION)),
                   ("validation", TRAIN_FRACTION * VALIDATION_FRACTION),
                   ("test", 1 - TRAIN_FRACTION))

_INSTRUCTIONS = f"""\
Download SPAQ (https://github.com/h4nwei/SPAQ) and extract it into the manual dir so that it holds
  {IMAGES_DIR}/00001.jpg ... {IMAGES_DIR}/11125.jpg
  {LABELS_XLSX}
(a single top folder around them, e.g. SPAQ/, is fine).
"""


@dataclasses.dataclass(eq=False)
class SpaqConfig(tfds.core.BuilderConfig):
  """`shorter_side`: resize so the shorter side has this length (None keeps the originals)."""
  shorter_side: int | None = None


class Spaq(common.ImageQualityBuilder):
  """SPAQ with a seeded 72/8/20 train/validation/test split; originals or shorter side resized to
  512."""
  name = "spaq"
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "First release.",
      "1.1.0": "A validation hold-out (10% of the training 80%); shorter_side_512 stored as "
               "PNG instead of JPEG quality 95.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  HOMEPAGE = "https://github.com/h4nwei/SPAQ"
  BUILDER_CONFIGS = [
      SpaqConfig(name="full", description="The original JPEG bytes, as shipped."),
      SpaqConfig(name="shorter_side_512", shorter_side=512, description=(
          "Resized so the shorter side is 512 px (the MUSIQ paper's preprocessing, following "
          "SPAQ's reference code: bilinear with antialiasing, PIL; the longer side is "
          "int(512 * long / short); images whose shorter side is already <= 512 keep their "
          "original bytes), stored as PNG (lossless: no second compression). Decoded with "
          "TensorFlow (EXIF orientation ignored, as the input pipeline does), so greyscale "
          "images come out as 3-channel PNGs.")),
  ]
  DEFAULT_CONFIG_NAME = "full"
  DESCRIPTION = f"""\
SPAQ (Fang et al. 2020): 11,125 photos from 66 smartphones. `mos` and the attribute scores
(`brightness`, `colorfulness`, `contrast`, `noisiness`, `sharpness`) are on a 0-100 scale, from
`{LABELS_XLSX}`. There is no official split: a numpy RandomState({SPLIT_SEED}) permutation of
the sorted image names gives `test` (the last {1 - TRAIN_FRACTION:.0%}), and of the first
{TRAIN_FRACTION:.0%} (the paper's training share) `validation` is a {VALIDATION_FRACTION:.0%}
hold-out and `train` the rest; `train+validation` is the whole 80%. Some files are corrupt after
extraction: those are skipped and listed in skipped_images.txt."""
  CITATION = """\
@inproceedings{fang2020perceptual,
  title={Perceptual quality assessment of smartphone photography},
  author={Fang, Yuming and Zhu, Hanwei and Zeng, Yan and Ma, Kede and Wang, Zhou},
  booktitle={CVPR}, pages={3677--3686}, year={2020}}"""

  def _label_features(self):
    features = {"mos": common.mos_feature("Mean opinion score, 0-100.")}
    for attribute in ATTRIBUTES:
      features[attribute.lower()] = common.mos_feature(f"{attribute} score, 0-100.")
    return features

  def _read_entries(self, manual_dir):
    labels_path = common.require(manual_dir, LABELS_XLSX, _INSTRUCTIONS)
    images = common.require(manual_dir, IMAGES_DIR, _INSTRUCTIONS)
    rows = read_labels(labels_path)
    split_of = common.seeded_split([name for name, _ in rows], SPLIT_FRACTIONS, SPLIT_SEED)
    splits = {split: [] for split, _ in SPLIT_FRACTIONS}
    for name, labels in rows:
      splits[split_of[name]].append(common.Entry(name=name, labels=labels))
    return common.FolderSource(images), splits

  def _encode(self, data: bytes, image: tf.Tensor) -> bytes:
    side = self.builder_config.shorter_side
    if side is None or min(image.shape[:2]) <= side:
      return data
    return resize_shorter_side(image.numpy(), side)


def resize_shorter_side(image: np.ndarray, side: int) -> bytes:
  """PNG of `image` resized so its shorter side is `side`, like torchvision's `Resize(side)` on a
  PIL image (bilinear, antialiased; longer side truncated)."""
  h, w = image.shape[:2]
  if h <= w:
    size = (int(side * w / h), side)
  else:
    size = (side, int(side * h / w))
  resized = Image.fromarray(image).resize(size, Image.BILINEAR)
  out = io.BytesIO()
  resized.save(out, format="PNG")
  return out.getvalue()


def read_labels(path: str) -> list[tuple[str, dict[str, float]]]:
  """(image name, label features) per row of the first sheet of the SPAQ workbook; a
  LabelFileError naming the file, the row and the value for a score that is not a finite float32
  number or a name that is not a file name."""
  book = common.load_workbook(path)
  try:
    sheet = book.worksheets[0]
    rows = sheet.iter_rows(values_only=True)
    header = [str(h).strip() if h is not None else "" for h in next(rows, ())]
    columns = ("Image name", "MOS") + ATTRIBUTES
    missing = [c for c in columns if c not in header]
    if missing:
      raise common.LabelFileError.at(path, f"{sheet.title} row 1",
                                     f"missing column(s) {missing}; the header is {header}")
    index = {c: header.index(c) for c in columns}
    out = []
    for line, row in enumerate(rows, start=2):
      if row is None or all(v is None for v in row):
        continue
      where = f"{sheet.title} row {line}"
      cells = {c: row[i] if i < len(row) else None for c, i in index.items()}
      out.append((_image_name(cells["Image name"], path, where), {
          c.lower(): common.finite_label(cells[c], path, where, c) for c in ("MOS",) + ATTRIBUTES}))
    return out
  finally:
    book.close()


def _image_name(value, path: str, where: str) -> str:
  """The file name in TestImage/ for an `Image name` cell (a bare number gets `%05d.jpg`)."""
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return f"{common.whole_label(value, path, where, 'Image name'):05d}.jpg"
  name = str(value).strip()
  return name if os.path.splitext(name)[1] else name + ".jpg"
