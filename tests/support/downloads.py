"""Fake downloads of the datasets, in each one's original format and with its quirks, written
small: KonIQ-10k, SPAQ, AVA, PaQ-2-PiQ and a custom CSV as folders (`*_manual(root)` writes one),
LIVE Challenge, KADID-10k, TID2013, LIVE and CSIQ as {path: bytes} (`*_files()`, for `write_files`
or `write_zip`). demo needs none: its builder generates its set from photos it ships. Each has a
missing and a damaged image among a handful, so the skip list is tested too.

Also the writers they use (files, zips, .mat and .xlsx) and `load` / `skipped`, which read a built
dataset back. Used by the builder tests, the hostile-label tests, cross-dataset evaluation and the
sweep tests.
"""

import io
import os
import pathlib
import zipfile

import numpy as np
from PIL import Image
import scipy.io
import tensorflow_datasets as tfds

import mst.data.datasets
from mst.data.datasets import live
from support.images import image_bytes
from support.images import jpeg
from support.images import truncated


# ------------------------------------------------------------------------------------------ writers

def write_files(root, files):
  """Writes {relative path: bytes or str} below `root` (a fake download); returns `root` as str."""
  for path, data in files.items():
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
      f.write(data if isinstance(data, bytes) else data.encode())
  return str(root)


def write_zip(path, files):
  """Writes {member name: bytes or str} as the zip archive `path`; returns `path` as str."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with zipfile.ZipFile(path, "w") as z:
    for name, data in files.items():
      z.writestr(name, data)
  return str(path)


def mat(column=False, **variables):
  """A .mat file's bytes: each list a 1 x N (N x 1 with `column`) variable, a cell array if it
  holds str (numpy object arrays, as scipy.io.loadmat returns them)."""
  out = {}
  for key, values in variables.items():
    shape = (len(values), 1) if column else (1, len(values))
    out[key] = np.empty(shape, dtype=object) if isinstance(values[0], str) else np.zeros(shape)
    out[key].flat[:] = values
  buffer = io.BytesIO()
  scipy.io.savemat(buffer, out)
  return buffer.getvalue()


def xlsx(sheets):
  """An .xlsx's bytes: {sheet title: rows}, the first one active."""
  import openpyxl  # pylint: disable=g-import-not-at-top
  book = openpyxl.Workbook()
  book.remove(book.active)
  for title, rows in sheets.items():
    sheet = book.create_sheet(title)
    for row in rows:
      sheet.append(row)
  out = io.BytesIO()
  book.save(out)
  return out.getvalue()


# ------------------------------------------------------------------------------------------ readers

def load(builder, split):
  """{name: example} of a built split, as numpy."""
  return {ex["name"].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split=split))}


def skipped(builder):
  """{(split, name): reason} of a built dataset's skip list."""
  return {(r["split"], r["name"]): r["reason"] for r in mst.data.datasets.read_skipped(builder)}


# ---------------------------------------------------------------------------------------- KonIQ-10k

KONIQ_SETS = ["training"] * 6 + ["validation"] * 2 + ["test"] * 2


def koniq_manual(root, zipped=True):
  """10 labelled images: 0 greyscale, 1 truncated, 9 absent from the image archive (or, not
  `zipped`, the extracted 1024x768/ folder). Returns (names, {name: bytes})."""
  names = [f"{1000 + i}.jpg" for i in range(10)]
  images = {n: (jpeg(i, mode="L") if i == 0 else truncated(i) if i == 1 else jpeg(i))
            for i, n in enumerate(names[:9])}
  scores = ['"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore"']
  sets = ["image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set"]
  for i, name in enumerate(names):
    votes = [1 + i, 2, 3, 4, 10 - i]
    scores.append(f'"{name}",{",".join(map(str, votes))},{sum(votes)},{1.5 + 0.3 * i:.2f},'
                  f'0.{i + 1},{20 + 5 * i}.5')
    sets.append(f"{name},{','.join(map(str, votes))},{sum(votes)},{60 + i},9,{KONIQ_SETS[i]}")
  folder = {f"1024x768/{name}": data for name, data in images.items()}
  if zipped:
    write_zip(os.path.join(root, "koniq10k_1024x768.zip"), folder)
  write_files(root, {**({} if zipped else folder),
                     "koniq10k_scores_and_distributions.csv": "\n".join(scores) + "\n",
                     "koniq10k_distributions_sets.csv": "\n".join(sets) + "\n"})
  return names, images


