"""Hostile input costs nothing: label files with NaN, inf or float32-overflowing values, label files
that are not UTF-8 text, hold a NUL byte or a CSV field over the csv module's limit, a custom CSV
naming one file twice, and zip members that are bombs (a header declaring GBs, a 300 MB deflate
bomb, a header that understates its data), each written in tmp_path in the dataset's real format.
Label problems are errors naming the file, the line and the value (mst-datasets and mst-train exit
2, no traceback); bomb members are skipped and listed unread while the good images are built.
"""

import functools
import json
import os
import re
import struct
import subprocess
import sys
import threading
import tracemalloc
import zipfile
import zlib

import pytest
import tensorflow_datasets as tfds

from mst.cli import datasets as datasets_cli
from mst.cli import train as train_cli
import mst.data.datasets
from mst.data.datasets import common
from mst.data.datasets import custom
from mst.data.datasets import live
from support.downloads import mat
from support.downloads import skipped
from support.downloads import write_files
from support.downloads import xlsx
from support.images import image_bytes

BAD_VALUES = ("nan", "inf", "1e39")  # 1e39 is finite in float64, inf in float32
BOMB_BYTES = 300 << 20  # what a bomb inflates to: over common.MAX_FILE_BYTES (256 MiB)
CLAIM_BYTES = 20_000  # what a lying header says its bomb holds: an image's size
MIB = 1 << 20


def png(seed):
  """An 8x8 PNG's bytes, distinct per seed."""
  return image_bytes(seed, "PNG")


def cell(value):
  """`value` as a workbook cell: a number where openpyxl keeps it (it drops NaN and inf)."""
  return 1e39 if value == "1e39" else value


def run_cli(capsys, *argv):
  """(status, stderr) of `mst-datasets build ...` run in-process."""
  status = datasets_cli.main(["build", *map(str, argv)])
  return status, capsys.readouterr().err


def names(builder):
  return {ex["name"].decode() for split in builder.info.splits
          for ex in tfds.as_numpy(builder.as_dataset(split=split))}


# ------------------------------------------------------------------ a bad value in each label file

def kadid_labels(root, bad):
  rows = ("dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,3.5,0.2\n"
          f"I01_02_01.png,I01.png,{bad},0.1\n")
  return (["kadid10k", "--manual-dir", write_files(root, {"kadid10k/dmos.csv": rows})],
          rf"dmos.csv:3: dmos '{bad}'")


def koniq_labels(root, bad):
  votes = "1,2,3,4,5,15"
  files = {"koniq10k_scores_and_distributions.csv":
           f"image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore\na.jpg,{votes},3.1,0.5,55\n",
           "koniq10k_distributions_sets.csv":
           f"image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set\na.jpg,{votes},{bad},9,training\n",
           "1024x768/.keep": ""}
  return (["koniq10k", "--manual-dir", write_files(root, files)],
          rf"koniq10k_distributions_sets.csv:2: MOS '{bad}'")


def csiq_labels(root, bad):
  header = [None, "image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"]
  rows = [["CSIQ DMOS"], [], [], header, [None, 1600, 1, "noise", 1, 0.05, 0.1],
          [None, "boston", 1, "jpeg", 2, 0.05, cell(bad)]]
  files = {"csiq.DMOS.xlsx": xlsx({"all_by_distortion": [], "all_by_image": rows})}
  return (["csiq", "--manual-dir", write_files(root, files)],
          rf"csiq.DMOS.xlsx:all_by_image row 6: dmos '?{re.escape(str(cell(bad)))}'?")


def spaq_labels(root, bad):
  header = ["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness",
            "Sharpness"]
  rows = [header, ["00001.jpg", 50, 1, 2, 3, 4, 5], ["00002.jpg", 60, 1, 2, cell(bad), 4, 5]]
  files = {"Annotations/MOS and Image attribute scores.xlsx": xlsx({"Sheet1": rows}),
           "TestImage/.keep": ""}
  return (["spaq", "--manual-dir", write_files(root, files)],
          rf"scores.xlsx:Sheet1 row 3: Contrast '?{re.escape(str(cell(bad)))}'?")


