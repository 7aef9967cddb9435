"""The bundled demo set: graded distortions of scikit-image's sample photographs, made locally.

No download: the photographs ship inside the scikit-image package. Each photo gives random crops
(small, so a CPU trains on them in minutes); each crop is kept pristine and degraded by blur, noise,
JPEG compression and pixelation at 4 graded strengths. The MOS (0-100) falls with strength:
90 for a pristine crop, then 70, 50, 30, 10. Splits are by source photo, so the test photos are
never seen in training. `write_demo_set` writes an image folder plus `labels.csv`
(`image,mos,split`), the format of the `custom` dataset; the `demo` builder does that in a temporary
folder and stores the result as a tfds dataset: `mst.datasets.build("demo", data_dir)`.
"""

import csv
import io
import os
import tempfile

import numpy as np
from PIL import Image
from PIL import ImageFilter

from mst.datasets import common

# Source photo (a file in skimage/data) -> split. Both motorcycle views are one photo's.
SOURCES = {
    "astronaut.png": "train", "camera.png": "train", "coins.png": "train",
    "hubble_deep_field.jpg": "train", "ihc.png": "train", "moon.png": "train",
    "retina.jpg": "train", "grass.png": "train", "gravel.png": "train",
    "motorcycle_left.png": "train", "page.png": "train",
    "brick.png": "validation", "clock_motion.png": "validation",
    "chelsea.png": "test", "coffee.png": "test", "rocket.jpg": "test",
}
LEVELS = (1, 2, 3, 4)
PRISTINE_MOS = 90.0
MOS_STEP = 20.0


def mos_for(level: int) -> float:
  return PRISTINE_MOS - MOS_STEP * level


def _blur(image: Image.Image, level: int, rng) -> Image.Image:
  return image.filter(ImageFilter.GaussianBlur(radius=(0.6, 1.2, 2.0, 3.2)[level - 1]))


def _noise(image: Image.Image, level: int, rng) -> Image.Image:
  pixels = np.asarray(image, np.float32)
  noisy = pixels + rng.normal(0.0, (6.0, 14.0, 26.0, 45.0)[level - 1], pixels.shape)
  return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), image.mode)


def _jpeg(image: Image.Image, level: int, rng) -> Image.Image:
  buffer = io.BytesIO()
  image.save(buffer, "JPEG", quality=(40, 18, 9, 4)[level - 1])
  return Image.open(io.BytesIO(buffer.getvalue())).convert(image.mode)


def _pixelate(image: Image.Image, level: int, rng) -> Image.Image:
  factor = (2, 3, 5, 8)[level - 1]
  small = image.resize((max(1, image.width // factor), max(1, image.height // factor)),
                       Image.Resampling.BOX)
  return small.resize(image.size, Image.Resampling.NEAREST)


DISTORTIONS = {"blur": _blur, "noise": _noise, "jpeg": _jpeg, "pixelate": _pixelate}


def source_photo(name: str) -> Image.Image:
  """A photograph bundled with scikit-image (greyscale ones stay greyscale)."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  image = Image.open(os.path.join(os.path.dirname(skimage.data.__file__), name))
  return image.convert("L" if image.mode in ("L", "I", "I;16", "1") else "RGB")


def random_crop(image: Image.Image, rng, min_side: int, max_side: int) -> Image.Image:
  """A crop with each side drawn from [min_side, max_side] (clipped to the photo)."""
  width = min(image.width, int(rng.integers(min_side, max_side + 1)))
  height = min(image.height, int(rng.integers(min_side, max_side + 1)))
  left = int(rng.integers(0, image.width - width + 1))
  top = int(rng.integers(0, image.height - height + 1))
  return image.crop((left, top, left + width, top + height))


def write_demo_set(directory: str, crops_per_photo: int = 12, min_side: int = 96,
                   max_side: int = 160, seed: int = 0) -> str:
  """Writes the demo images and `labels.csv` under `directory`; returns the CSV's path.

  Deterministic for a given seed: the same files, pixels and labels every time.
  """
  image_dir = os.path.join(directory, "images")
  os.makedirs(image_dir, exist_ok=True)
  rng = np.random.default_rng(seed)
  rows = []
  for name, split in SOURCES.items():
    photo = source_photo(name)
    stem = os.path.splitext(name)[0]
    for crop_index in range(crops_per_photo):
      crop = random_crop(photo, rng, min_side, max_side)
      variants = [("pristine", 0, crop)]
      variants += [(kind, level, distort(crop, level, rng))
                   for kind, distort in DISTORTIONS.items() for level in LEVELS]
      for kind, level, image in variants:
        file_name = f"{stem}_{crop_index:02d}_{kind}{level}.png"
        image.save(os.path.join(image_dir, file_name))
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
