"""The tfds builders of mst.data.datasets (KonIQ-10k, SPAQ, AVA, PaQ-2-PiQ, custom CSVs, the
generated demo set) and their shared code (common), on tiny archives in each dataset's original
format.

Each fixture lays out a manual dir the way the real download does (support.downloads: KonIQ's CSVs
and zip, SPAQ's xlsx and TestImage/, AVA.txt with images/ and the test list, PaQ-2-PiQ's database/
CSVs and nested image folders, a custom CSV), with a greyscale JPEG, a truncated JPEG and a missing
file among the images; the builders run with the network blocked.
"""

import collections
import io
import json
import os
import socket

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from mst.cli import datasets as datasets_cli
import mst.data.datasets
from mst.data.datasets import ava
from mst.data.datasets import common
from mst.data.datasets import custom
from mst.data.datasets import demo
from mst.data.datasets import spaq
from support.downloads import PAQ_NAMES
from support.downloads import ava_manual
from support.downloads import custom_manual
from support.downloads import koniq_manual
from support.downloads import load
from support.downloads import paq_manual
from support.downloads import skipped
from support.downloads import spaq_manual
from support.downloads import write_files
from support.images import jpeg
from support.images import truncated


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
  """Building and loading must not reach out: any connection attempt fails the test."""
  def refuse(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args}")
  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket, "create_connection", refuse)


def counts(builder):
  return {split: info.num_examples for split, info in builder.info.splits.items()}


# ---------------------------------------------------------------------------------------- common

def test_seeded_split_is_deterministic_exact_and_order_free():
  names = [f"{i:03d}.jpg" for i in range(100)]
  fractions = [("train", 0.8), ("validation", 0.1), ("test", 0.1)]
  first = common.seeded_split(names, fractions, seed=0)
  assert first == common.seeded_split(names[::-1], fractions, seed=0)
  assert sorted(first.values()).count("train") == 80
  assert list(first.values()).count("validation") == list(first.values()).count("test") == 10
  assert first != common.seeded_split(names, fractions, seed=1)
  # Not the sorted order cut in pieces: the permutation mixes the names.
  assert {first[n] for n in names[:80]} != {"train"}


def test_decode_accepts_grey_and_rejects_truncated_and_garbage():
  image, reason = common.decode(jpeg(0, mode="L"))
  assert reason is None and image.shape == (24, 32, 3)
  assert common.decode(truncated(0))[1].startswith("undecodable")
  assert common.decode(b"not an image")[1].startswith("undecodable")
  assert common.decode(b"") == (None, "empty file")


def test_unknown_name_and_missing_manual_dir_fail_fast(tmp_path):
  with pytest.raises(ValueError, match="unknown dataset"):
    mst.data.datasets.build("koniq", str(tmp_path))
  with pytest.raises(FileNotFoundError, match="koniq10k_1024x768.zip"):
    mst.data.datasets.build("koniq10k", str(tmp_path / "data"), str(tmp_path / "nowhere"))
  builder = tfds.builder("koniq10k", data_dir=str(tmp_path / "data"))
  with pytest.raises(AssertionError, match="does not exist or is empty"):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(tmp_path / "nowhere")))
  (tmp_path / "empty_download").mkdir()
  (tmp_path / "empty_download" / "readme.txt").write_text("not the dataset")
  with pytest.raises(FileNotFoundError, match="koniq10k_scores_and_distributions.csv not found"):
    mst.data.datasets.build("koniq10k", str(tmp_path / "data"), str(tmp_path / "empty_download"))


def test_registered_with_tfds():
  assert set(mst.data.datasets.DATASETS) == {"koniq10k", "spaq", "ava", "paq2piq", "livec",
                                              "kadid10k", "tid2013", "live", "csiq", "custom",
                                              "demo"}
  for name, cls in mst.data.datasets.DATASETS.items():
    assert tfds.builder_cls(name) is cls


# ---------------------------------------------------------------------------------------- KonIQ

@pytest.fixture(scope="module")
def koniq(tmp_path_factory):
  root = tmp_path_factory.mktemp("koniq_manual")
  names, images = koniq_manual(root)
  builder = mst.data.datasets.build("koniq10k", str(tmp_path_factory.mktemp("data")), str(root))
  return builder, names, images


