"""The prepared input pipeline (mst.data.prepared): its batches equal the decoding pipeline's,
flips and resumes included; its folder is reused while the preprocessing is the same and not
otherwise; a config whose augmentation needs the decoded image is refused."""

import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from mst.config import defaults
from mst.configure import resolve
from mst.config import schema
from mst.data import augmentation
from mst.data import datasets
from mst.data import host_preprocess
from mst.data import multiscale
from mst.data import pipeline
from mst.data import prepared
from mst.runtime import sharding
from mst.training import data as training_data
from support import REPO
from support.configs import set_fields
from support.images import write_csv_dataset

# Two resized copies and l = 6 native tokens: images wider than 6 patches are cut inside their
# first patch row, taller ones after a few rows, and small ones padded.
PP = multiscale.MultiScaleConfig(patch_size=32, grid_size=4, longer_side_lengths=(64, 128),
                                 max_seq_len_from_original_res=6)
# Float16 patches: half a float16 step below 1.0, 1/32 of a grey level on the [-1, 1] scale.
TOLERANCE = 2.0 ** -12


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
  root = tmp_path_factory.mktemp("prepared_data")
  csv = write_csv_dataset(root / "images", count=13, splits=("train",), sizes=(20, 220))
  grey = np.random.default_rng(1).integers(0, 256, (75, 150), dtype=np.uint8)
  Image.fromarray(grey).save(root / "images" / "3.png")  # decoded to 3 channels
  return datasets.build("custom", str(root / "tfds"), csv=str(csv))


@pytest.fixture(scope="module")
def split(builder, tmp_path_factory):
  return prepared.prepare(builder, "train", PP, str(tmp_path_factory.mktemp("prepared")))


def _batches(builder, count, **kwargs):
  kwargs = {"batch_size": 3, "pp_config": PP, "seed": 1, **kwargs}
  data = pipeline.train_dataset(builder, "train", **kwargs)
  return [batch for _, batch in zip(range(count), data.as_numpy_iterator())]


def _assert_equal_batches(today, ours, patches_dtype=np.float16):
  assert len(today) == len(ours)
  for a, b in zip(today, ours):
    assert a.keys() == b.keys()
    for key in a:
      assert a[key].shape == b[key].shape, key
      if key == "patches":
        assert b[key].dtype == patches_dtype
        np.testing.assert_allclose(b[key].astype(np.float32), a[key], rtol=0, atol=TOLERANCE)
      else:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)


@pytest.mark.parametrize("host", [pipeline.Host(), pipeline.Host(1, 3)])
def test_batches_equal_the_decoding_pipelines_with_flips(builder, split, host):
  augment = augmentation.Augment(flip_prob=0.5)
  today = _batches(builder, 9, augment=augment, host=host)
  ours = _batches(builder, 9, augment=augment, host=host, prepared=split)
  _assert_equal_batches(today, ours)
  # Some pixels differ by float16 rounding, not more: the bound is reached, not loose.
  gap = max(np.abs(a["patches"] - b["patches"].astype(np.float32)).max()
            for a, b in zip(today, ours))
  assert TOLERANCE / 4 < gap <= TOLERANCE


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_always_and_never_flipped_equal_the_decoding_pipelines(builder, split, flip_prob):
  # Every image resized from its mirror image (1.0) or never (0.0): the two stored copies.
  augment = augmentation.Augment(flip_prob=flip_prob)
  _assert_equal_batches(_batches(builder, 5, augment=augment),
                        _batches(builder, 5, augment=augment, prepared=split))


def test_the_mirrored_copy_is_not_the_flipped_resize(split):
  # Why both copies are stored: resizing the mirror image is not mirroring the resized image.
  gaps = []
  for index, (height, width, rows) in enumerate(split.sizes):
    data = np.fromfile(f"{split.folder}/{index:08d}.bin", np.uint8)
    rh, rw = host_preprocess.resized_size(int(height), int(width), 64)
    start, size = rows * width * 3, rh * rw * 3 * 2
    plain, mirrored = (data[start + i * size:start + (i + 1) * size].view("<f2")
                       .reshape(rh, rw, 3).astype(np.float32) for i in (0, 1))
    gaps.append(np.abs(mirrored - plain[:, ::-1]).max())
  assert 1e-3 < max(gaps) < 0.1