def ava_labels(root, bad):
  lines = "1 101 0 1 2 3 4 5 6 7 8 9 0 0 900\n2 102 0 1 {} 3 4 5 6 7 8 9 0 0 900\n"
  files = {"AVA.txt": lines.format(bad), "images/.keep": "",
           "aesthetics_image_lists/generic_test.jpgl": "101\n"}
  return ["ava", "--manual-dir", write_files(root, files)], rf"AVA.txt:2: votes for score 3 '{bad}'"


def tid_labels(root, bad):
  files = {"tid2013/mos_with_names.txt": f"4.5 i01_01_1.bmp\n{bad} i01_01_2.bmp\n",
           "tid2013/mos_std.txt": "0.1\n0.2\n"}
  return (["tid2013", "--manual-dir", write_files(root, files)],
          rf"mos_with_names.txt:2: mos '{bad}'")


def paq_labels(root, bad):
  files = {"database/labels_image.csv": f"name,mos\na/1.jpg,40\na/2.jpg,{bad}\n",
           "database/labels640.csv": "name_image,mos_image\na/1.jpg,40\n"}
  return ["paq2piq", "--manual-dir", write_files(root, files)], rf"labels_image.csv:3: mos '{bad}'"


def livec_labels(root, bad):
  names_ = [f"t{i}.bmp" for i in range(1, 8)] + ["10.bmp", "11.bmp", "12.bmp"]
  mos = [50.0] * 9 + [float(bad)]
  files = {"Data/AllImages_release.mat": mat(AllImages_release=names_),
           "Data/AllMOS_release.mat": mat(AllMOS_release=mos),
           "Data/AllStdDev_release.mat": mat(AllStdDev_release=[5.0] * 10)}
  return (["livec", "--manual-dir", write_files(root, {f"ChallengeDB_release/{k}": v
                                                       for k, v in files.items()})],
          rf"AllMOS_release.mat:AllMOS_release entry 10: {re.escape(repr(float(bad)))} ")


def live_labels(root, bad):
  dmos = [30.0] * live.ROWS
  dmos[500] = float(bad)
  files = {"dmos.mat": mat(dmos=dmos, orgs=[0.0] * live.ROWS),
           "refnames_all.mat": mat(refnames_all=["ref.bmp"] * live.ROWS)}
  return (["live", "--manual-dir", write_files(root, files)],
          rf"dmos.mat:dmos entry 501: {re.escape(repr(float(bad)))} ")


LABEL_WRITERS = {"kadid10k": kadid_labels, "koniq10k": koniq_labels,
                 "csiq": csiq_labels, "spaq": spaq_labels, "ava": ava_labels,
                 "tid2013": tid_labels, "paq2piq": paq_labels, "livec": livec_labels,
                 "live": live_labels}


@pytest.mark.parametrize("bad", BAD_VALUES)
@pytest.mark.parametrize("dataset", sorted(LABEL_WRITERS))
def test_a_non_finite_label_stops_mst_datasets_naming_file_row_and_value(dataset, bad, tmp_path,
                                                                        capsys):
  args, message = LABEL_WRITERS[dataset](tmp_path / "manual", bad)
  status, err = run_cli(capsys, *args, "--data-dir", tmp_path / "data")
  assert status == 2, err
  assert re.search(message, err), (message, err)
  assert "Traceback" not in err


def test_a_custom_csv_lists_every_non_finite_mos(tmp_path, capsys):
  path = write_files(tmp_path, {"labels.csv": "image,mos\na.png,1\nb.png,nan\nc.png,-inf\n"
                                              "d.png,1e39\ne.png,-3.5e38\nf.png,3.4e38\n"})
  with pytest.raises(custom.LabelFileError) as error:
    custom.read_labels(f"{path}/labels.csv", split_seed=0)
  assert error.value.problems == [
      (3, "mos 'nan' is not a finite number"), (4, "mos '-inf' is not a finite number"),
      (5, "mos '1e39' overflows float32 (beyond +-3.403e+38)"),
      (6, "mos '-3.5e38' overflows float32 (beyond +-3.403e+38)")]
  status, err = run_cli(capsys, "custom", "--config", json.dumps({"csv": f"{path}/labels.csv"}),
                        "--data-dir", tmp_path / "data")
  assert status == 2 and "Traceback" not in err
  assert f"{path}/labels.csv:5: mos '1e39' overflows float32" in err