def test_koniq_official_splits_and_skips(koniq):
  builder, names, _ = koniq
  assert counts(builder) == {"train": 5, "validation": 2, "test": 1}
  listed = skipped(builder)
  assert listed.keys() == {("train", names[1]), ("test", names[9])}
  assert listed[("train", names[1])].startswith("undecodable")
  assert listed[("test", names[9])] == "missing file"
  assert builder.info.metadata["skipped"] == {"train": 1, "test": 1}
  assert set(load(builder, "validation")) == {names[6], names[7]}
  assert os.path.isfile(os.path.join(builder.data_dir, mst.data.datasets.SKIPPED_FILE))


def test_koniq_labels_on_their_scales(koniq):
  builder, names, _ = koniq
  example = load(builder, "train")[names[3]]
  np.testing.assert_allclose(example["mos"], 63)  # the sets file's MOS: 0-100, trained on
  np.testing.assert_allclose(example["mos_1to5"], 1.5 + 0.9, rtol=1e-6)  # scores file: 1-5
  np.testing.assert_allclose(example["mos_zscore"], 35.5)
  np.testing.assert_allclose(example["sd"], 0.4, rtol=1e-6)
  np.testing.assert_array_equal(example["counts"], [4, 2, 3, 4, 7])
  np.testing.assert_allclose(example["dist"], np.array([4, 2, 3, 4, 7]) / 20, rtol=1e-6)
  for example in load(builder, "train").values():
    np.testing.assert_allclose(example["dist"].sum(), 1.0, rtol=1e-6)
    assert 1 <= example["mos_1to5"] <= 5 and 60 <= example["mos"] <= 69


def test_koniq_refuses_a_sets_file_on_the_1_to_5_scale(tmp_path):
  koniq_manual(tmp_path)
  path = tmp_path / "koniq10k_distributions_sets.csv"
  lines = path.read_text().splitlines()
  rows = [line.split(",") for line in lines[1:]]
  path.write_text("\n".join([lines[0]] + [",".join(r[:7] + ["3.5"] + r[8:]) for r in rows]))
  with pytest.raises(ValueError, match="every MOS is <= 5"):
    mst.data.datasets.build("koniq10k", str(tmp_path / "data"), str(tmp_path))


def test_koniq_bytes_unchanged_and_grey_kept(koniq):
  builder, names, images = koniq
  examples = {**load(builder, "train"), **load(builder, "validation"), **load(builder, "test")}
  for name, example in examples.items():
    assert example["image"] == images[name]
  grey = examples[names[0]]["image"]
  assert tf.io.decode_jpeg(grey).shape[-1] == 1
  assert tf.io.decode_image(grey, channels=3).shape == (24, 32, 3)


def test_koniq_extracted_folder_gives_the_same_dataset(koniq, tmp_path):
  builder, names, _ = koniq
  koniq_manual(tmp_path / "manual", zipped=False)
  tfds.builder("koniq10k", data_dir=str(tmp_path / "data")).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))
  extracted = tfds.builder("koniq10k", data_dir=str(tmp_path / "data"))
  assert counts(extracted) == counts(builder)
  test = tfds.load("koniq10k", split="test", data_dir=str(tmp_path / "data"), download=False)
  assert [ex["name"].numpy() for ex in test] == [names[8].encode()]
  for split in ("train", "test"):
    a, b = load(builder, split), load(extracted, split)
    assert a.keys() == b.keys() and all(a[n]["image"] == b[n]["image"] for n in a)


def test_koniq_through_the_tfds_build_command(koniq, tmp_path):
  builder, _, _ = koniq
  root = tmp_path / "manual"
  koniq_manual(root)
  assert datasets_cli.main(["build", "koniq10k", "--manual_dir", str(root),
                           "--data_dir", str(tmp_path / "data")]) == 0
  built = tfds.builder("koniq10k", data_dir=str(tmp_path / "data"))
  assert built.is_prepared() and counts(built) == counts(builder)


# ---------------------------------------------------------------------------------------- SPAQ

@pytest.fixture(scope="module")
def spaq_manual_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("spaq_manual")
  return root, spaq_manual(root)


