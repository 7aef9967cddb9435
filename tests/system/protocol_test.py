"""The paper's protocol end to end on KonIQ-10k files in their original format: labels on the
released model's 0-100 scale from the CSVs to metrics.json and predictions.csv, for a workdir and
an official-format .npz alike; fine-tuning such a checkpoint on its own data starts where it
converged; and a missing pre-trained file stops training before anything else, saying what to do.
"""

import csv
import io
import json
import math
import os
import zipfile

import jax
import numpy as np
import pytest
from PIL import Image

from mst.checkpoints import npz
from mst.checkpoints import workdirs
from mst.cli import evaluate as evaluate_cli
from mst.configure import overrides
from mst.configure import resolve
from mst.training import trainer
from support.configs import set_fields
from support.runs import logged_scalars

# --dist loadgroup (the full suite's command) runs this file in one worker: `fitted` trains once.
pytestmark = pytest.mark.xdist_group("protocol_test")

COUNT = 24
SETS = ("training",) * 4 + ("validation", "test")  # 16 / 4 / 4


def koniq_download(root):
  """KonIQ-10k's three files for COUNT small JPEGs whose brightness rises with their MOS; returns
  {image name: the 0-100 MOS of the sets CSV}."""
  rng = np.random.default_rng(0)
  scores = ["image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore"]
  sets = ["image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set"]
  mos = {}
  with zipfile.ZipFile(os.path.join(root, "koniq10k_1024x768.zip"), "w") as archive:
    for i in range(COUNT):
      name, level = f"{2000 + i}.jpg", i / (COUNT - 1)
      pixels = np.clip(rng.normal(255 * level, 20, (48, 64, 3)), 0, 255).astype(np.uint8)
      data = io.BytesIO()
      Image.fromarray(pixels).save(data, format="JPEG", quality=95)
      archive.writestr(f"1024x768/{name}", data.getvalue())
      mos[name] = round(10 + 80 * level, 2)
      votes = "1,2,3,4,5,15"
      scores.append(f"{name},{votes},{1 + 4 * level:.3f},0.5,{mos[name] + 1:.2f}")
      sets.append(f"{name},{votes},{mos[name]},12,{SETS[i % len(SETS)]}")
  for file, lines in (("koniq10k_scores_and_distributions.csv", scores),
                      ("koniq10k_distributions_sets.csv", sets)):
    with open(os.path.join(root, file), "w") as f:
      f.write("\n".join(lines) + "\n")
  return mos


def koniq_config(root, data_dir, **changes):
  """configs/koniq.py small enough for a CPU: the native image only (what a single-scale .npz
  implies), 2 x 2 patches."""
  config = overrides.load_config("configs/koniq.py", "runlocal")
  config.dataset.manual_dir = str(root)
  config.dataset.data_dir = str(data_dir)
  config.preprocess.longer_side_lengths = ()
  config.model.num_layers = 1
  config.eval.bootstrap_samples = 0
  return set_fields(config, **changes)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
  """A model fitted on the KonIQ fixture (last step kept) and exported as an official .npz."""
  root = tmp_path_factory.mktemp("koniq_download")
  mos = koniq_download(root)
  data_dir = tmp_path_factory.mktemp("tfds")
  workdir = tmp_path_factory.mktemp("fit")
  # From a fresh head (output 0), SGD fits the fixture in 30 steps: L1 ~50 -> ~7.
  config = koniq_config(root, data_dir, optim__learning_rate=0.03, train__num_steps=30,
                        train__log_every_steps=1, train__eval_every_steps=30,
                        train__checkpoint_every_steps=30, eval__select="last")
  trainer.train_and_evaluate(resolve.run(config, jax.device_count()), str(workdir))
  path = str(tmp_path_factory.mktemp("npz") / "koniq_tiny.npz")
  npz.export_official_npz(workdirs.load_params(str(workdir))[0], path)
  return root, data_dir, mos, workdir, path


@pytest.mark.slow
def test_labels_stay_on_0_to_100_from_the_csv_to_metrics_json(fitted, tmp_path, capsys):
  root, data_dir, mos, workdir, path = fitted
  output = tmp_path / "eval"
  assert evaluate_cli.main([
      "--config=configs/koniq.py:runlocal", f"--config.dataset.data_dir={data_dir}",
      f"--config.dataset.manual_dir={root}", "--config.eval.bootstrap_samples=0",
      "--checkpoint", path, "--output-dir", str(output)]) == 0
  with open(output / "predictions.csv") as f:
    rows = list(csv.DictReader(f))
  targets = np.array([float(row["target"]) for row in rows])
  predictions = np.array([float(row["prediction"]) for row in rows])
  # The targets are the sets CSV's 0-100 MOS of the test images, not the 1-5 MOS.
  assert {row["image"] for row in rows} == {n for i, n in enumerate(mos) if SETS[i % 6] == "test"}
  np.testing.assert_allclose(targets, [mos[row["image"]] for row in rows], rtol=1e-5)
  # The .npz predicts on the same scale: near its targets, not 20x off.
  assert np.all(np.abs(predictions - targets) < 30)
  metrics = json.load(open(output / "metrics.json"))
  assert metrics["rmse"] == pytest.approx(math.sqrt(np.mean((predictions - targets) ** 2)),
                                          rel=1e-4)
  assert metrics["rmse"] < 20
  # eval.select='last': no best parameters were kept, and the workdir's own test metrics (the
  # last step's parameters) agree with the .npz's.
  assert not os.listdir(workdir / "best")
  trained = json.load(open(workdir / "test_metrics.json"))
  for key in ("srcc", "plcc", "rmse", "plcc_logistic"):
    assert trained[key] == pytest.approx(metrics[key], rel=1e-4, abs=1e-6), key