def test_vote_counts_must_be_whole_numbers_that_int32_holds(tmp_path, capsys):
  files = {"koniq10k_scores_and_distributions.csv":
           "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore\n"
           "a.jpg,1,2,3,4,5,15,3.1,0.5,55\nb.jpg,1,2,3000000000,4,5,15,3.1,0.5,55\n",
           "koniq10k_distributions_sets.csv":
           "image_name,MOS,set\na.jpg,60,training\nb.jpg,61,test\n", "1024x768/.keep": ""}
  status, err = run_cli(capsys, "koniq10k", "--manual-dir", write_files(tmp_path / "k", files),
                        "--data-dir", tmp_path / "data")
  assert status == 2
  assert "koniq10k_scores_and_distributions.csv:3: c3 '3000000000' is out of range" in err
  ava = {"AVA.txt": "1 101 " + " ".join(["300000000"] * 10) + " 0 0 900\n", "images/.keep": "",
         "aesthetics_image_lists/generic_test.jpgl": "101\n"}
  status, err = run_cli(capsys, "ava", "--manual-dir", write_files(tmp_path / "a", ava),
                        "--data-dir", tmp_path / "data")
  assert status == 2 and "AVA.txt:1: the votes sum to 3000000000, over 2147483647" in err


# ------------------------------------------------------------------ text that is not a labels CSV

LONG = "b" * (131_072 + 10)  # over the csv module's default field size limit


@pytest.mark.parametrize("content, line, message", [
    ("image,mos\na.png,1\n" + LONG + ".png,2\n", 3, r"not readable as CSV \(field larger than "
     r"field limit \(131072\); the record spans line 3;"),
    ('image,mos\na.png,1\n"b.png,2\n' + "c.png,3\n" * 20_000, 3,
     r"not readable as CSV .*the record spans line 3 to 16387; an unbalanced quote\?"),
    (b"image,mos\na.png,1\n\xff.png,2\n", 3, r"not UTF-8 text \(byte b'\\xff'\)"),
    (b"\xef\xbb\xbfimage,mos\na.png,1\nb.png,2\n\xe9t\xe9.png,2\n", 4, r"not UTF-8 text"),
    ("image,mos\na.png,1\nb.png,2\nc\0.png,3\n", 4, r"a NUL byte: not a text file"),
    ("image,mos\0\na.png,1\n", 1, r"a NUL byte"),
], ids=["long_field", "unbalanced_quote", "latin1", "latin1_after_bom", "nul", "nul_in_header"])
def test_a_csv_that_is_not_utf8_text_or_readable_csv_names_file_and_line(tmp_path, content, line,
                                                                         message):
  path = tmp_path / "labels.csv"
  path.write_bytes(content if isinstance(content, bytes) else content.encode())
  with pytest.raises(custom.LabelFileError, match=rf"^{re.escape(str(path))}:{line}: {message}"):
    custom.read_labels(str(path), split_seed=0)


TEXT_PROBLEMS = {
    "koniq10k": (lambda root: ["--manual-dir", write_files(root, {
        "koniq10k_scores_and_distributions.csv":
        "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore\na.jpg,1,1,1,1,1,5,3,1,50\n",
        "koniq10k_distributions_sets.csv":
        "image_name,MOS,set\na.jpg,60,training\nb\0.jpg,1,test\n",
        "1024x768/.keep": ""})], r"koniq10k_distributions_sets.csv:3: a NUL byte"),
    "kadid10k": (lambda root: ["--manual-dir", raw_zip_in(root, "kadid10k.zip", {
        "kadid10k/dmos.csv": b"dist_img,ref_img,dmos,var\nI01_01_01\xe9.png,I01.png,3,0.1\n"})],
        r"kadid10k.zip:kadid10k/dmos.csv:2: not UTF-8 text"),
    "ava": (lambda root: ["--manual-dir", write_files(root, {
        "AVA.txt": b"1 101 0 1 2 3 4 5 6 7 8 9 0 0 900\n2 10\xff 0 1 2 3 4 5 6 7 8 9 0 0 900\n",
        "images/.keep": "", "aesthetics_image_lists/generic_test.jpgl": "101\n"})],
        r"AVA.txt:2: not UTF-8 text"),
    "tid2013": (lambda root: ["--manual-dir", write_files(root, {
        "tid2013/mos_with_names.txt": "4 i01_01_1.bmp\n5 i01\0_01_2.bmp\n",
        "tid2013/mos_std.txt": "0.1\n0.2\n"})], r"mos_with_names.txt:2: a NUL byte"),
    "paq2piq": (lambda root: ["--manual-dir", write_files(root, {
        "database/labels_image.csv": f"name,mos\n{LONG}.jpg,40\n",
        "database/labels640.csv": "name_image,mos_image\n"})],
        r"labels_image.csv:2: not readable as CSV \(field larger than field limit"),
}