def test_spaq_full_split_labels_and_bytes(spaq_manual_dir, tmp_path):
  root, images = spaq_manual_dir
  builder = mst.data.datasets.build("spaq", str(tmp_path), str(root))
  names = [f"{i:05d}.jpg" for i in range(1, 11)]
  expected = common.seeded_split(names, [("train", 0.72), ("validation", 0.08), ("test", 0.2)],
                                 spaq.SPLIT_SEED)
  # The test split is the paper-style 80/20 one: validation is held out of the 80% only.
  assert expected == {name: "test" if split == "test" else expected[name] for name, split in
                      common.seeded_split(names, [("train", 0.8), ("test", 0.2)],
                                          spaq.SPLIT_SEED).items()}
  assert list(expected.values()).count("validation") == 1
  loaded = {split: load(builder, split) for split in ("train", "validation", "test")}
  for split, examples in loaded.items():
    assert set(examples) == {n for n in names[:9] if n != "00002.jpg" and expected[n] == split}
    for name, example in examples.items():
      i = int(name[:5])
      assert example["image"] == images[name]
      np.testing.assert_allclose(
          [example[k] for k in ("mos", "brightness", "colorfulness", "contrast", "noisiness",
                                "sharpness")], [10 * i - 0.5, 11 + i, 22 + i, 33 + i, 44 + i,
                                                55 + i])
  assert sum(counts(builder).values()) == 8
  listed = skipped(builder)
  assert listed[(expected["00010.jpg"], "00010.jpg")] == "missing file"
  assert listed[(expected["00002.jpg"], "00002.jpg")].startswith("undecodable")


def test_spaq_shorter_side_512_resizes_large_images_only(spaq_manual_dir, tmp_path):
  root, images = spaq_manual_dir
  builder = mst.data.datasets.build("spaq/shorter_side_512", str(tmp_path), str(root))
  assert builder.data_dir.endswith(os.path.join("spaq", "shorter_side_512", "1.1.0"))
  examples = {**load(builder, "train"), **load(builder, "validation"), **load(builder, "test")}
  for name in ("00003.jpg", "00004.jpg"):
    stored = examples[name]["image"]
    assert stored[:8] == b"\x89PNG\r\n\x1a\n"  # lossless: no second compression
    # The stored pixels are exactly the reference resize of the decoded original: PIL's
    # antialiased bilinear to a 512 px shorter side (520x780 -> 512x768).
    original = Image.fromarray(tf.io.decode_jpeg(images[name], channels=3).numpy())
    expected = np.asarray(original.resize((768, 512), Image.BILINEAR))
    np.testing.assert_array_equal(tf.io.decode_png(stored).numpy(), expected)
  assert examples["00005.jpg"]["image"] == images["00005.jpg"]  # already small: untouched
  assert len(examples) == 8


# ---------------------------------------------------------------------------------------- AVA

@pytest.fixture(scope="module")
def ava_built(tmp_path_factory):
  root = tmp_path_factory.mktemp("ava_manual")
  lines, images = ava_manual(root)
  builder = mst.data.datasets.build("ava", str(tmp_path_factory.mktemp("data")), str(root))
  return builder, lines, images


def test_ava_splits_and_skips(ava_built):
  builder, _, _ = ava_built
  rest = [f"{100 + i}.jpg" for i in range(1, 13)]
  expected = common.seeded_split(rest, [("train", 0.95), ("validation", 0.05)], ava.SPLIT_SEED)
  assert list(expected.values()).count("validation") == 1
  assert set(load(builder, "test")) == {"113.jpg", "114.jpg"}
  assert set(load(builder, "validation")) == {n for n, s in expected.items() if s == "validation"}
  assert sum(counts(builder).values()) == 12
  listed = skipped(builder)
  assert listed[(expected["107.jpg"], "107.jpg")] == "missing file"
  assert listed[(expected["108.jpg"], "108.jpg")].startswith("undecodable")


