"""The bundled demo set: graded distortions of scikit-image's sample photographs, made locally.

No download: the photographs ship inside the scikit-image package. Each photo gives random crops
(small, so a CPU trains on them in minutes); each crop is kept pristine and degraded by blur, noise,
JPEG compression and pixelation at 4 graded strengths. The MOS (0-100) falls with strength:
90 for a pristine crop, then 70, 50, 30, 10. Splits are by source photo, so the test photos are
never seen in training. `write_demo_set` writes an image folder plus `labels.csv`
(`image,mos,split`), the format of the `custom` dataset; the `demo` builder does that in a temporary
folder and stores the result as a tfds dataset: `mst.data.datasets.build("demo", data_dir)`.
"""

import csv
import io
import os
import tempfile
import zlib

import numpy as np
from PIL import Image
from PIL import ImageFilter
import tensorflow_datasets as tfds

from mst.data.datasets import common

# Source photo (a file in skimage/data) -> split. Photos without much fine detail (moon, retina,
# clock_motion, cell: their pristine crops already look blurred) are left out. Both motorcycle
# views are one scene's, so they share a split.
SOURCES = {
    "brick.png": "train", "camera.png": "train", "coins.png": "train", "grass.png": "train",
    "gravel.png": "train", "hubble_deep_field.jpg": "train", "ihc.png": "train",
    "page.png": "train", "rocket.jpg": "train", "text.png": "train",
    "motorcycle_left.png": "validation", "motorcycle_right.png": "validation",
    "astronaut.png": "test", "chelsea.png": "test", "coffee.png": "test",
}
LEVELS = (1, 2, 3, 4)
PRISTINE_MOS = 90.0
MOS_STEP = 20.0
CROP_SIZE = 128  # every image is CROP_SIZE x CROP_SIZE: 4 x 4 patches of 32 px
CROPS_PER_PHOTO = 40  # validation and test photos
TRAIN_CROPS_PER_PHOTO = 40
# A crop is taken from the photo downscaled by one of these factors (more content per crop, and
# crisper pristine images), then kept only if at most MAX_FLAT of its 32 px blocks are flat
# (see `flat_fraction`): blur or JPEG on a flat sky is invisible, so such a label would be noise.
SCALES = (1.0, 0.75, 0.5)
BLOCK = 32
FLAT_DETAIL = 2.0
MAX_FLAT = 0.25
CROP_TRIES = 50


def mos_for(level: int) -> float:
  return PRISTINE_MOS - MOS_STEP * level


def _blur(image: Image.Image, level: int, rng) -> Image.Image:
  return image.filter(ImageFilter.GaussianBlur(radius=(1.0, 1.7, 2.6, 4.0)[level - 1]))


def _noise(image: Image.Image, level: int, rng) -> Image.Image:
  pixels = np.asarray(image, np.float32)
  noisy = pixels + rng.normal(0.0, (8.0, 16.0, 28.0, 45.0)[level - 1], pixels.shape)
  return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), image.mode)


def _jpeg(image: Image.Image, level: int, rng) -> Image.Image:
  buffer = io.BytesIO()
  image.save(buffer, "JPEG", quality=(30, 15, 8, 4)[level - 1])
  return Image.open(io.BytesIO(buffer.getvalue())).convert(image.mode)


