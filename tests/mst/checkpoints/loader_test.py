"""Checkpoints at URLs (gs://bucket/koniq_ckpt.npz, a pod run's gs:// workdir) are read where they
are. Cloud storage needs the network, so these tests use two of TensorFlow's other file systems,
which take the same code path: `ram://` (in this process) and `file://`."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mst.checkpoints import loader
from mst.checkpoints import npz
from mst.cli import predict
from mst.evaluation import report


def _to_ram(local_path, name):
  url = f"ram://loader_test/{name}"
  tf.io.gfile.copy(local_path, url, overwrite=True)
  return url


def test_an_npz_at_a_url_loads_as_the_same_file_does_locally(small_npz):
  url = _to_ram(small_npz, "small.npz")
  assert not loader.is_workdir(url)
  got, want = (npz.params_to_flat(loader.load_params(path)) for path in (url, small_npz))
  assert sorted(got) == sorted(want)
  for name, value in want.items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_mst_predict_scores_with_an_npz_at_a_url(small_npz, tmp_path, capsys):
  photo = str(tmp_path / "photo.png")
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), np.uint8)).save(photo)
  scores = []
  for checkpoint in (small_npz, _to_ram(small_npz, "predict.npz")):
    assert predict.main(["--quiet", "--checkpoint", checkpoint, photo]) == 0
    scores.append(json.loads(capsys.readouterr().out)["score"])
  assert scores[0] == scores[1]


def test_a_missing_or_unreadable_url_is_named(tmp_path):
  with pytest.raises(npz.CheckpointError, match="ram://nowhere/absent.npz: no such checkpoint"):
    loader.load_params("ram://nowhere/absent.npz")
  with pytest.raises(loader.CheckpointError, match=r"nosuch://bucket/a.npz: cannot be read \("):
    loader.load_params("nosuch://bucket/a.npz")  # a scheme TensorFlow has no file system for
  with pytest.raises(loader.PretrainedMissing, match="ram://nowhere/imagenet_pretrain.npz'? "
                     "does not exist"):
    loader.require_pretrained("ram://nowhere/imagenet_pretrain.npz")
  with pytest.raises(loader.PretrainedMissing, match="nosuch://bucket/a.npz: cannot be read"):
    loader.require_pretrained("nosuch://bucket/a.npz")


def test_a_folder_at_a_url_is_a_workdir_and_evaluations_are_written_into_it(tmp_path):
  workdir = f"file://{tmp_path}/run"
  tf.io.gfile.makedirs(workdir)
  assert loader.is_workdir(workdir)
  output_dir = report.default_output_dir(workdir, "test")
  assert output_dir == f"{workdir}/eval_test"
  report.write_outputs(output_dir, {"srcc": 0.5},
                       {"name": ["a.png"], "target": [1.0], "prediction": [2.0]})
  report.write_runs_summary(workdir, [workdir], {"srcc": [0.5, 0.0]})
  assert json.loads((tmp_path / "run" / "eval_test" / "metrics.json").read_text()) == {
      "srcc": 0.5}
  assert (tmp_path / "run" / "eval_test" / "predictions.csv").read_text().splitlines() == [
      "index,image,target,prediction", "0,a.png,1,2"]
  summary = json.loads((tmp_path / "run" / "runs_metrics.json").read_text())
  assert summary == {"runs": [workdir], "mean_std": {"srcc": [0.5, 0.0]}}