@pytest.mark.parametrize("dataset", sorted(TEXT_PROBLEMS))
def test_mst_datasets_names_file_and_line_of_a_label_file_it_cannot_read(dataset, tmp_path,
                                                                         capsys):
  args, message = TEXT_PROBLEMS[dataset]
  status, err = run_cli(capsys, dataset, *args(tmp_path / "manual"), "--data-dir",
                        tmp_path / "data")
  assert status == 2 and "Traceback" not in err
  assert re.search(message, err), err


@pytest.mark.parametrize("content, line", [
    (b"image,mos\na.png,1\nb\0.png,2\n", 3), (b"image,mos\na.png,1\n\xff.png,2\n", 3),
    (("image,mos\na.png,1\n" + LONG + ",2\n").encode(), 3)], ids=["nul", "latin1", "long_field"])
def test_mst_train_exits_2_naming_the_line_of_an_unreadable_csv(tmp_path, capsys, content, line):
  path = tmp_path / "labels.csv"
  path.write_bytes(content)
  status = train_cli.main(["--config", "configs/custom.py:runlocal", "--workdir",
                           str(tmp_path / "run"), f"--config.dataset.csv={path}",
                           f"--config.dataset.data_dir={tmp_path / 'tfds'}"])
  err = capsys.readouterr().err
  assert status == 2 and "Traceback" not in err
  assert f"mst-train: error: {path}:{line}: " in err


def test_one_file_named_twice_in_a_custom_csv_is_refused_listing_the_rows(tmp_path):
  path = write_files(tmp_path, {"labels.csv": "image,mos\na.jpg,1\nsub/b.jpg,2\n./a.jpg,3\n"
                                              "A.JPG,4\nsub//B.jpg,5\nc.jpg,6\n"})
  with pytest.raises(custom.LabelFileError) as error:
    custom.read_labels(f"{path}/labels.csv", split_seed=0)
  assert error.value.problems == [
      (4, "image './a.jpg' is the same file as 'a.jpg' (line 2); drop one"),
      (5, "image 'A.JPG' is the same file as 'a.jpg' (line 2) on case-insensitive file systems "
          "(macOS, Windows); rename or drop one"),
      (6, "image 'sub//B.jpg' is the same file as 'sub/b.jpg' (line 3) on case-insensitive "
          "file systems (macOS, Windows); rename or drop one")]
  assert f"{path}/labels.csv:5: image 'A.JPG'" in str(error.value)


# ------------------------------------------------------------------ zip bombs

@functools.lru_cache(maxsize=None)
def zeros_deflated(size):
  """(the raw deflate stream of `size` zero bytes, their CRC-32), compressed in 1 MiB chunks."""
  compressor, chunk, parts, crc = zlib.compressobj(9, zlib.DEFLATED, -15), bytes(MIB), [], 0
  for start in range(0, size, MIB):
    piece = chunk[:min(MIB, size - start)]
    parts.append(compressor.compress(piece))
    crc = zlib.crc32(piece, crc)
  return b"".join(parts) + compressor.flush(), crc


def bomb(kind):
  """A member spec (method, payload, crc, declared size) for `raw_zip`: `true` a 300 MB deflate
  bomb whose header says so, `claims` a header declaring 3 GB over 1 KB of data, `lying` the 300 MB
  bomb under a header claiming CLAIM_BYTES."""
  payload, crc = zeros_deflated(1024 if kind == "claims" else BOMB_BYTES)
  size = {"true": BOMB_BYTES, "claims": 3_000_000_000, "lying": CLAIM_BYTES}[kind]
  return 8, payload, crc, size


