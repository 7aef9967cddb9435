"""What users keep keeps working: the workdir, images and SavedModel that the released mst wrote
(tests/data, by make_compat_workdir.py at d3ed78c, mst 0.1.0) load, score, evaluate, export and
resume with today's code as they did with that release (docs/compatibility.md).

Only the public interfaces are used (the console scripts' main(argv), mst.load, the SavedModel's
signatures): the library under them may change, what they do with a kept workdir may not. When a
test here fails, the change is what breaks the promise; the fixture is never rewritten to pass.
"""

import csv
import glob
import importlib.util
import json
import logging
import math
import os
import pathlib
import shutil

import pytest

import mst
from mst.cli import evaluate
from mst.cli import export
from mst.cli import predict
from mst.cli import train
from mst.config import schema
from support import DATA
from support import REPLAY_TOLERANCE
from support import REPO

_spec = importlib.util.spec_from_file_location("make_compat_workdir",
                                               DATA / "make_compat_workdir.py")
fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixture)

with open(DATA / fixture.EXPECTED) as _f:
  EXPECTED = json.load(_f)
IMAGES = [str(DATA / name) for name in EXPECTED["images"]]
# Scores are on the 0-100 MOS scale (the model's output x mos_scale 100); these (6 to 19) are
# float32 numbers 1-2e-6 apart. The machine that made the fixture gives the release's scores bit
# for bit; another kind of CPU gives other last bits, from JAX or TensorFlow alike, as their CPU
# kernels sum in an order that depends on the CPU's vector width (on an AMD EPYC: 1.5e-5 from
# jax 0.12.1, 1.2e-5 from TF 2.21, 2e-6 relative). The tolerance allows that, and nothing a change
# to what is computed would give. If an upgrade ever needs more, widen it with the reason; the
# fixture stays.
TOLERANCE = REPLAY_TOLERANCE
# The SavedModel decodes and preprocesses with TensorFlow ops, which docs/scoring.md promises equal
# mst-predict within 1e-4 (the release's own export differed by 2e-5).
SAVEDMODEL_TOLERANCE = 1e-4
# mst-eval's predictions.csv keeps 4 decimals.
CSV_TOLERANCE = 2e-4
POINT_METRICS = ("srcc", "plcc", "krcc", "rmse", "plcc_logistic")


@pytest.fixture(name="workdir")
def fixture_workdir(tmp_path):
  """A copy of the fixture workdir: scoring, evaluating and resuming may write into it."""
  return str(shutil.copytree(DATA / fixture.WORKDIR, tmp_path / fixture.WORKDIR))


@pytest.fixture(name="dataset", scope="module")
def fixture_dataset(tmp_path_factory):
  """The fixture's training set, rebuilt by the generator's own function: csv and data_dir."""
  root = tmp_path_factory.mktemp("compat_dataset")
  return {"csv": str(fixture.write_dataset(root / "images")), "data_dir": str(root / "tfds")}


# The release's numbers are replayed by the optimised programs users run (conftest.py).
pytestmark = pytest.mark.usefixtures("optimized_programs")


@pytest.fixture(autouse=True)
def _in_the_repository(monkeypatch):
  monkeypatch.chdir(REPO)  # the recorded command lines name configs/custom.py from here


def test_the_fixture_predates_schema_versions():
  with open(DATA / fixture.WORKDIR / "config.json") as f:
    written = json.load(f)
  assert "schema_version" not in written and "mst_version" not in written
  assert EXPECTED["written_by"]["mst_version"] == "0.1.0"


def test_mst_load_scores_as_the_release_did(workdir):
  rows = mst.load(workdir).score_files(IMAGES)
  assert [row["image"] for row in rows] == IMAGES
  assert [row["score"] for row in rows] == pytest.approx(EXPECTED["scores"], abs=TOLERANCE)


def test_mst_predict_scores_as_the_release_did(workdir, tmp_path):
  out = tmp_path / "scores.jsonl"
  assert predict.main(["--quiet", "--checkpoint", workdir, "--output", str(out), *IMAGES]) == 0
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  assert [line["image"] for line in lines] == IMAGES
  assert [line["score"] for line in lines] == pytest.approx(EXPECTED["predict_scores"],
                                                            abs=TOLERANCE)


def _eval_args(dataset, workdir, output_dir):
  return [arg.format(workdir=workdir, output_dir=output_dir, **dataset)
          for arg in fixture.EVAL_ARGS]