# --------------------------------------------------------------------------------------------- SPAQ

def spaq_manual(root):
  """10 rows; 00002 truncated, 00010 missing; 00001 greyscale; 00003 and 00004 larger than 512.
  Returns {name: bytes} of the images written."""
  rows = [["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness",
           "Sharpness"]]
  images = {}
  for i in range(1, 11):
    name = f"{i:05d}.jpg"
    rows.append([name, 10.0 * i - 0.5, 11 + i, 22 + i, 33 + i, 44 + i, 55 + i])
    if i == 10:
      continue
    size = (520, 780) if i in (3, 4) else (24, 32)
    images[name] = truncated(i) if i == 2 else jpeg(i, size=size, mode="L" if i == 1 else "RGB")
  write_files(root, {**{f"SPAQ/TestImage/{name}": data for name, data in images.items()},
                     "SPAQ/Annotations/MOS and Image attribute scores.xlsx": xlsx({"Sheet": rows})})
  return images


# ---------------------------------------------------------------------------------------------- AVA

def ava_manual(root):
  """14 images; ids 113 and 114 in the test list; 105 greyscale, 108 truncated, 107 missing.
  Returns (AVA.txt's lines, {image id: bytes})."""
  lines, images = [], {}
  for i in range(1, 15):
    votes = [(i + k) % 7 for k in range(10)]
    lines.append(" ".join(map(str, [i, 100 + i, *votes, i % 3, 20 + i, 900 + i])))
    if i != 7:
      images[100 + i] = truncated(i) if i == 8 else jpeg(i, mode="L" if i == 5 else "RGB")
  write_files(root, {**{f"images/{image_id}.jpg": data for image_id, data in images.items()},
                     "AVA.txt": "\n".join(lines) + "\n",
                     "aesthetics_image_lists/generic_test.jpgl": "113\n114\n"})
  return lines, images


# ---------------------------------------------------------------------------------------- PaQ-2-PiQ

PAQ_NAMES = ([f"voc_emotic_ava/AVA__{i}.jpg" for i in range(6)] +
             [f"blur_dataset/motion{i:04d}.jpg" for i in range(4)] +
             [f"EE371R/img_{i}.jpg" for i in range(4)])


def paq_manual(root, official_validation):
  """14 pictures in nested folders: 2 test, (with the CSV) 3 flagged valid; 1 missing. Returns
  the database/ folder."""
  database = pathlib.Path(root) / "FLIVE_Database" / "database"
  files = {name: jpeg(i) for i, name in enumerate(PAQ_NAMES[:-1])}
  files["labels_image.csv"] = "name,mos\n" + "".join(
      f"{n},{40 + 2.5 * i}\n" for i, n in enumerate(PAQ_NAMES))
  files["labels640.csv"] = f"name_image,mos_image\n{PAQ_NAMES[0]},40\n{PAQ_NAMES[6]},55\n"
  if official_validation:
    files["labels=640_padded.csv"] = "name_image,mos_image,is_valid\n" + "".join(
        f"{n},50,{i in (2, 3, 13)}\n" for i, n in enumerate(PAQ_NAMES) if i not in (0, 6))
  write_files(database, files)
  return database


# ------------------------------------------------------------------------------------------- custom

def custom_manual(root, with_split):
  """A labels.csv (with a split column or without) and images/ of 10 rows: sub/img4.png in a
  subfolder, img3.jpg truncated, img9.jpg missing. Returns (the CSV's path, the image folder)."""
  root = pathlib.Path(root)
  rows = ["image,mos,split" if with_split else "image,mos"]
  splits = ["train"] * 6 + ["validation"] * 2 + ["test"] * 2
  for i in range(10):
    name = f"sub/img{i}.png" if i == 4 else f"img{i}.jpg"
    if i == 4:
      os.makedirs(root / "images" / "sub")
      Image.new("RGB", (16, 12), (i, 2 * i, 3 * i)).save(root / "images" / name)
    elif i != 9:
      write_files(root / "images", {name: truncated(i) if i == 3 else jpeg(i)})
    rows.append(f"{name},{0.25 * i}" + (f",{splits[i]}" if with_split else ""))
  write_files(root, {"labels.csv": "\n".join(rows) + "\n"})
  return str(root / "labels.csv"), str(root / "images")