@pytest.mark.slow
def test_fine_tuning_an_official_checkpoint_starts_where_it_converged(fitted, tmp_path):
  root, data_dir, mos, fit_workdir, path = fitted
  fit = logged_scalars(str(fit_workdir))
  first, converged = fit[1], np.mean([fit[step] for step in range(26, 31)])
  assert converged < first / 3  # the fit learned

  # configs/koniq.py's own recipe (SGD 2e-3, fresh head bias 0) from the .npz instead of ImageNet.
  workdir = tmp_path / "fine_tune"
  config = koniq_config(root, data_dir, train__num_steps=2, train__log_every_steps=1,
                        dataset__eval_split="", dataset__test_split="", eval__select="last")
  config.init.checkpoint = path
  trainer.train_and_evaluate(resolve.run(config, jax.device_count()), str(workdir))
  losses = logged_scalars(str(workdir))
  assert abs(losses[1] - converged) < max(0.5 * converged, 3.0), (losses, converged)
  # A fresh head (output 0) would start at the labels' own size, ~50 on 0-100.
  fresh = np.mean([value for i, value in enumerate(mos.values()) if SETS[i % 6] == "training"])
  assert losses[1] < 0.3 * fresh


def test_a_missing_pretrained_file_stops_training_before_the_data(tmp_path):
  config = koniq_config(tmp_path / "no_download", tmp_path / "tfds")
  config.init.checkpoint = str(tmp_path / "musiq" / "imagenet_pretrain.npz")
  with pytest.raises(FileNotFoundError) as error:
    trainer.train_and_evaluate(resolve.run(config, jax.device_count()),
                               str(tmp_path / "run"))
  message = str(error.value)
  assert "imagenet_pretrain.npz' does not exist" in message
  assert "google-research/google-research/tree/master/musiq" in message
  assert "--config.init.checkpoint=none" in message
  assert "koniq10k" not in message  # it stopped before looking for the dataset
  assert not os.path.exists(tmp_path / "tfds")


@pytest.mark.experiments
def test_collect_puts_measured_main_results_beside_the_papers(tmp_path, capsys):
  from experiments import sweep  # pylint: disable=g-import-not-at-top
  for name, config_file, srcc in (("koniq-seed0", "koniq", 0.90), ("koniq-seed1", "koniq", 0.92),
                                  ("ava", "ava", 0.70)):
    os.makedirs(tmp_path / name)
    config = overrides.load_config(f"configs/{config_file}.py")
    (tmp_path / name / "config.json").write_text(json.dumps(config.to_dict()))
    (tmp_path / name / "test_metrics.json").write_text(json.dumps({"srcc": srcc,
                                                                   "plcc": srcc + 0.01}))
  assert sweep.main(["collect", "--root", str(tmp_path), "--name", "main"]) == 0
  assert capsys.readouterr().out.splitlines() == [
      "| Dataset | runs | SRCC | PLCC | paper SRCC | paper PLCC |",
      "|---|---:|---:|---:|---:|---:|",
      "| KonIQ-10k | 2 | 0.910 ± 0.014 | 0.920 ± 0.014 | 0.916 | 0.928 |",
      "| AVA | 1 | 0.700 | 0.710 | 0.726 | 0.738 |",
      "",
      "Not started: spaq, paq2piq"]


def test_evaluation_warns_when_predictions_and_labels_are_on_different_scales():
  from mst.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  labels_1_to_5 = np.linspace(1.5, 4.5, 20)
  assert "different scales" in evaluate.scale_mismatch(labels_1_to_5 * 20, labels_1_to_5)
  assert evaluate.scale_mismatch(labels_1_to_5 * 20 - 5, labels_1_to_5 * 20) is None
  assert evaluate.scale_mismatch(np.full(20, 3.0), labels_1_to_5) is None  # a constant predictor


def test_mst_train_reports_a_missing_pretrained_file_in_one_line(tmp_path, capsys):
  from mst.cli import train as train_cli  # pylint: disable=g-import-not-at-top
  missing = tmp_path / "musiq" / "imagenet_pretrain.npz"
  status = train_cli.main(["--config", "configs/koniq.py", "--workdir", str(tmp_path / "run"),
                           f"--config.init.checkpoint={missing}",
                           f"--config.dataset.data_dir={tmp_path / 'tfds'}"])
  error = capsys.readouterr().err
  assert status == 2
  assert f"mst-train: error: config.init.checkpoint='{missing}' does not exist" in error
  assert "Traceback" not in error
