"""The prepared cache can be trusted (mst.data.prepared): a rebuilt dataset gets a new folder, a
damaged file or a stored position out of range is an error naming the file and the folder to
delete, and one process per machine prepares a folder while another waits for it."""

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import threading

from absl import logging
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from mst.data import augmentation
from mst.data import datasets
from mst.data import multiscale
from mst.data import pipeline
from mst.data import prepared
from support import REPO
from support.images import write_csv_dataset

# 4 + 16 resized tokens and l = 6 native ones: 26 tokens, their positions the file's last 26 * 9
# bytes (spatial_idx, scale_idx as int32, mask as uint8).
PP = multiscale.MultiScaleConfig(patch_size=32, grid_size=4, longer_side_lengths=(64, 128),
                                 max_seq_len_from_original_res=6)
TOKENS = 26


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  root = tmp_path_factory.mktemp("trust_data")
  return root, write_csv_dataset(root / "images", count=5, splits=("train",), sizes=(20, 90))


@pytest.fixture(scope="module")
def builder(images):
  root, csv = images
  return datasets.build("custom", str(root / "tfds"), csv=str(csv))


@pytest.fixture(scope="module")
def split(builder, tmp_path_factory):
  return prepared.prepare(builder, "train", PP, str(tmp_path_factory.mktemp("prepared")))


def _read_all(split):
  """Every example of the split, read through `PreparedSplit.features` (flips on)."""
  augment = augmentation.Augment(flip_prob=0.5)
  data = tf.data.Dataset.range(len(split.sizes)).map(pipeline.as_written(
      lambda i: split.features(i, augment, tf.stack([tf.constant(1, tf.int64), i]))))
  return list(data.as_numpy_iterator())


def _batches(builder, **kwargs):
  data = pipeline.train_dataset(builder, "train", batch_size=5, pp_config=PP, seed=3,
                                augment=augmentation.Augment(flip_prob=0.5), **kwargs)
  return next(data.as_numpy_iterator())


def _copy(split, tmp_path):
  """A copy of the prepared folder, loaded: each test damages its own."""
  folder = str(tmp_path / "copy")
  shutil.copytree(split.folder, folder)
  return folder


def test_a_rebuilt_dataset_gets_a_new_folder_and_serves_its_new_images(tmp_path):
  csv = write_csv_dataset(tmp_path / "images", count=4, splits=("train",), sizes=(30, 70))
  data_dir, root = str(tmp_path / "tfds"), str(tmp_path / "prepared")
  first = prepared.prepare(datasets.build("custom", data_dir, csv=str(csv)), "train", PP, root)
  for name in ("0.png", "1.png", "2.png", "3.png"):  # new pixels, same names, same CSV
    path = tmp_path / "images" / name
    Image.fromarray(255 - np.asarray(Image.open(path))).save(path)
  rebuilt = datasets.build("custom", data_dir, csv=str(csv), overwrite=True)
  assert os.fspath(rebuilt.data_dir).startswith(data_dir)  # same CSV: the same tfds folder
  second = prepared.prepare(rebuilt, "train", PP, root)
  assert second.folder != first.folder
  parent = os.path.dirname(first.folder)
  assert sorted(name for name in os.listdir(parent) if os.path.isdir(os.path.join(parent, name))
                ) == sorted([os.path.basename(first.folder), os.path.basename(second.folder)])
  today, ours = _batches(rebuilt), _batches(rebuilt, prepared=second)
  np.testing.assert_allclose(ours["patches"].astype(np.float32), today["patches"], rtol=0,
                             atol=2.0 ** -12)
  stale = _batches(rebuilt, prepared=first)
  assert np.abs(stale["patches"].astype(np.float32) - today["patches"]).max() > 0.5


def _damaged_error(folder, name, problem=""):
  """The error's pattern: the file, the problem (a regex), the folder to delete."""
  return rf"{re.escape(f'{folder}/{name}')} {problem}.*delete the folder {re.escape(folder)} "


