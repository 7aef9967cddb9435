"""The IQA papers' evaluation sets (mst.data.datasets.iqa: livec, kadid10k, tid2013, live, csiq)
built from tiny fixtures in their original formats (support.downloads), quirks included: LIVE
Challenge's training images listed first, TID2013's list and disk disagreeing on case, LIVE's
reference copies (orgs == 1) and folder order, CSIQ's numeric image names and row-4 header, zipped
and extracted downloads. Each fixture has a missing and a corrupt image among a handful of 8x8
ones; label files of the wrong shape must fail naming the file.
"""

import contextlib
import dataclasses
import io
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mst.cli import datasets as datasets_cli
from mst.config import defaults
from mst.configure import resolve
from mst.data import source
import mst.data.datasets
from mst.data.datasets import common
from mst.data.datasets import iqa
from support.downloads import CSIQ_TYPES
from support.downloads import LIVE_PRESENT
from support.downloads import LIVE_REFERENCE_COPIES
from support.downloads import csiq_files
from support.downloads import kadid_files
from support.downloads import live_files
from support.downloads import livec_files
from support.downloads import load
from support.downloads import skipped
from support.downloads import tid_files
from support.downloads import write_files
from support.downloads import write_zip

IQA_SETS = ("livec", "kadid10k", "tid2013", "live", "csiq")


def build(name, manual, data, **kwargs):
  return mst.data.datasets.build(name, str(data), str(manual), **kwargs)


def check_splits(builder, rated, missing, corrupt, seed=0):
  """Checks `full`, `train` and `test` of a built set; returns them. `rated`: {image name: its
  reference id, or the name itself for a set without references}. `full` holds every rated image
  but the `missing` ones (a name or a set) and the `corrupt` one, which are skipped and listed (in
  `full` and in their split); train / test are the seeded 80/20 split of the references."""
  missing = {missing} if isinstance(missing, str) else set(missing)
  full, train, test = (load(builder, split) for split in iqa.SPLITS)
  assert set(full) == set(rated) - missing - {corrupt}
  assert all(ex["reference"].decode() == rated[n] for n, ex in full.items() if "reference" in ex)
  split_of = common.seeded_split(list(rated.values()), iqa.FRACTIONS, seed)
  assert set(train) | set(test) == set(full) and not set(train) & set(test)
  for split, examples in (("train", train), ("test", test)):
    assert examples.keys() == {n for n in full if split_of[rated[n]] == split}
    assert all(examples[n]["image"] == full[n]["image"] for n in examples)
  assert not {rated[n] for n in train} & {rated[n] for n in test}  # no reference in both
  listed = skipped(builder)
  assert {name for _, name in listed} == missing | {corrupt}
  for name in missing:
    assert listed[("full", name)] == listed[(split_of[rated[name]], name)] == "missing file"
  assert listed[("full", corrupt)].startswith("undecodable")
  return full, train, test


# ---------------------------------------------------------------------------------------- LIVEC

@pytest.fixture(scope="module")
def livec(tmp_path_factory):
  root = tmp_path_factory.mktemp("livec_manual")
  files, mos = livec_files()
  write_zip(root / "ChallengeDB_release.zip", files)  # as it ships
  return build("livec", root, tmp_path_factory.mktemp("data")), mos


def test_livec_drops_training_images_and_splits_by_image(livec):
  builder, mos = livec
  full, _, _ = check_splits(builder, {n: n for n in mos}, "10.bmp", "13.JPG")
  assert not any(n.startswith("t") for n in full)  # left out, and not listed as skipped
  for name, example in full.items():
    np.testing.assert_allclose(example["mos"], mos[name])  # 0-100 as shipped, higher is better
    assert set(example) == {"image", "name", "mos", "std"}
  assert full["12.JPG"]["image"][:2] == b"\xff\xd8" and full["11.bmp"]["image"][:2] == b"BM"
  assert builder.info.splits["full"].num_examples == 6


# ---------------------------------------------------------------------------------------- KADID-10k

@pytest.fixture(scope="module")
def kadid_manual(tmp_path_factory):
  root = tmp_path_factory.mktemp("kadid_manual")
  files, mos = kadid_files()
  write_zip(root / "kadid10k.zip", files)
  return root, mos