def test_mst_eval_gives_the_releases_metrics_and_predictions(dataset, workdir, tmp_path):
  out = tmp_path / "eval"
  assert evaluate.main(_eval_args(dataset, workdir, out)) == 0
  metrics = json.loads((out / "metrics.json").read_text())
  assert all(math.isfinite(value) for value in metrics.values()), metrics
  for name in POINT_METRICS:  # the same as the release's mst-eval and its end-of-training test
    assert metrics[name] == pytest.approx(EXPECTED["eval_metrics"][name], rel=1e-6), name
    assert metrics[name] == pytest.approx(EXPECTED["test_metrics"][name], rel=1e-6), name
  with open(out / "predictions.csv") as f:
    predictions = {row["image"]: float(row["prediction"]) for row in csv.DictReader(f)}
  assert predictions == pytest.approx(EXPECTED["eval_predictions"], abs=CSV_TOLERANCE)


def test_a_workdir_of_a_newer_mst_is_refused_naming_both_versions(dataset, workdir, tmp_path,
                                                                  capsys):
  config = os.path.join(workdir, "config.json")
  with open(config) as f:
    written = json.load(f)
  with open(config, "w") as f:
    json.dump({"schema_version": 99, "mst_version": "99.0.0", **written}, f)
  assert evaluate.main(_eval_args(dataset, workdir, tmp_path / "eval")) == 2
  err = capsys.readouterr().err
  assert f"{config} was written by mst 99.0.0 with config schema version 99" in err
  assert f"this is mst {mst.__version__}, which reads schema versions up to" in err
  assert "Upgrade mst" in err and "Traceback" not in err
  with pytest.raises(ValueError, match="written by mst 99.0.0"):
    mst.load(workdir)


def _serve(path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only the SavedModel tests)
  serving = tf.saved_model.load(str(path)).signatures["serving_default"]
  return [float(serving(tf.io.read_file(image))["output_0"]) for image in IMAGES]


def test_the_releases_savedmodel_loads_and_scores_as_recorded():
  kept = EXPECTED["savedmodel"]
  assert _serve(DATA / kept["path"]) == pytest.approx(kept["scores"], abs=TOLERANCE)


@pytest.mark.slow
def test_mst_export_of_the_workdir_scores_as_the_release(workdir, tmp_path):
  out = tmp_path / "exported" / "1"
  assert export.main(["--checkpoint", workdir, "--output", str(out)]) == 0  # as users export
  scores = _serve(out)
  assert scores == pytest.approx(EXPECTED["scores"], abs=SAVEDMODEL_TOLERANCE)
  assert scores == pytest.approx(EXPECTED["savedmodel"]["scores"], abs=TOLERANCE)


def _event_steps(paths, tag="train/loss"):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only the training test)
  steps = set()
  for path in paths:
    for event in tf.compat.v1.train.summary_iterator(path):
      steps.update(event.step for value in event.summary.value if value.tag == tag)
  return steps


def _without_best(workdir, where):
  """A copy of `workdir` without best/: what mst.load scores is then its latest train state."""
  copy = shutil.copytree(workdir, where, ignore=shutil.ignore_patterns("best"))
  return mst.load(str(copy)).score_files(IMAGES)


@pytest.mark.slow
def test_the_original_command_resumes_training_from_the_saved_step(
    dataset, workdir, tmp_path, caplog):
  last = EXPECTED["last_step"]
  events = set(glob.glob(os.path.join(workdir, "events.out.tfevents.*")))
  args = [arg.format(workdir=workdir, **dataset) for arg in fixture.TRAIN_ARGS]
  steps = f"--config.train.num_steps={last}"
  assert steps in args
  args[args.index(steps)] = f"--config.train.num_steps={last + 2}"
  before = _without_best(workdir, tmp_path / "before")

  with caplog.at_level(logging.INFO):
    assert train.main(args) == 0
  assert f"Resuming from step {last} " in caplog.text
  new_events = set(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))) - events
  assert _event_steps(new_events) == {last + 1, last + 2}  # trained on, not from scratch
  assert os.listdir(os.path.join(workdir, "checkpoints")) == [str(last + 2)]
  after = _without_best(workdir, tmp_path / "after")
  assert all(math.isfinite(row["score"]) for row in after)
  assert [row["score"] for row in after] != pytest.approx([row["score"] for row in before],
                                                          abs=1e-3)
  with open(os.path.join(workdir, "config.json")) as f:
    written = json.load(f)
  assert written["schema_version"] == schema.SCHEMA_VERSION
  assert written["mst_version"] == mst.__version__
  assert math.isfinite(json.loads(
      pathlib.Path(workdir, "test_metrics.json").read_text())["srcc"])