def _pixelate(image: Image.Image, level: int, rng) -> Image.Image:
  factor = (2, 3, 5, 8)[level - 1]
  small = image.resize((max(1, image.width // factor), max(1, image.height // factor)),
                       Image.Resampling.BOX)
  return small.resize(image.size, Image.Resampling.NEAREST)


DISTORTIONS = {"blur": _blur, "noise": _noise, "jpeg": _jpeg, "pixelate": _pixelate}


def source_photo(name: str) -> Image.Image:
  """A photograph bundled with scikit-image, as RGB (so noise and JPEG act on colour everywhere)."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  with Image.open(os.path.join(os.path.dirname(skimage.data.__file__), name)) as image:
    # Pixels only: an embedded colour profile would be copied into every crop's PNG.
    return Image.fromarray(np.asarray(image.convert("RGB")))


def random_crop(image: Image.Image, rng, min_side: int, max_side: int) -> Image.Image:
  """A crop with each side drawn from [min_side, max_side] (clipped to the photo)."""
  width = min(image.width, int(rng.integers(min_side, max_side + 1)))
  height = min(image.height, int(rng.integers(min_side, max_side + 1)))
  left = int(rng.integers(0, image.width - width + 1))
  top = int(rng.integers(0, image.height - height + 1))
  return image.crop((left, top, left + width, top + height))


def detail(image: Image.Image) -> float:
  """Mean absolute difference of neighbouring grey levels: ~1 for a smooth or blurred image,
  5-20 for texture and edges."""
  grey = np.asarray(image.convert("L"), np.float32)
  return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()) / 2


def flat_fraction(image: Image.Image, block: int = BLOCK) -> float:
  """The fraction of the image's block x block tiles whose `detail` is below FLAT_DETAIL."""
  grey = np.asarray(image.convert("L"), np.float32)
  rows, cols = grey.shape[0] // block, grey.shape[1] // block
  tiles = grey[:rows * block, :cols * block].reshape(rows, block, cols, block).swapaxes(1, 2)
  tile_detail = (np.abs(np.diff(tiles, axis=2)).mean(axis=(2, 3))
                 + np.abs(np.diff(tiles, axis=3)).mean(axis=(2, 3))) / 2
  return float(np.mean(tile_detail < FLAT_DETAIL))


def detailed_crop(photo: Image.Image, rng, size: int = CROP_SIZE) -> Image.Image:
  """A size x size crop of the photo at a random scale with at most MAX_FLAT flat tiles (the
  least flat of CROP_TRIES candidates if none qualifies)."""
  best, best_flat = None, 2.0
  for _ in range(CROP_TRIES):
    scale = float(SCALES[int(rng.integers(len(SCALES)))])
    side = min(round(size / scale), photo.width, photo.height)
    crop = random_crop(photo, rng, side, side)
    if crop.size != (size, size):
      crop = crop.resize((size, size), Image.Resampling.LANCZOS)
    flat = flat_fraction(crop)
    if flat <= MAX_FLAT:
      return crop
    if flat < best_flat:
      best, best_flat = crop, flat
  return best


def write_demo_set(directory: str, crops_per_photo: int = CROPS_PER_PHOTO,
                   train_crops_per_photo: int = TRAIN_CROPS_PER_PHOTO,
                   crop_size: int = CROP_SIZE, seed: int = 0) -> str:
  """Writes the demo images and `labels.csv` under `directory`; returns the CSV's path.

  Each crop gives 5 images: pristine, and one per level 1-4, the 4 distortion kinds dealt to the
  4 levels in a random order. So every crop's images span all the scores (the content alone says
  nothing about the score), and every kind appears at every level across crops.
  Deterministic for a given seed: the same files, pixels and labels every time.
  """
  image_dir = os.path.join(directory, "images")
  os.makedirs(image_dir, exist_ok=True)
  kinds = list(DISTORTIONS)
  rows = []
  for name, split in SOURCES.items():
    # A generator per photo: one photo's crops do not depend on how many the others get.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    photo = source_photo(name)
    stem = os.path.splitext(name)[0]
    for crop_index in range(train_crops_per_photo if split == "train" else crops_per_photo):
      crop = detailed_crop(photo, rng, crop_size)
      order = rng.permutation(len(kinds))
      variants = [("pristine", 0, crop)]
      for level, kind_index in zip(LEVELS, order):
        kind = kinds[kind_index]
        variants.append((kind, level, DISTORTIONS[kind](crop, level, rng)))
      for kind, level, image in variants:
        file_name = f"{stem}_{crop_index:03d}_{kind}{level}.png"
        image.save(os.path.join(image_dir, file_name), compress_level=1)
        rows.append((file_name, mos_for(level), split))
  csv_path = os.path.join(directory, "labels.csv")
  with open(csv_path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["image", "mos", "split"])
    writer.writerows(rows)
  return csv_path


class Demo(common.ImageQualityBuilder):
  """The demo set as a tfds dataset, generated while preparing (no manual dir, no download)."""
  name = "demo"
  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "1.0.0": "First release.",
      "2.0.0": "128 px crops, at most a quarter flat, at 3 scales; 40 crops a photo, each "
               "pristine plus one distortion per level; stronger level 1; all RGB; new "
               "train/validation photos.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Nothing to download: the demo set is generated locally."
  DESCRIPTION = f"""\
Crops of scikit-image's sample photographs, pristine and degraded by {", ".join(DISTORTIONS)} at
{len(LEVELS)} strengths. `mos` (0-100) is {PRISTINE_MOS:.0f} for a pristine crop and falls by
{MOS_STEP:.0f} per strength level. Splits by source photo: test photos
{sorted(n for n, s in SOURCES.items() if s == "test")} are never seen in training."""

  @property
  def needs_manual_dir(self) -> bool:
    return False

  def _label_features(self):
    return {"mos": common.mos_feature("Mean opinion score, 0-100 (90 pristine ... 10 worst).")}

  def _download_and_prepare(self, dl_manager, download_config=None):
    with tempfile.TemporaryDirectory(prefix="mst_demo_") as folder:
      self._source_dir = folder
      super()._download_and_prepare(dl_manager, download_config)

  def _read_entries(self, manual_dir):
    del manual_dir
    csv_path = write_demo_set(self._source_dir)
    rows = common.read_csv(csv_path, ["image", "mos", "split"])
    splits = {split: [] for split in common.SPLITS}
    for row in rows:
      labels = {"mos": common.to_float(row, "mos", csv_path)}
      splits[row["split"]].append(common.Entry(name=row["image"], labels=labels))
    return common.FolderSource(os.path.join(self._source_dir, "images")), splits