def raw_zip(path, members):
  """Writes a zip of {name: bytes, or (method, payload, crc, declared size)}; bytes are stored.
  Written by hand, so the local and central headers can declare any size."""
  central, offset = [], 0
  with open(path, "wb") as f:
    for name, member in members.items():
      method, payload, crc, size = (0, member, zlib.crc32(member), len(member)) if isinstance(
          member, bytes) else member
      encoded = name.encode()
      f.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 33, crc, len(payload),
                          size, len(encoded), 0) + encoded + payload)
      central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 33, crc,
                                 len(payload), size, len(encoded), 0, 0, 0, 0, 0, offset) + encoded)
      offset += 30 + len(encoded) + len(payload)
    directory = b"".join(central)
    f.write(directory + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members),
                                    len(directory), offset, 0))
  return str(path)


def raw_zip_in(root, name, members):
  """`raw_zip` of `members` as `root/name`; returns `root` as str."""
  os.makedirs(root, exist_ok=True)
  raw_zip(os.path.join(root, name), members)
  return str(root)


def koniq_with_bombs(root, bombs):
  """A KonIQ download whose zip holds good0..good3.jpg (PNG bytes; train, train, validation, test)
  and the `bombs` {name: kind}, all labelled (the bombs in train)."""
  good = {f"good{i}.jpg": png(i) for i in range(4)}
  sets = dict(zip(good, ("training", "training", "validation", "test")))
  sets.update({name: "training" for name in bombs})
  scores = ["image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore"]
  rows = ["image_name,MOS,set"]
  for i, name in enumerate(sets):
    scores.append(f"{name},1,2,3,4,5,15,3.{i % 10},0.5,55")
    rows.append(f"{name},{50 + i % 40},{sets[name]}")
  write_files(root, {"koniq10k_scores_and_distributions.csv": "\n".join(scores) + "\n",
                     "koniq10k_distributions_sets.csv": "\n".join(rows) + "\n"})
  members = {f"1024x768/{n}": data for n, data in good.items()}
  members.update({f"1024x768/{n}": bomb(kind) for n, kind in bombs.items()})
  raw_zip(os.path.join(root, "koniq10k_1024x768.zip"), members)
  return str(root), set(good)


def test_zip_members_declaring_too_much_are_skipped_unread_and_listed(tmp_path, monkeypatch):
  bombs = {"true.jpg": "true", "lying.jpg": "lying",
           **{f"claims{i}.jpg": "claims" for i in range(15)}}
  manual, good = koniq_with_bombs(tmp_path / "manual", bombs)
  opened, open_member = [], zipfile.ZipFile.open

  def spy(self, member, *args, **kwargs):
    opened.append(getattr(member, "filename", member))
    return open_member(self, member, *args, **kwargs)

  monkeypatch.setattr(zipfile.ZipFile, "open", spy)
  builder = mst.data.datasets.build("koniq10k", str(tmp_path / "data"), manual)
  assert names(builder) == good
  listed = skipped(builder)
  assert listed.keys() == {("train", name) for name in bombs}
  for name in set(bombs) - {"lying.jpg"}:
    size = BOMB_BYTES if name == "true.jpg" else 3_000_000_000
    reason = listed[("train", name)]
    assert reason == (f"too large: the zip header says {size} bytes, over the 268435456-"
                      "byte limit (common.MAX_FILE_BYTES); not read"), reason
    assert f"1024x768/{name}" not in opened  # never opened, let alone inflated
  assert listed[("train", "lying.jpg")].startswith("corrupt zip member (Bad CRC-32")
  assert common.MAX_FILE_BYTES == 256 * MIB


def test_a_member_whose_header_understates_it_inflates_no_further(tmp_path):
  source = common.ZipSource(raw_zip(tmp_path / "bombs.zip", {
      "lying.png": bomb("lying"), "true.png": bomb("true"), "good.png": png(0)}))
  tracemalloc.start()
  try:
    with pytest.raises(common.UnreadableFile, match=r"bombs.zip:lying.png: corrupt zip member"):
      source.read("lying.png")
    with pytest.raises(common.UnreadableFile, match=r"bombs.zip:true.png: too large: the zip "
                       rf"header says {BOMB_BYTES} bytes"):
      source.read("true.png")
    assert source.read("good.png") == png(0)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 2 * MIB, peak  # the bomb inflates to 300 MB; its claim is 20 KB


