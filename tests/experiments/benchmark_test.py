"""The benchmark scripts run: `benchmark.py --preset gpu` without an accelerator, the PyTorch
pipeline they compare with, and `benchmark_train.py`'s packing table on a small model."""

import subprocess
import sys

import pytest

from experiments import accelerator_benchmark
from support import NO_TORCH
from support import REPO

# Tests of experiments/ tooling: only the full suite runs them (pytest.ini).
pytestmark = pytest.mark.experiments


def test_gpu_preset_on_cpu_says_so_and_prints_each_rate_in_both_dtypes(capsys):
  accelerator_benchmark.main()
  out = capsys.readouterr().out
  assert out.startswith("NOTE: no GPU or TPU found")
  rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")]
  assert [cell.strip() for cell in rows[0]] == ["measurement", "dtype", "images / s", "TFLOP/s",
                                                "MFU"]
  measured = [(row[0].strip(), row[1].strip()) for row in rows[1:]]
  assert measured == [("inference", "float32"), ("inference", "bfloat16"),
                      ("train step", "float32"), ("train step", "bfloat16")]
  assert all(float(row[2]) > 0 and row[4].strip() == "n/a" for row in rows[1:])


def test_peaks_come_from_the_device_kind():
  assert accelerator_benchmark.peak_tflops("NVIDIA H100 PCIe") == (756.0, 378.0)
  assert accelerator_benchmark.peak_tflops("NVIDIA H200") == (989.0, 495.0)
  assert accelerator_benchmark.peak_tflops("TPU v5 lite") == (197.0, 197.0)
  assert accelerator_benchmark.peak_tflops("cpu") is None


def test_torch_pipeline_cuts_the_native_image_like_mst(tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  pytest.importorskip("torch", reason=NO_TORCH)
  from experiments import torch_pipeline  # pylint: disable=g-import-not-at-top
  from mst.data import multiscale  # pylint: disable=g-import-not-at-top
  from mst.data import preprocess  # pylint: disable=g-import-not-at-top

  pixels = np.random.default_rng(0).integers(0, 256, (70, 100, 3), np.uint8)
  Image.fromarray(pixels).save(tmp_path / "photo.png")
  ours = preprocess.multiscale_patches(tf.constant(pixels),
                                       multiscale.MultiScaleConfig(longer_side_lengths=()))
  theirs = torch_pipeline.multiscale_inputs(torch_pipeline.read_image(str(tmp_path / "photo.png")),
                                            longer_sides=())
  np.testing.assert_allclose(theirs[0][0].numpy(), ours["patches"].numpy(), atol=1e-6)
  for got, key in zip(theirs[1:], ("spatial_idx", "scale_idx", "mask")):
    np.testing.assert_array_equal(got[0].numpy(), ours[key].numpy())


@pytest.mark.slow
def test_train_benchmark_packing_table_shows_packing_filling_the_rows():
  # A fresh process: the script pins threads, which TensorFlow allows only before its first op.
  done = subprocess.run(
      [sys.executable, str(REPO / "experiments" / "benchmark_train.py"), "--part",
       "packing", "--model", "tiny", "--mixes", "ava", "--packing-batch", "2", "--repeats", "1"],
      capture_output=True, text=True, check=True, cwd=REPO)
  [row] = [line.split("|")[1:-1] for line in done.stdout.splitlines()
           if line.startswith("| AVA-like")]
  padded, packed = (float(cell.strip().rstrip("%")) for cell in row[3:5])
  assert packed > padded
  assert all(float(cell.strip().rstrip("x")) > 0 for cell in row[5:])