def test_kadid_features_and_splits_by_reference(kadid_manual, tmp_path):
  root, mos = kadid_manual
  builder = build("kadid10k", root, tmp_path)
  rated = {n: n[:3] for n in mos}
  full, _, test = check_splits(builder, rated, "I02_03_02.png", "I04_01_01.png")
  assert len(test) in (1, 2) and len(full) == 10
  example = full["I05_03_02.png"]
  assert (example["reference"], example["distortion"], example["level"]) == (b"I05", 3, 2)
  np.testing.assert_allclose([example["mos"], example["var"]], [3.0, 0.5])  # dmos is a 1-5 MOS
  assert "I05.png" not in full  # references are not rated


def test_kadid_seed_reproduces_and_changes_the_split(kadid_manual, tmp_path):
  root, mos = kadid_manual
  references = sorted({n[:3] for n in mos})
  assert common.seeded_split(references, iqa.FRACTIONS, 0) != common.seeded_split(
      references, iqa.FRACTIONS, 2)
  first = build("kadid10k", root, tmp_path / "a")
  again = build("kadid10k/seed_0", root, tmp_path / "b")
  other = build("kadid10k", root, tmp_path / "a", split_seed=2)
  assert other.data_dir.endswith(os.path.join("kadid10k", "seed_2", "1.0.0"))
  assert set(load(first, "test")) == set(load(again, "test")) != set(load(other, "test"))
  check_splits(other, {n: n[:3] for n in mos}, "I02_03_02.png", "I04_01_01.png", seed=2)
  assert set(load(other, "full")) == set(load(first, "full"))
  with pytest.raises(ValueError, match="unknown config 'seed'"):
    build("kadid10k/seed", root, tmp_path / "c")


def test_a_runs_dataset_split_seed_chooses_the_split(kadid_manual, tmp_path):
  root, _ = kadid_manual
  section = defaults.get_config().dataset
  section.update({"name": "kadid10k", "data_dir": str(tmp_path), "manual_dir": str(root),
                  "split_seed": 2})
  spec = resolve.section(source.DatasetSpec, section)
  assert source.build_dataset(spec).data_dir.endswith(os.path.join("kadid10k", "seed_2", "1.0.0"))
  named = dataclasses.replace(spec, name="kadid10k/seed_1")  # the name's seed wins
  assert source.build_dataset(named).data_dir.endswith(os.path.join("kadid10k", "seed_1", "1.0.0"))


def test_kadid_extracted_folder_gives_the_same_dataset(kadid_manual, tmp_path):
  root, _ = kadid_manual
  files, _ = kadid_files()
  zipped, extracted = build("kadid10k", root, tmp_path / "a"), build(
      "kadid10k", write_files(tmp_path / "manual", files), tmp_path / "b")
  for split in iqa.SPLITS:
    a, b = load(zipped, split), load(extracted, split)
    assert a.keys() == b.keys() and all(a[n]["image"] == b[n]["image"] for n in a)


# ---------------------------------------------------------------------------------------- TID2013

def test_tid2013_matches_names_whatever_their_case(tmp_path):
  files, mos = tid_files()
  builder = build("tid2013", write_files(tmp_path / "manual", files), tmp_path / "data")
  rated = {n: f"I{n[1:3]}" for n in mos}
  full, _, _ = check_splits(builder, rated, "i02_03_2.bmp", "i03_01_1.bmp")
  assert {"i25_01_1.bmp", "i25_03_2.bmp", "i04_01_1.bmp"} <= set(full)  # I25_01_1.BMP on disk
  example = full["i25_03_2.bmp"]
  assert (example["reference"], example["distortion"], example["level"]) == (b"I25", 3, 2)
  np.testing.assert_allclose(example["mos"], 8.0)  # 0-9, higher is better
  np.testing.assert_allclose(example["std"], 0.12)  # the 12th line of mos_std.txt
  assert example["image"] == files["tid2013/distorted_images/I25_03_2.bmp"]


# ---------------------------------------------------------------------------------------- LIVE

def test_live_leaves_out_reference_copies_and_keeps_folder_order(tmp_path):
  files, dmos, reference = live_files()
  builder = build("live", write_files(tmp_path / "manual", files), tmp_path / "data")
  rated = {n: r for n, r in reference.items() if n not in LIVE_REFERENCE_COPIES}
  full, _, _ = check_splits(builder, rated, set(rated) - set(LIVE_PRESENT), "jpeg/img1.bmp")
  assert set(full) == set(LIVE_PRESENT) - LIVE_REFERENCE_COPIES - {"jpeg/img1.bmp"}
  assert builder.info.metadata["reference_copies_left_out"] == 2  # left out, not "skipped"
  for name, example in full.items():  # the 982 rows follow jp2k, jpeg, wn, gblur, fastfading
    assert example["reference"].decode() == reference[name]
    np.testing.assert_allclose([example["dmos"], example["mos"]], [dmos[name], 100 - dmos[name]])
    assert example["distortion"].decode() == name.split("/")[0]
  assert full["fastfading/img174.bmp"]["dmos"] == dmos["fastfading/img174.bmp"] == 10 + 7 * 981 % 80
  worse = max(full, key=lambda n: full[n]["dmos"])
  assert full[worse]["mos"] == min(ex["mos"] for ex in full.values())  # higher mos is better