def test_a_bomb_label_file_in_a_zip_is_refused_naming_it(tmp_path, capsys):
  manual = raw_zip_in(tmp_path / "manual", "kadid10k.zip", {
      "kadid10k/dmos.csv": bomb("claims"), "kadid10k/images/I01_01_01.png": png(0)})
  status, err = run_cli(capsys, "kadid10k", "--manual-dir", manual, "--data-dir",
                        tmp_path / "data")
  assert status == 2 and "Traceback" not in err
  assert re.search(r"kadid10k.zip:kadid10k/dmos.csv: too large: the zip header says 3000000000 "
                   "bytes", err), err


def test_an_image_file_too_large_to_be_one_is_skipped_unread(tmp_path):
  root = tmp_path / "mine"
  write_files(root, {"a.png": png(0), "b.png": png(1), "c.png": png(2),
                     "labels.csv": "image,mos,split\na.png,1,train\nb.png,2,validation\n"
                                   "c.png,3,test\nhuge.png,4,train\nfolder.png,5,train\n"})
  with open(root / "huge.png", "wb") as f:  # sparse: 300 MB that take no disk
    f.truncate(BOMB_BYTES)
  (root / "folder.png").mkdir()
  builder = mst.data.datasets.build("custom", str(tmp_path / "data"), csv=str(root / "labels.csv"))
  assert names(builder) == {"a.png", "b.png", "c.png"}
  assert skipped(builder) == {
      ("train", "huge.png"): f"too large: the file has {BOMB_BYTES} bytes, over the "
                             "268435456-byte limit (common.MAX_FILE_BYTES); not read",
      ("train", "folder.png"): "not a regular file (a folder, FIFO, device or socket); not read"}


def test_a_fifo_named_like_an_image_is_refused_without_blocking(tmp_path):
  fifo = tmp_path / "pipe.png"
  os.mkfifo(fifo)
  outcome = []

  def read():
    try:
      outcome.append(common.FolderSource(str(tmp_path)).read("pipe.png"))
    except common.UnreadableFile as e:
      outcome.append(e.reason)

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  reader.join(timeout=20)
  if reader.is_alive():  # blocked opening the FIFO: unblock it, then fail
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    reader.join(timeout=5)
  assert outcome == ["not a regular file (a folder, FIFO, device or socket); not read"]


_CHILD = """
import json, sys
from mst.cli import datasets

def peak_rss():  # VmHWM: the peak resident set since the last reset, in bytes
  with open("/proc/self/status") as f:
    return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))

warm, bombs, data = sys.argv[1:]
assert datasets.main(["koniq10k", "--manual-dir", warm, "--data-dir", data + "/warm"]) == 0
with open("/proc/self/clear_refs", "w") as f:
  f.write("5")  # resets VmHWM to the current resident set
before = peak_rss()
status = datasets.main(["koniq10k", "--manual-dir", bombs, "--data-dir", data + "/bombs"])
print(json.dumps({"status": status, "before": before, "after": peak_rss()}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                    reason="needs Linux's /proc/self/clear_refs to reset the peak RSS")
def test_sixteen_bombs_of_each_kind_keep_mst_datasets_memory_flat(tmp_path):
  """16 members over the limit (a real 300 MB deflate bomb and 15 headers declaring 3 GB) and 16
  300 MB bombs under headers claiming 20 KB, in one archive read by 16 threads: the peak RSS of
  `mst-datasets build` grows by far less than one bomb inflates to."""
  bombs = {"true.jpg": "true", **{f"claims{i}.jpg": "claims" for i in range(15)},
           **{f"lying{i}.jpg": "lying" for i in range(16)}}
  manual, good = koniq_with_bombs(tmp_path / "bombs", bombs)
  warm, _ = koniq_with_bombs(tmp_path / "warm", {})
  env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
  done = subprocess.run([sys.executable, "-c", _CHILD, warm, manual, str(tmp_path / "data")],
                        capture_output=True, text=True, timeout=300, env=env, check=False)
  assert "Traceback" not in done.stderr, done.stderr[-3000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result["status"] == 0
  assert result["after"] - result["before"] < 100 * MIB, result  # one bomb inflates to 300 MB
  builder = tfds.builder("koniq10k", data_dir=str(tmp_path / "data" / "bombs"))
  assert names(builder) == good
  reasons = {name: reason for (_, name), reason in skipped(builder).items()}
  assert set(reasons) == set(bombs)
  assert all(reasons[n].startswith("too large") for n in bombs if not n.startswith("lying"))
  assert all(reasons[n].startswith("corrupt zip member") for n in bombs if n.startswith("lying"))