@pytest.mark.parametrize("start_step", [2, 7])
def test_resume_continues_exactly_where_the_stream_was(builder, split, start_step):
  # 13 examples, batches of 3: step 7 starts inside epoch 1; mixup mixes each batch as today.
  augment = augmentation.Augment(flip_prob=0.5, mixup_alpha=0.4)
  full = _batches(builder, start_step + 2, augment=augment, prepared=split)
  resumed = _batches(builder, 2, augment=augment, prepared=split, start_step=start_step)
  for a, b in zip(full[start_step:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  # Mixup mixes in float32, as today.
  _assert_equal_batches(_batches(builder, 2, augment=augment, start_step=start_step), resumed,
                        np.float32)


def test_a_prepared_folder_is_reused_and_a_changed_config_gets_its_own(builder, split,
                                                                        monkeypatch):
  root = split.folder.rsplit("/", 2)[0]

  def refuse(*args):
    raise AssertionError("prepared again")
  monkeypatch.setattr(prepared, "_write", refuse)
  again = prepared.prepare(builder, "train", PP, root)
  assert again.folder == split.folder
  np.testing.assert_array_equal(again.sizes, split.sizes)
  assert prepared.folder_of(builder, "train", PP, root) == split.folder
  for changed in ({"max_seq_len_from_original_res": 8}, {"longer_side_lengths": (64,)},
                  {"patch_size": 16}, {"grid_size": 10}):
    other = multiscale.MultiScaleConfig(**{**vars(PP), **changed})
    assert prepared.folder_of(builder, "train", other, root) != split.folder, changed
  assert prepared.folder_of(builder, "train[:50%]", PP, root) != split.folder


def test_a_split_prepared_for_other_preprocessing_is_refused(builder, split):
  every_patch = multiscale.MultiScaleConfig(patch_size=32, grid_size=4,
                                            longer_side_lengths=(64,))  # l = -1: evaluation's
  with pytest.raises(ValueError, match=r"set max_seq_len_from_original_res \(l\) >= 0"):
    prepared.prepare(builder, "train", every_patch, split.folder)
  other = multiscale.MultiScaleConfig(patch_size=32, grid_size=4, longer_side_lengths=(64,),
                                      max_seq_len_from_original_res=6)
  with pytest.raises(ValueError, match="was prepared for"):
    _batches(builder, 1, pp_config=other, prepared=split)


@pytest.mark.parametrize("changes, named", [
    ({"augment__crop": True}, "augment.crop=True"),
    ({"augment__randaugment_layers": 2}, "augment.randaugment_layers=2")])
def test_augmentation_that_needs_the_decoded_image_is_refused(changes, named):
  config = set_fields(defaults.get_config("runlocal"), data__prepared_dir="/tmp/p", **changes)
  with pytest.raises(resolve.ConfigError, match=rf"data.prepared_dir='/tmp/p': .*{named}.*fix: "
                     r"set --config.data.prepared_dir=''"):
    resolve.run(config)
  config.data.prepared_dir = ""
  resolve.run(config)  # the decoding pipeline takes it
  config = set_fields(defaults.get_config("runlocal"), data__prepared_dir="/tmp/p",
                      augment__mixup_alpha=0.2)
  assert resolve.run(config).layout.prepared_dir == "/tmp/p"  # mixup mixes batches: fine


def test_older_configs_decode_every_image():
  assert schema.ADDED_KEYS[3] == {"data.prepared_dir": ""}
  assert defaults.get_config().data.prepared_dir == ""


@pytest.mark.slow  # prepares a split and builds TrainingData on 8 devices
def test_training_reads_the_prepared_split_and_gets_float32_patches(csv_dataset, tmp_path):
  config = set_fields(defaults.get_config("runlocal"), dataset__name="custom",
                      dataset__csv=str(csv_dataset), dataset__data_dir=str(tmp_path / "tfds"),
                      data__prepared_dir=str(tmp_path / "prepared"))
  mesh = sharding.make_mesh()
  run = resolve.run(config, mesh.devices.size)
  data = training_data.TrainingData(run, mesh)
  assert data.prepared.folder.startswith(str(tmp_path / "prepared"))
  batch, (images, _) = next(data.train_batches(0))
  assert batch["patches"].dtype == np.float32 and images == run.loop.batch_size
  config.data.prepared_dir = ""
  today, _ = next(training_data.TrainingData(resolve.run(config), mesh).train_batches(0))
  np.testing.assert_allclose(np.asarray(batch["patches"]), np.asarray(today["patches"]),
                             rtol=0, atol=TOLERANCE)
  np.testing.assert_array_equal(np.asarray(batch["mask"]), np.asarray(today["mask"]))


@pytest.mark.experiments
def test_the_pipeline_benchmark_prints_both_paths_and_the_cores_per_chip():
  # A fresh process: the script pins threads, which TensorFlow allows only before its first op.
  done = subprocess.run(
      [sys.executable, str(REPO / "experiments" / "benchmark_train.py"), "--part",
       "pipeline", "--images", "8", "--repeats", "1"],
      capture_output=True, text=True, check=True, cwd=REPO)
  rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in done.stdout.splitlines()
          if line.startswith("| ")]  # [0] and [5] are the two tables' headers
  paths = [(row[0].split()[0], row[1].split()[0]) for row in rows[1:5]]
  assert paths == [("KonIQ-like", "today"), ("KonIQ-like", "prepared"), ("AVA-like", "today"),
                   ("AVA-like", "prepared")]
  assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows[1:5])
  chips = {row[0]: [int(cell) for cell in row[4:]] for row in rows[6:]}
  assert list(chips) == ["TPU v4", "TPU v5e", "TPU v5p", "H100", "H200"]
  assert all(need >= 1 for needs in chips.values() for need in needs)