# ----------------------------------------------------------------------------------- LIVE Challenge

def livec_files(mos_count=None):
  """ChallengeDB_release/ with 7 training images listed first and 8 rated ones (.bmp and .JPG);
  10.bmp missing, 13.JPG truncated. Returns (files, {rated name: MOS})."""
  rated = ["10.bmp", "11.bmp", "12.JPG", "13.JPG", "14.bmp", "15.bmp", "16.JPG", "17.bmp"]
  names = [f"t{i}.bmp" for i in range(1, 8)] + rated
  mos = [90.0] * 7 + [20.0 + 7 * i for i in range(len(rated))]
  top = "ChallengeDB_release/"
  files = {top + "Data/AllImages_release.mat": mat(column=True, AllImages_release=names),
           top + "Data/AllMOS_release.mat": mat(AllMOS_release=mos[:mos_count]),
           top + "Data/AllStdDev_release.mat": mat(AllStdDev_release=[5.0 + i for i in
                                                                      range(len(names))])}
  for i, name in enumerate(names):
    folder = "Images/trainingImages/" if name.startswith("t") else "Images/"
    data = image_bytes(i, "JPEG" if name.endswith(".JPG") else "BMP")
    if name != "10.bmp":
      files[top + folder + name] = data[:len(data) // 3] if name == "13.JPG" else data
  return files, dict(zip(rated, mos[7:]))


# ---------------------------------------------------------------------------------------- KADID-10k

def kadid_files(header="dist_img,ref_img,dmos,var"):
  """kadid10k/ with 6 references x 2 distorted images; I02_03_02 missing, I04_01_01 corrupt.
  Returns (files, {distorted name: MOS})."""
  rows, files, mos = [header], {}, {}
  for r in range(1, 7):
    files[f"kadid10k/images/I{r:02d}.png"] = image_bytes(100 + r)
    for kind, level in ((1, 1), (3, 2)):
      name = f"I{r:02d}_{kind:02d}_{level:02d}.png"
      mos[name] = 1 + r / 2 - level / 4
      rows.append(f"{name},I{r:02d}.png,{mos[name]},0.{r}")
      data = image_bytes(10 * r + kind, "PNG")
      if name != "I02_03_02.png":
        files[f"kadid10k/images/{name}"] = data[:20] if name == "I04_01_01.png" else data
  files["kadid10k/dmos.csv"] = "\n".join(rows) + "\n"
  return files, mos


# ------------------------------------------------------------------------------------------ TID2013

def tid_files(std_lines=None):
  """tid2013/ with 6 references; the list says i25_..., the disk I25_... and .BMP; i02_03_2
  missing, i03_01_1 corrupt; CRLF line ends and a trailing blank line. Returns (files,
  {listed name: MOS})."""
  references, files, mos, lines = (1, 2, 3, 4, 5, 25), {}, {}, []
  for r in references:
    for kind, level in ((1, 1), (3, 2)):
      name = f"i{r:02d}_{kind:02d}_{level}.bmp"
      mos[name] = round(1 + r / 5 + level, 4)
      lines.append(f"{mos[name]} {name}")
      on_disk = name.replace("i25", "I25").replace("_1.bmp", "_1.BMP") if r in (25, 4) else name
      data = image_bytes(10 * r + kind, "BMP")
      if name != "i02_03_2.bmp":
        files[f"tid2013/distorted_images/{on_disk}"] = data[:40] if name == "i03_01_1.bmp" else data
    files[f"tid2013/reference_images/I{r:02d}.BMP"] = image_bytes(r, "BMP")
  stds = [f"0.{i + 1}" for i in range(len(lines))][:std_lines]
  files["tid2013/mos_with_names.txt"] = "\r\n".join(lines) + "\r\n\r\n"
  files["tid2013/mos_std.txt"] = "\r\n".join(stds) + "\r\n"
  return files, mos


# --------------------------------------------------------------------------------------------- LIVE

LIVE_REFERENCES = [f"ref{i}" for i in range(6)]  # enough for a 5 / 1 train / test split
LIVE_PRESENT = ["jp2k/img1.bmp", "jp2k/img2.bmp", "jp2k/img3.bmp", "jp2k/img4.bmp",
                "jp2k/img5.bmp", "jp2k/img6.bmp", "jpeg/img1.bmp", "jpeg/img2.bmp",
                "wn/img1.bmp", "gblur/img1.bmp", "fastfading/img174.bmp"]
LIVE_REFERENCE_COPIES = {"jp2k/img3.bmp", "jpeg/img2.bmp"}


def live_files(rows=live.ROWS):
  """databaserelease2/ with dmos.mat and refnames_all.mat for 982 rows (jp2k, jpeg, wn, gblur,
  fastfading) and a handful of images; jp2k/img3 and jpeg/img2 are reference copies (orgs 1),
  jpeg/img1 is corrupt, the rows without an image are missing. Returns (files, {name: DMOS},
  {name: reference})."""
  names = [f"{folder}/img{i}.bmp" for folder, n in live.FOLDERS for i in range(1, n + 1)]
  dmos = [0.0 if n in LIVE_REFERENCE_COPIES else 10 + (7 * i) % 80 for i, n in enumerate(names)]
  references = [LIVE_REFERENCES[i % 6] for i in range(len(names))]
  top = "databaserelease2/"
  files = {top + "dmos.mat": mat(dmos=dmos[:rows],
                                 orgs=[float(n in LIVE_REFERENCE_COPIES) for n in names][:rows]),
           top + "refnames_all.mat": mat(refnames_all=[f"{r}.bmp" for r in references])}
  for i, name in enumerate(LIVE_PRESENT):
    data = image_bytes(i, "BMP")
    files[top + name] = data[:30] if name == "jpeg/img1.bmp" else data
  return files, dict(zip(names, dmos)), dict(zip(names, references))


# --------------------------------------------------------------------------------------------- CSIQ

CSIQ_TYPES = [("noise", "awgn", "AWGN"), ("jpeg", "jpeg", "JPEG"), ("jpeg 2000", "jpeg2000",
              "jpeg2000"), ("fnoise", "fnoise", "fnoise"), ("blur", "blur", "BLUR"),
              ("contrast", "contrast", "contrast")]


def csiq_files(header_row=4):
  """csiq.DMOS.xlsx (a first sheet, then all_by_image with a title, the header on row 4 in columns
  D-I and a numeric image 1600) and dst_imgs/<folder>/<ref>.<TOKEN>.<level>.png for 6 references;
  fisher.BLUR.2 missing, 1600.fnoise.2 corrupt. Returns (files, {name: DMOS}, {name: reference})."""
  rows = [["CSIQ DMOS"], [], *[[]] * (header_row - 3),
          [None] * 3 + ["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"]]
  references = [1600, "aerial_city", "boston", "shroom", "fisher", "woman"]
  files, dmos, group = {}, {}, {}
  for r, reference in enumerate(references):
    for k, (kind, folder, token) in enumerate(CSIQ_TYPES[r % 3::3]):
      level = 1 + (r + k) % 4
      name = f"{reference}.{token}.{level}.png"
      dmos[name], group[name] = round(0.1 * level + 0.01 * r, 4), str(reference)
      rows.append([None] * 3 + [reference, 1 + CSIQ_TYPES.index((kind, folder, token)), kind,
                                level, 0.05, dmos[name]])
      data = image_bytes(10 * r + k)
      if name != "fisher.BLUR.2.png":
        files[f"CSIQ/dst_imgs/{folder}/{name}"] = data[:25] if name == "1600.fnoise.2.png" else data
  files["CSIQ/csiq.DMOS.xlsx"] = xlsx({"all_by_distortion": [], "all_by_image": rows})
  return files, dmos, group
