"""A cross-dataset table on a CPU, from nothing downloaded: the demo model tested on the demo's test
split and on two sets written in the original formats of LIVE Challenge and KADID-10k.

    python experiments/cross_dataset_demo.py --workdir /tmp/mst_demo --out /tmp/cross_demo

The two sets are made from the demo's test photos (never trained on), in other crops than the
demo's own test images: `livec` holds distorted crops as .bmp and .JPG files with the .mat label
files of the LIVE Challenge release (and its 7 training images, which the protocol leaves out);
`kadid10k` holds reference crops `Ixx.png` and distorted `Ixx_yy_zz.png` (type, level) with
`dmos.csv`. Distortions are the demo's (blur, noise, JPEG, pixelation) at strengths 1-4 with the
demo's MOS (90 pristine, then 70, 50, 30, 10), on each set's scale: 0-100 for LIVE Challenge,
1-5 (MOS / 20) for KADID-10k. The real builders prepare them from these files, then one mst-eval
command scores the checkpoint on all three. Trains configs/demo.py first if `--workdir` holds no
finished run (under 10 minutes on 2 cores).
"""

import argparse
import csv
import io
import os
import sys

import numpy as np
from PIL import Image
import scipy.io

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mst.data.datasets import demo  # pylint: disable=g-import-not-at-top

TEST_PHOTOS = [name for name, split in demo.SOURCES.items() if split == "test"]
REFERENCES_PER_PHOTO = 6
SEED = 2026  # other crops than the demo set's


def _references(rng) -> list[Image.Image]:
  """Detailed crops of the demo's test photos."""
  crops = []
  for name in TEST_PHOTOS:
    photo = demo.source_photo(name).convert("RGB")
    crops += [demo.detailed_crop(photo, rng) for _ in range(REFERENCES_PER_PHOTO)]
  return crops


def _distorted(references, rng):
  """(reference index, type index 1.., level, image, MOS 0-100) for every distortion and level."""
  for r, reference in enumerate(references):
    for t, distort in enumerate(demo.DISTORTIONS.values(), 1):
      for level in demo.LEVELS:
        yield r, t, level, distort(reference, level, rng).convert("RGB"), demo.mos_for(level)


def _file_bytes(image: Image.Image, fmt: str) -> bytes:
  out = io.BytesIO()
  image.save(out, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
  return out.getvalue()


def _mat(path: str, key: str, values, column: bool = False) -> None:
  shape = (len(values), 1) if column else (1, len(values))
  array = np.empty(shape, dtype=object) if isinstance(values[0], str) else np.zeros(shape)
  array.flat[:] = values
  scipy.io.savemat(path, {key: array})


def write_kadid(folder: str, references, rng) -> int:
  """KADID-10k's layout: kadid10k/images/Ixx.png, Ixx_yy_zz.png and kadid10k/dmos.csv."""
  images = os.path.join(folder, "kadid10k", "images")
  os.makedirs(images, exist_ok=True)
  rows = [("dist_img", "ref_img", "dmos", "var")]
  for r, reference in enumerate(references, 1):
    reference.save(os.path.join(images, f"I{r:02d}.png"))
  for r, t, level, image, mos in _distorted(references, rng):
    name = f"I{r + 1:02d}_{t:02d}_{level:02d}.png"
    image.save(os.path.join(images, name))
    rows.append((name, f"I{r + 1:02d}.png", f"{mos / 20:.3f}", "0.5"))
  with open(os.path.join(folder, "kadid10k", "dmos.csv"), "w", newline="") as f:
    csv.writer(f).writerows(rows)
  return len(rows) - 1


def write_livec(folder: str, references, rng) -> int:
  """LIVE Challenge's layout: Images/ (training images in Images/trainingImages/) and Data/*.mat
  with the 7 training images listed first."""
  root = os.path.join(folder, "ChallengeDB_release")
  os.makedirs(os.path.join(root, "Images", "trainingImages"), exist_ok=True)
  os.makedirs(os.path.join(root, "Data"), exist_ok=True)
  names, mos = [], []
  for i in range(1, 8):
    references[i].save(os.path.join(root, "Images", "trainingImages", f"t{i}.bmp"))
    names.append(f"t{i}.bmp")
    mos.append(demo.PRISTINE_MOS)
  for i, (_, _, _, image, value) in enumerate(_distorted(references, rng)):
    name = f"{i + 10}.{'JPG' if i % 2 else 'bmp'}"
    with open(os.path.join(root, "Images", name), "wb") as f:
      f.write(_file_bytes(image, "JPEG" if i % 2 else "BMP"))
    names.append(name)
    mos.append(value)
  _mat(os.path.join(root, "Data", "AllImages_release.mat"), "AllImages_release", names,
       column=True)
  _mat(os.path.join(root, "Data", "AllMOS_release.mat"), "AllMOS_release", mos)
  _mat(os.path.join(root, "Data", "AllStdDev_release.mat"), "AllStdDev_release", [10.0] * len(mos))
  return len(names) - 7


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", default="/tmp/mst_demo",
                      help="a finished configs/demo.py run, or where to train one")
  parser.add_argument("--out", default="/tmp/cross_demo", help="data and results go here")
  args = parser.parse_args(argv)
  import jax  # pylint: disable=g-import-not-at-top
  from mst.config import defaults  # pylint: disable=g-import-not-at-top
  from mst.configure import overrides  # pylint: disable=g-import-not-at-top
  from mst.configure import resolve  # pylint: disable=g-import-not-at-top
  from mst.evaluation import cross_dataset  # pylint: disable=g-import-not-at-top
  from mst.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  from mst.evaluation import runs  # pylint: disable=g-import-not-at-top
  from mst.training import trainer  # pylint: disable=g-import-not-at-top
  tfds_dir = os.path.join(args.out, "tfds")
  if not os.path.exists(os.path.join(args.workdir, "test_metrics.json")):
    config = overrides.load_config("configs/demo.py")
    config.dataset.data_dir = tfds_dir
    trainer.train_and_evaluate(resolve.run(config, jax.device_count()), args.workdir)
  manual = os.path.join(args.out, "downloads")
  rng = np.random.default_rng(SEED)
  references = _references(rng)
  kadid = write_kadid(os.path.join(manual, "kadid10k"), references, rng)
  livec = write_livec(os.path.join(manual, "livec"), references, rng)
  print(f"wrote {livec} LIVE Challenge and {kadid} KADID-10k images from "
        f"{len(references)} crops of {', '.join(TEST_PHOTOS)}", flush=True)
  # What `mst-eval --checkpoint WORKDIR --datasets demo:test,livec,kadid10k` runs.
  targets = cross_dataset.parse_targets("demo:test,livec,kadid10k")
  settings = resolve.section(evaluate.EvalSettings, defaults.get_config().eval)
  results = runs.across([args.workdir], targets, settings,
                        output_dir=os.path.join(args.out, "eval"), data_dir=tfds_dir,
                        manual_dir=manual, say=print)
  print("\n" + cross_dataset.table(results, [target.label for target in targets]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