def test_ava_labels_and_bytes(ava_built):
  builder, lines, images = ava_built
  examples = {**load(builder, "train"), **load(builder, "validation"), **load(builder, "test")}
  for line in lines:
    values = [int(v) for v in line.split()]
    name = f"{values[1]}.jpg"
    if name not in examples:
      continue
    example, votes = examples[name], np.array(values[2:12])
    np.testing.assert_allclose(example["mos"], (np.arange(1, 11) * votes).sum() / votes.sum(),
                               rtol=1e-6)
    np.testing.assert_allclose(example["dist"], votes / votes.sum(), rtol=1e-6)
    np.testing.assert_allclose(example["dist"].sum(), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(example["counts"], votes)
    assert example["num_votes"] == votes.sum() and example["image_id"] == values[1]
    np.testing.assert_array_equal(example["semantic_tags"], values[12:14])
    assert example["challenge_id"] == values[14]
    assert example["image"] == images[values[1]]
  assert tf.io.decode_image(examples["105.jpg"]["image"], channels=3).shape[-1] == 3


# ---------------------------------------------------------------------------------------- PaQ-2-PiQ

def test_paq2piq_official_validation_and_full_size_test(tmp_path):
  database = paq_manual(tmp_path / "manual", official_validation=True)
  builder = mst.data.datasets.build("paq2piq", str(tmp_path / "data"), str(tmp_path / "manual"))
  assert set(load(builder, "test")) == {PAQ_NAMES[0], PAQ_NAMES[6]}
  assert set(load(builder, "validation")) == {PAQ_NAMES[2], PAQ_NAMES[3]}  # 13 is missing
  assert counts(builder)["train"] == 9
  assert skipped(builder) == {("validation", PAQ_NAMES[13]): "missing file"}
  reloaded = tfds.builder("paq2piq", data_dir=str(tmp_path / "data"))
  assert "is_valid" in reloaded.info.metadata["validation_rule"]
  assert reloaded.info.metadata["skipped"] == {"validation": 1}
  example = load(builder, "train")[PAQ_NAMES[9]]
  np.testing.assert_allclose(example["mos"], 62.5)  # 0-100 scale, as in labels_image.csv
  assert example["image"] == (database / PAQ_NAMES[9]).read_bytes()


def test_paq2piq_seeded_validation_without_the_official_flags(tmp_path):
  paq_manual(tmp_path / "manual", official_validation=False)
  builder = mst.data.datasets.build("paq2piq", str(tmp_path / "data"), str(tmp_path / "manual"))
  rest = [n for i, n in enumerate(PAQ_NAMES) if i not in (0, 6)]
  expected = common.seeded_split(rest, [("train", 0.8), ("validation", 0.2)], 0)
  valid = {n for n, s in expected.items() if s == "validation"}
  assert len(valid) == 2
  assert set(load(builder, "validation")) == valid - {PAQ_NAMES[13]}
  assert "seeded" in builder.info.metadata["validation_rule"]


# ---------------------------------------------------------------------------------------- custom

def test_custom_with_split_column(tmp_path):
  csv_path, image_dir = custom_manual(tmp_path / "mine", with_split=True)
  builder = mst.data.datasets.build("custom", str(tmp_path / "data"), csv=csv_path,
                                    image_dir=image_dir)
  assert counts(builder) == {"train": 5, "validation": 2, "test": 1}
  assert skipped(builder)[("test", "img9.jpg")] == "missing file"
  assert skipped(builder)[("train", "img3.jpg")].startswith("undecodable")
  example = load(builder, "train")["sub/img4.png"]
  np.testing.assert_allclose(example["mos"], 1.0)
  assert example["image"] == (tmp_path / "mine" / "images" / "sub" / "img4.png").read_bytes()
  assert os.path.basename(os.path.dirname(builder.data_dir)) == builder.builder_config.name
  again = mst.data.datasets.build("custom", str(tmp_path / "data"), csv=csv_path,
                                  image_dir=image_dir)
  assert again.data_dir == builder.data_dir and again.is_prepared()


def test_custom_seeded_split_and_distinct_folders(tmp_path):
  csv_path, image_dir = custom_manual(tmp_path / "mine", with_split=False)
  builder = mst.data.datasets.build("custom", str(tmp_path / "data"), csv=csv_path,
                                    image_dir=image_dir)
  names = [f"sub/img{i}.png" if i == 4 else f"img{i}.jpg" for i in range(10)]
  expected = common.seeded_split(names, custom.FRACTIONS, seed=0)
  for split in ("train", "validation", "test"):
    assert set(load(builder, split)) == {
        n for n in names if expected[n] == split and n not in ("img3.jpg", "img9.jpg")}
  other_seed = custom.CustomConfig(csv=csv_path, image_dir=image_dir, split_seed=1)
  assert other_seed.name != builder.builder_config.name
  copy = tmp_path / "copy.csv"
  copy.write_bytes((tmp_path / "mine" / "labels.csv").read_bytes())
  assert custom.CustomConfig(csv=str(copy), image_dir=image_dir).name != other_seed.name


def test_custom_through_the_tfds_build_command(tmp_path):
  csv_path, image_dir = custom_manual(tmp_path / "mine", with_split=True)
  config = json.dumps({"csv": csv_path, "image_dir": image_dir})
  assert datasets_cli.main(
      ["custom", "--config", config, "--data-dir", str(tmp_path / "data")]) == 0
  builder = mst.data.datasets.build("custom", str(tmp_path / "data"), csv=csv_path,
                                    image_dir=image_dir)
  assert builder.is_prepared() and counts(builder)["train"] == 5


def test_custom_rejects_bad_split_values(tmp_path):
  write_files(tmp_path, {"labels.csv": "image,mos,split\na.jpg,1,training\n"})
  with pytest.raises(ValueError, match="labels.csv:2: split 'training'"):
    mst.data.datasets.build("custom", str(tmp_path / "data"), csv=str(tmp_path / "labels.csv"))


@pytest.mark.slow
def test_demo_set_is_generated_split_by_photo_with_graded_mos(tmp_path):
  builder = mst.data.datasets.build("demo", str(tmp_path))
  counts = {split: info.num_examples for split, info in builder.info.splits.items()}
  per_crop = 1 + len(demo.LEVELS)  # pristine + one image per level
  crops = {"train": demo.TRAIN_CROPS_PER_PHOTO, "validation": demo.CROPS_PER_PHOTO,
           "test": demo.CROPS_PER_PHOTO}
  photos = collections.Counter(demo.SOURCES.values())
  assert counts == {split: n * crops[split] * per_crop for split, n in photos.items()}
  test = list(builder.as_dataset(split="test").as_numpy_iterator())
  test_photos = {n.decode().rsplit("_", 2)[0] for n in (e["name"] for e in test)}
  assert test_photos == {"astronaut", "chelsea", "coffee"}
  train_names = {e["name"].decode() for e in builder.as_dataset(split="train").as_numpy_iterator()}
  assert not any(name.startswith(tuple(test_photos)) for name in train_names)
  by_level = collections.defaultdict(set)
  levels_of_crop = collections.defaultdict(list)
  kinds_at_level = collections.defaultdict(set)
  for example in test:
    name = example["name"].decode()
    crop, variant = name.rsplit("_", 1)
    level = int(variant[-5])
    by_level[level].add(float(example["mos"]))
    levels_of_crop[crop].append(level)
    kinds_at_level[level].add(variant[:-5])
    assert Image.open(io.BytesIO(example["image"])).size == (demo.CROP_SIZE,) * 2, name
  assert by_level == {0: {90.0}, 1: {70.0}, 2: {50.0}, 3: {30.0}, 4: {10.0}}
  # Every crop is shown at every level, so its content alone says nothing about its score.
  assert all(sorted(levels) == [0, 1, 2, 3, 4] for levels in levels_of_crop.values())
  assert kinds_at_level[0] == {"pristine"}
  assert all(kinds_at_level[level] == set(demo.DISTORTIONS) for level in demo.LEVELS)


def test_demo_generator_is_deterministic_and_keeps_detailed_crops(tmp_path):
  small = dict(crops_per_photo=2, train_crops_per_photo=2)
  first = demo.write_demo_set(str(tmp_path / "a"), seed=3, **small)
  second = demo.write_demo_set(str(tmp_path / "b"), seed=3, **small)
  with open(first) as f, open(second) as g:
    rows = f.read()
    assert rows == g.read()
  for name in os.listdir(tmp_path / "a" / "images"):
    with open(tmp_path / "a" / "images" / name, "rb") as f, \
         open(tmp_path / "b" / "images" / name, "rb") as g:
      assert f.read() == g.read(), name
  # Pristine crops of photos with detail everywhere meet the flatness limit.
  for photo in ("chelsea", "coffee", "grass"):
    for index in range(2):
      image = Image.open(tmp_path / "a" / "images" / f"{photo}_{index:03d}_pristine0.png")
      assert image.size == (demo.CROP_SIZE, demo.CROP_SIZE)
      assert demo.flat_fraction(image) <= demo.MAX_FLAT
  # Each photo has its own random stream: fewer training crops leave the test crops alone.
  demo.write_demo_set(str(tmp_path / "d"), seed=3, crops_per_photo=2, train_crops_per_photo=1)
  for name in os.listdir(tmp_path / "a" / "images"):
    if name.startswith(("astronaut", "chelsea", "coffee")):
      with open(tmp_path / "a" / "images" / name, "rb") as f, \
           open(tmp_path / "d" / "images" / name, "rb") as g:
        assert f.read() == g.read(), name
  demo.write_demo_set(str(tmp_path / "c"), seed=4, **small)
  crop = "chelsea_000_pristine0.png"
  assert (np.asarray(Image.open(tmp_path / "a" / "images" / crop))
          != np.asarray(Image.open(tmp_path / "c" / "images" / crop))).any()  # seed matters


def test_demo_distortions_grow_with_level():
  crop = demo.random_crop(demo.source_photo("chelsea.png"), np.random.default_rng(0), 96, 96)
  pixels = np.asarray(crop, np.float32)
  for kind, distort in demo.DISTORTIONS.items():
    errors = [np.abs(np.asarray(distort(crop, level, np.random.default_rng(1)), np.float32)
                     - pixels).mean() for level in demo.LEVELS]
    assert errors == sorted(errors) and errors[0] > 0, (kind, errors)