# ---------------------------------------------------------------------------------------- CSIQ

def test_csiq_numeric_names_row_4_header_and_mos_from_dmos(tmp_path):
  files, dmos, group = csiq_files()
  assert {"1600.fnoise.2.png", "fisher.BLUR.2.png"} <= set(dmos)
  builder = build("csiq", write_files(tmp_path / "manual", files), tmp_path / "data")
  full, _, _ = check_splits(builder, group, "fisher.BLUR.2.png", "1600.fnoise.2.png")
  example = full["1600.AWGN.1.png"]
  assert (example["reference"], example["distortion"], example["level"]) == (b"1600", b"awgn", 1)
  for name, example in full.items():
    np.testing.assert_allclose([example["dmos"], example["mos"], example["dmos_std"]],
                               [dmos[name], 1 - dmos[name], 0.05], rtol=1e-6)
  assert {ex["distortion"].decode() for ex in full.values()} == {f for _, f, _ in CSIQ_TYPES}


def test_csiq_reads_the_images_from_the_zip_as_shipped(tmp_path):
  files, dmos, _ = csiq_files()
  write_zip(tmp_path / "dst_imgs.zip", {k.removeprefix("CSIQ/"): v for k, v in files.items()
                                        if "dst_imgs" in k})
  (tmp_path / "csiq.DMOS.xlsx").write_bytes(files["CSIQ/csiq.DMOS.xlsx"])
  builder = build("csiq", tmp_path, tmp_path / "data")
  assert set(load(builder, "full")) == set(dmos) - {"fisher.BLUR.2.png", "1600.fnoise.2.png"}


# ---------------------------------------------------------------------------------------- all five

WRONG_SHAPES = {
    "livec": (lambda: livec_files(mos_count=14)[0],
              r"AllMOS_release.mat: AllMOS_release has shape 1 x 14; expected 1 x 15"),
    "kadid10k": (lambda: kadid_files(header="dist_img,ref_img,dmos")[0],
                 r"kadid10k/dmos.csv:1: missing column\(s\) \['var'\]"),
    "tid2013": (lambda: tid_files(std_lines=11)[0],
                r"mos_std.txt: 11 values for the 12 images of .*mos_with_names.txt"),
    "live": (lambda: live_files(rows=981)[0],
             r"dmos.mat: dmos has shape 1 x 981; expected 1 x 982"),
    "csiq": (lambda: csiq_files(header_row=12)[0],
             r"csiq.DMOS.xlsx: sheet all_by_image has no header row naming"),
}


@pytest.mark.parametrize("name", IQA_SETS)
def test_a_label_file_of_the_wrong_shape_is_an_error_naming_it(name, tmp_path):
  files, message = WRONG_SHAPES[name]
  with pytest.raises(ValueError, match=message):
    build(name, write_files(tmp_path / "manual", files()), tmp_path / "data")


@pytest.mark.parametrize("name", IQA_SETS)
def test_an_empty_manual_dir_fails_fast_with_the_instructions(name, tmp_path):
  (tmp_path / "manual").mkdir()
  (tmp_path / "manual" / "readme.txt").write_text("not the dataset")
  cls = mst.data.datasets.DATASETS[name]
  with pytest.raises(FileNotFoundError, match="not found in the manual dir") as error:
    build(name, tmp_path / "manual", tmp_path / "data")
  assert cls.MANUAL_DOWNLOAD_INSTRUCTIONS in str(error.value)


def test_registered_declared_and_listed_by_mst_datasets_help(capsys):
  for name in IQA_SETS:
    assert tfds.builder_cls(name) is mst.data.datasets.DATASETS[name]
    assert mst.data.datasets.declared_splits(f"{name}/seed_3") == ("full", "train", "test")
  with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
    datasets_cli.main(["--help"])
  listed = capsys.readouterr().out.split("datasets to prepare:")[1].split("options:")[0]
  assert all(name in listed.replace("\n", " ").replace(",", " ").split() for name in IQA_SETS)
