"""mst-train end to end on a tiny custom dataset: outputs, exact reproducibility, exact resume after
an interruption, the NaN guard, and scoring with the trained workdir.

The data is conftest's `csv_dataset`: 24 small images, MOS (0-100) rising with brightness, split
16 / 4 / 4."""

import glob
import io
import json
import os

import flax.traverse_util
import jax
import numpy as np
import pytest
from PIL import Image

from mst.checkpoints import workdirs
from mst.cli import predict
from mst.configure import overrides
from mst.data import source
from mst.configure import resolve
from mst.training import trainer
from support.configs import FAST_ENCODER
from support.configs import tiny_run_config
from support.runs import logged_scalars

# --dist loadgroup (the full suite's command) runs this file in one worker: `finished` trains once.
pytestmark = pytest.mark.xdist_group("trainer_test")


def _run(csv_dataset, tmp_path_factory, **changes):
  """`_config`, resolved into the typed run the trainer takes."""
  return resolve.run(_config(csv_dataset, tmp_path_factory, **changes), jax.device_count())


def _config(csv_dataset, tmp_path_factory, **changes):
  """4 steps, a checkpoint and an evaluation every 2, with `changes`."""
  return tiny_run_config(csv_dataset, tmp_path_factory.getbasetemp() / "tfds", **{
      "train__num_steps": 4, "train__checkpoint_every_steps": 2, "train__eval_every_steps": 2,
      "model__patch_encoder": FAST_ENCODER, **changes})


def _checkpoint_params(workdir, step=None):
  """(step, flattened params) of the workdir's checkpoint of `step`, by default its latest."""
  manager = workdirs.TrainCheckpoints(str(workdir), 3)
  step = manager.latest_step() if step is None else step
  state = manager.latest.restore(step)
  manager.close()
  return step, flax.traverse_util.flatten_dict(jax.device_get(state["params"]), sep="/")


@pytest.fixture(scope="module")
def finished(csv_dataset, tmp_path_factory):
  """One uninterrupted 4-step run, shared by the tests that compare against it."""
  workdir = tmp_path_factory.mktemp("run")
  results = trainer.train_and_evaluate(_run(csv_dataset, tmp_path_factory), str(workdir))
  return workdir, results


@pytest.mark.slow
def test_run_writes_checkpoints_summaries_config_and_test_metrics(finished, capsys):
  workdir, results = finished
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
  assert len(os.listdir(workdir / "best")) == 1
  losses = logged_scalars(str(workdir), "train/loss")
  assert sorted(losses) == [1, 2, 3, 4] and all(np.isfinite(list(losses.values())))
  assert set(logged_scalars(str(workdir), "validation/srcc")) == {2, 4}
  assert json.load(open(workdir / "config.json"))["dataset"]["name"] == "custom"
  saved = json.load(open(workdir / "test_metrics.json"))
  assert saved == pytest.approx(results) and {"srcc", "plcc", "krcc", "rmse"} <= set(saved)