@pytest.mark.parametrize("damage", ["truncate", "flip a bit"])
def test_a_damaged_file_is_an_error_naming_it_and_the_folder_to_delete(split, tmp_path, damage):
  folder = _copy(split, tmp_path)
  path = os.path.join(folder, "00000002.bin")
  data = bytearray(open(path, "rb").read())
  if damage == "truncate":
    data = data[:len(data) // 2]
  else:
    data[len(data) // 3] ^= 0x10  # one pixel's bit: same length, same positions
  with open(path, "wb") as f:
    f.write(bytes(data))
  _read_all(prepared.load(split.folder, PP))  # the original folder still reads
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=_damaged_error(folder, "00000002.bin") + ".*prepares it anew"):
    _read_all(prepared.load(folder, PP))


def test_a_file_is_hashed_on_its_first_read_in_a_process_only(split, tmp_path):
  folder = _copy(split, tmp_path)
  loaded = prepared.load(folder, PP)
  first = _read_all(loaded)
  path = os.path.join(folder, "00000001.bin")
  data = bytearray(open(path, "rb").read())
  data[10] ^= 0x01  # a native pixel's lowest bit
  with open(path, "wb") as f:
    f.write(bytes(data))
  again = _read_all(loaded)  # checked already: not hashed again (its length and positions are)
  assert np.abs(again[1]["patches"].astype(np.float32)
                - first[1]["patches"].astype(np.float32)).max() > 0
  with pytest.raises(tf.errors.InvalidArgumentError, match=_damaged_error(folder, "00000001.bin")):
    _read_all(prepared.load(folder, PP))  # another process's first read


@pytest.mark.parametrize("name, damage, problem", [
    (prepared.INDEX, "flip a bit", f"its hash is not the one in {prepared.MANIFEST}"),
    (prepared.MANIFEST, "truncate", "is not JSON")])
def test_a_damaged_index_or_manifest_is_an_error(split, tmp_path, name, damage, problem):
  folder = _copy(split, tmp_path)
  path = os.path.join(folder, name)
  data = bytearray(open(path, "rb").read())
  if damage == "truncate":
    data = data[:len(data) // 2]
  else:
    data[len(data) // 2] ^= 0x01
  with open(path, "wb") as f:
    f.write(bytes(data))
  with pytest.raises(prepared.DamagedError) as error:
    prepared.load(folder, PP)
  assert str(error.value).startswith(f"{path} ")
  assert problem in str(error.value) and f"delete the folder {folder} " in str(error.value)


def _rewrite_sealed(folder, index, data):
  """Writes example `index`'s file and the hashes that vouch for it, as a writer with a bug (or
  a hostile one) would: its hash agrees, so only the range checks can catch it."""
  with open(os.path.join(folder, f"{index:08d}.bin"), "wb") as f:
    f.write(data)
  stored = dict(np.load(os.path.join(folder, prepared.INDEX)))
  stored[prepared.HASH][index] = prepared.file_hash(data)
  _write_index(folder, stored)


def _write_index(folder, stored):
  """Writes index.npz and the manifest's hash of it."""
  buffer = io.BytesIO()
  np.savez(buffer, **stored)
  with open(os.path.join(folder, prepared.INDEX), "wb") as f:
    f.write(buffer.getvalue())
  with open(os.path.join(folder, prepared.MANIFEST)) as f:
    manifest = json.load(f)
  manifest["index_hash"] = prepared.file_hash(buffer.getvalue())
  with open(os.path.join(folder, prepared.MANIFEST), "w") as f:
    json.dump(manifest, f)


def _padded_token(folder):
  """(example, token) of a padding token: its mask byte is 0."""
  for index in range(5):
    data = open(os.path.join(folder, f"{index:08d}.bin"), "rb").read()
    padding = np.flatnonzero(np.frombuffer(data[-TOKENS:], np.uint8) == 0)
    if padding.size:
      return index, int(padding[0])
  raise AssertionError("no example has padding tokens")


@pytest.mark.parametrize("field, token, value, problem", [
    ("spatial_idx", 0, 16, r"spatial_idx outside \[0, G\*G = 16\)"),  # G = 4
    ("spatial_idx", 3, -1, r"spatial_idx outside \[0, G\*G = 16\)"),
    ("scale_idx", 5, 3, "scale_idx other than the scale of its token"),  # 3 scales: 0, 1, 2
    ("scale_idx", 0, 1, "scale_idx other than the scale of its token"),
    ("mask", 1, 2, "mask that is not 1 on exactly its real patches"),
    ("mask", "padding", 1, "mask that is not 1 on exactly its real patches")])
def test_a_stored_position_out_of_range_is_an_error(split, tmp_path, field, token, value,
                                                    problem):
  folder = _copy(split, tmp_path)
  index = 4
  if token == "padding":
    index, token = _padded_token(folder)
  path = os.path.join(folder, f"{index:08d}.bin")
  data = bytearray(open(path, "rb").read())
  start = len(data) - TOKENS * 9 + {"spatial_idx": 0, "scale_idx": TOKENS * 4,
                                    "mask": TOKENS * 8}[field]
  width = 1 if field == "mask" else 4
  position = start + token * width
  data[position:position + width] = np.array(value, "<i4" if width == 4 else "u1").tobytes()
  _rewrite_sealed(folder, index, bytes(data))
  loaded = prepared.load(folder, PP)  # the hashes agree
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=_damaged_error(folder, f"{index:08d}.bin", f"has a {problem}")):
    _read_all(loaded)


def test_a_size_the_index_cannot_hold_is_an_error(split, tmp_path):
  folder = _copy(split, tmp_path)
  stored = dict(np.load(os.path.join(folder, prepared.INDEX)))
  stored["size"][0, 2] = stored["size"][0, 0] + 1  # more native rows than the image has
  _write_index(folder, stored)  # its hash agrees
  with pytest.raises(prepared.DamagedError,
                     match=_damaged_error(folder, prepared.INDEX, "has a size that is not an")):
    prepared.load(folder, PP)


def test_two_threads_prepare_a_folder_once_and_the_second_waits(builder, tmp_path,
                                                                monkeypatch):
  write, writes, messages = prepared._write, [], []
  both_started = threading.Barrier(2)

  def slow_write(*args):
    writes.append(threading.get_ident())
    threading.Event().wait(1.0)  # the other thread arrives while this one prepares
    write(*args)
  monkeypatch.setattr(prepared, "_write", slow_write)
  monkeypatch.setattr(logging, "info", lambda message, *args, **kwargs: messages.append(
      str(message) % args if args else str(message)))
  results = [None, None]

  def run(slot):
    both_started.wait()
    results[slot] = prepared.prepare(builder, "train", PP, str(tmp_path))
  threads = [threading.Thread(target=run, args=(slot,)) for slot in range(2)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert len(writes) == 1
  assert results[0].folder == results[1].folder
  np.testing.assert_array_equal(results[0].hashes, results[1].hashes)
  assert sum(m.startswith("Preparing the train split") for m in messages) == 1
  assert sum(m.startswith("Another process on this machine is preparing") for m in messages) == 1
  assert sum(m.startswith("Reading the train split another process prepared") for m in messages
             ) == 1


_PREPARE = textwrap.dedent("""
    import os, sys, time
    from absl import logging
    from mst.data import datasets, multiscale, prepared
    logging.set_verbosity(logging.INFO)
    builder = datasets.build("custom", sys.argv[1], csv=sys.argv[2])
    pp = multiscale.MultiScaleConfig(patch_size=32, grid_size=4, longer_side_lengths=(64, 128),
                                     max_seq_len_from_original_res=6)
    write = prepared._write
    def slow_write(*args):
      print("WRITE", flush=True)
      time.sleep(1)  # the other process arrives while this one prepares
      write(*args)
    prepared._write = slow_write
    print("READY", flush=True)
    while not os.path.exists(sys.argv[4]):
      time.sleep(0.01)
    split = prepared.prepare(builder, "train", pp, sys.argv[3])
    print("FOLDER", split.folder, split.sizes.tolist(), flush=True)
""")


@pytest.mark.slow  # two processes that import TensorFlow
def test_two_processes_prepare_a_folder_once_and_the_second_waits(images, builder, tmp_path):
  root, csv = images
  go = tmp_path / "go"
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  processes = [subprocess.Popen(
      [sys.executable, "-c", _PREPARE, str(root / "tfds"), str(csv), str(tmp_path / "prepared"),
       str(go)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
      for _ in range(2)]
  outputs = []
  for process in processes:  # both have imported TensorFlow and built the dataset
    lines = []
    while not lines or lines[-1] not in ("READY\n", ""):
      lines.append(process.stdout.readline())
    outputs.append("".join(lines))
  go.touch()
  outputs = [before + process.communicate(timeout=120)[0]
             for before, process in zip(outputs, processes)]
  assert [process.returncode for process in processes] == [0, 0], outputs
  text = "".join(outputs)
  assert text.count("WRITE\n") == 1 and text.count("Preparing the train split") == 1, text
  assert text.count("Another process on this machine is preparing") == 1, text
  assert text.count("Reading the train split another process prepared meanwhile") == 1, text
  folders = [line for output in outputs for line in output.splitlines()
             if line.startswith("FOLDER ")]
  assert len(folders) == 2 and folders[0] == folders[1]
  assert folders[0].split()[1].startswith(str(tmp_path / "prepared"))


_POD_HOST = textwrap.dedent("""
    import sys
    import jax
    jax.config.update("jax_enable_preemption_service", False)
    jax.distributed.initialize(f"127.0.0.1:{sys.argv[4]}", num_processes=2,
                               process_id=int(sys.argv[5]))
    from absl import logging
    from mst.data import datasets, multiscale, prepared
    from mst.training import data
    logging.set_verbosity(logging.INFO)
    builder = datasets.build("custom", sys.argv[1], csv=sys.argv[2])
    pp = multiscale.MultiScaleConfig(patch_size=32, grid_size=4, longer_side_lengths=(64, 128),
                                     max_seq_len_from_original_res=6)
    write = prepared._write
    def counted_write(*args):
      print("WRITE", flush=True)
      write(*args)
    prepared._write = counted_write
    root = sys.argv[3].replace("HOST", sys.argv[5])
    split = data.prepare_once_per_pod(builder, "train", pp, root)
    print("FOLDER", split.folder, split.sizes.tolist(), flush=True)
""")


def _pod(images, root):
  """Runs `prepare_once_per_pod` on a pod of 2 processes; their outputs."""
  data_root, csv = images
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  processes = [subprocess.Popen(
      [sys.executable, "-c", _POD_HOST, str(data_root / "tfds"), str(csv), root, str(port),
       str(i)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
      for i in range(2)]
  outputs = [process.communicate(timeout=180)[0] for process in processes]
  assert [process.returncode for process in processes] == [0, 0], outputs
  return outputs


@pytest.mark.slow  # two JAX processes
def test_a_pod_sharing_the_folder_prepares_it_once_on_process_0(images, builder, tmp_path):
  outputs = _pod(images, str(tmp_path / "shared"))
  assert [output.count("WRITE\n") for output in outputs] == [1, 0], outputs
  assert "Waiting for process 0 to prepare" in outputs[1], outputs[1]
  folders = [line for output in outputs for line in output.splitlines()
             if line.startswith("FOLDER ")]
  assert len(folders) == 2 and folders[0] == folders[1], folders
  assert not [name for name in os.listdir(tmp_path / "shared" / os.listdir(tmp_path / "shared")[0])
              if ".host0-" in name], "the probe file was left behind"


@pytest.mark.slow  # two JAX processes
def test_hosts_with_folders_of_their_own_each_prepare_theirs(images, builder, tmp_path):
  outputs = _pod(images, str(tmp_path / "local-HOST"))
  assert [output.count("WRITE\n") for output in outputs] == [1, 1], outputs
  assert not any("Waiting for process 0" in output for output in outputs)
  assert os.listdir(tmp_path / "local-0") and os.listdir(tmp_path / "local-1")
