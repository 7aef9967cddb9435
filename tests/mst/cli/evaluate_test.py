"""mst-eval on a tiny custom dataset: an official-layout .npz and workdirs of repeated runs."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mst.checkpoints import workdirs
from mst.cli import predict
from mst.configure import resolve
from support import REPO
from support.checkpoints import scoring_params
from support.checkpoints import small_model_config
from support.checkpoints import write_npz
from support.configs import FAST_ENCODER
from support.configs import tiny_run_config
from support.images import write_csv_dataset

# A one-layer model on the linear encoder: these tests are about the evaluation, not the model.
EVALUATED_MODEL = small_model_config(num_layers=1, patch_encoder=FAST_ENCODER)


pytestmark = pytest.mark.slow  # mst-eval runs in subprocesses


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """10 images, 4 train and 6 test; sides 30 to 140 px fill several sequence-length buckets."""
  csv_path = write_csv_dataset(tmp_path_factory.mktemp("eval_data"), count=10,
                               splits=("train",) * 4 + ("test",) * 6, sizes=(30, 140))
  return csv_path.parent


def _eval(dataset, tmp_path, *flags):
  command = [sys.executable, "-m", "mst.cli.evaluate", "--config=configs/custom.py:runlocal",
             f"--config.dataset.csv={dataset / 'labels.csv'}",
             f"--config.dataset.data_dir={tmp_path / 'tfds'}", *flags]
  env = dict(os.environ, PYTHONPATH=str(REPO), XLA_FLAGS="--xla_force_host_platform_device_count=2")
  done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
  return done.stdout


def test_npz_evaluation_scores_every_test_image_once_like_mst_predict(dataset, tmp_path, capsys):
  npz_path = write_npz(tmp_path / "model.npz", EVALUATED_MODEL, seed=0)
  out = tmp_path / "out"
  # As URLs (gs://... on a pod): the file is read and the outputs written through TensorFlow.
  stdout = _eval(dataset, tmp_path, f"--checkpoint=file://{npz_path}", "--split=test",
                 f"--output_dir=file://{out}")
  assert "| srcc |" in stdout and "95% CI" in stdout
  scores = json.load(open(out / "metrics.json"))
  assert {"srcc", "plcc", "krcc", "rmse", "plcc_logistic", "srcc_ci95_low"} <= set(scores)
  assert scores["srcc_ci95_low"] <= scores["srcc"] <= scores["srcc_ci95_high"]
  rows = list(csv.DictReader(open(out / "predictions.csv")))
  assert sorted(row["image"] for row in rows) == [f"{i}.png" for i in range(4, 10)]
  page = (out / "report.html").read_text()  # written through TensorFlow too
  assert page.count('attention rollout"') == 6 and "custom:test" in page
  # Native resolution, all patches: the same scores mst-predict gives for the files.
  predict.main(["--quiet", "--checkpoint", npz_path] + [str(dataset / r["image"]) for r in rows])
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  for row, line in zip(rows, lines):
    assert float(row["prediction"]) == pytest.approx(line["score"], abs=1e-4)


def _workdir(path, config, seed):
  os.makedirs(path)
  workdirs.write_config(str(path), config)
  manager = workdirs.TrainCheckpoints(str(path), 1)
  manager.maybe_save_best(1, scoring_params(resolve.model_config(config), seed),
                          {"srcc": 0.0})
  manager.wait()
  manager.close()
  return str(path)


def test_runs_are_evaluated_and_aggregated(dataset, tmp_path):
  config = tiny_run_config(dataset / "labels.csv", model__patch_encoder=FAST_ENCODER)
  runs = [_workdir(tmp_path / f"run{seed}", config, seed) for seed in (0, 10)]
  stdout = _eval(dataset, tmp_path, "--runs", *runs, f"--output_dir={tmp_path / 'agg'}")
  assert "2 runs, mean ± std" in stdout
  summary = json.load(open(tmp_path / "agg" / "runs_metrics.json"))["mean_std"]
  per_run = [json.load(open(os.path.join(run, "eval_test", "metrics.json"))) for run in runs]
  srcc = [run["srcc"] for run in per_run]
  assert summary["srcc"][0] == pytest.approx(np.mean(srcc))
  assert summary["srcc"][1] == pytest.approx(np.std(srcc, ddof=1))