def _logged_images(workdir, tag):
  """step -> the PNG images of `tag` in a workdir's event files, decoded."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  images = {}
  for path in glob.glob(os.path.join(str(workdir), "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:  # tf.summary.image: width, height, then the encoded images
          images[event.step] = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
                                for png in value.tensor.string_val[2:]]
  return images


@pytest.mark.slow
def test_each_validation_draws_prediction_against_mos_for_tensorboard(finished):
  workdir, _ = finished
  images = _logged_images(workdir, "validation/prediction_vs_mos")
  assert sorted(images) == [2, 4] and all(len(step) == 1 for step in images.values())
  image = images[4][0].astype(int)
  assert image.shape[0] > 200 and image.shape[1] > 200
  # The dots are blue on white: pixels much bluer than red are there (not a blank canvas).
  assert ((image[..., 2] - image[..., 0]) > 60).sum() > 20


@pytest.mark.slow
def test_predict_scores_with_a_workdir_on_the_mos_scale(finished, csv_dataset, capsys):
  workdir, _ = finished
  image = str(csv_dataset.parent / "0.png")
  status = predict.main(["--quiet", "--checkpoint", str(workdir), image])
  (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
  assert status == 0
  # Four steps from the mean-MOS head bias: near the training mean (~50 on 0-100), not ~0.5.
  assert 20 < line["score"] < 80


class _Interrupted(Exception):
  pass


@pytest.mark.slow
def test_a_second_run_is_bit_identical_and_resumes_to_exactly_the_same_params(
    finished, csv_dataset, tmp_path_factory, monkeypatch):
  workdir, _ = finished
  resumed = tmp_path_factory.mktemp("resumed")
  save = workdirs.TrainCheckpoints.save

  def save_then_die(self, step, state):
    save(self, step, state)
    if step == 2:
      self.wait()
      raise _Interrupted  # as if the job were killed right after its step-2 checkpoint

  monkeypatch.setattr(workdirs.TrainCheckpoints, "save", save_then_die)
  with pytest.raises(_Interrupted):
    trainer.train_and_evaluate(_run(csv_dataset, tmp_path_factory), str(resumed))
  assert sorted(os.listdir(resumed / "checkpoints")) == ["2"]
  # The same config and seed: the same params as the first run's, bit for bit.
  first, second = _checkpoint_params(workdir, step=2), _checkpoint_params(resumed)
  assert first[0] == second[0] == 2
  for name, value in first[1].items():
    np.testing.assert_array_equal(value, second[1][name], err_msg=name)
  monkeypatch.setattr(workdirs.TrainCheckpoints, "save", save)
  trainer.train_and_evaluate(_run(csv_dataset, tmp_path_factory), str(resumed))
  expected, got = _checkpoint_params(workdir), _checkpoint_params(resumed)
  assert got[0] == 4
  for name, value in expected[1].items():
    np.testing.assert_array_equal(value, got[1][name], err_msg=name)
  # The resumed run logged steps 3 and 4 with the uninterrupted run's losses.
  losses = logged_scalars(str(resumed), "train/loss")
  reference = logged_scalars(str(workdir), "train/loss")
  assert losses[3] == reference[3] and losses[4] == reference[4]


@pytest.mark.slow
def test_packed_training_takes_the_padded_runs_steps(finished, csv_dataset, tmp_path_factory):
  # The same batches packed into rows: the losses of the first steps equal the padded run's.
  workdir = tmp_path_factory.mktemp("packed")
  config = _config(csv_dataset, tmp_path_factory, data__packing=True, train__num_steps=2,
                   dataset__eval_split="", dataset__test_split="")
  trainer.train_and_evaluate(resolve.run(config, jax.device_count()), str(workdir))
  losses = logged_scalars(str(workdir), "train/loss")
  reference = logged_scalars(str(finished[0]), "train/loss")
  assert sorted(losses) == [1, 2]
  for step in (1, 2):
    assert losses[step] == pytest.approx(reference[step], rel=1e-4), step


@pytest.mark.slow
def test_non_finite_loss_stops_naming_the_step(csv_dataset, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("nan")
  config = _config(csv_dataset, tmp_path_factory, optim__name="sgd", optim__learning_rate=1e30,
                   optim__warmup_steps=0, train__num_steps=6, dataset__eval_split="")
  with pytest.raises(trainer.NonFiniteLossError, match=r"at step \d+") as error:
    trainer.train_and_evaluate(resolve.run(config, jax.device_count()), str(workdir))
  step = int(str(error.value).split("at step ")[1].split(";")[0])
  saved = [int(s) for s in os.listdir(workdir / "checkpoints")] if os.path.isdir(
      workdir / "checkpoints") else []
  assert all(s < step for s in saved)


def test_tfds_catalogue_datasets_are_prepared_from_their_manual_dir(tmp_path):
  # ImageNet pre-training reads tfds's own imagenet2012; without its download the error says what
  # to put where (and nothing is fetched).
  config = overrides.load_config("configs/custom.py", "runlocal")
  config.dataset.name = "imagenet2012"
  config.dataset.data_dir = str(tmp_path / "tfds")
  config.dataset.manual_dir = str(tmp_path / "downloads")
  with pytest.raises(AssertionError, match="ILSVRC2012_img_train.tar"):
    source.build_dataset(resolve.run(config, jax.device_count()).dataset)
