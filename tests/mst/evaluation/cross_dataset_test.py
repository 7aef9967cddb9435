"""Cross-dataset evaluation: `mst-eval --datasets` parses its list, scores one checkpoint on
datasets prepared from their original files (LIVE Challenge and KADID-10k fixtures), writes one
table as markdown and JSON and each dataset's predictions, and names every bad input."""

import csv
import json

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from mst.cli import evaluate
from mst.evaluation import cross_dataset
from mst.evaluation import evaluate as evaluate_lib
from mst.evaluation import runs
from mst.scoring import api
from support.checkpoints import small_model_config
from support.checkpoints import write_npz
from support.configs import FAST_ENCODER
from support.downloads import kadid_files
from support.downloads import livec_files
from support.downloads import write_zip

# A one-layer model on the linear encoder: these tests are about the evaluation, not the model.
EVALUATED_MODEL = small_model_config(num_layers=1, patch_encoder=FAST_ENCODER)


def test_targets_default_to_full_or_test_and_spaq_to_its_own_preprocessing():
  targets = cross_dataset.parse_targets("koniq10k:test, livec,spaq, kadid10k:train,spaq/full:test")
  assert [(t.name, t.builder_name, t.split) for t in targets] == [
      ("koniq10k", "koniq10k", "test"), ("livec", "livec", "full"),
      ("spaq", "spaq/shorter_side_512", "test"), ("kadid10k", "kadid10k", "train"),
      ("spaq/full", "spaq/full", "test")]
  assert [t.folder for t in targets][-1] == "spaq_full_test"


@pytest.mark.parametrize("text, problem", [
    ("koniq10k:test,nope:full", "unknown dataset 'nope'"),
    ("livec:validation", "has only the splits"),
    ("livec,livec:full", "livec:full is named twice"),
    ("custom:test", "evaluate your own data with --config"),
    (" , ", "names no dataset"),
])
def test_a_bad_dataset_list_is_an_error_naming_the_entry(text, problem):
  with pytest.raises(cross_dataset.TargetError, match=problem):
    cross_dataset.parse_targets(text)


def test_table_rows_are_checkpoints_and_metrics_columns_datasets_with_intervals():
  results = {"a.npz": {"livec:full": {"srcc": 0.81234, "srcc_ci95_low": 0.7, "srcc_ci95_high": 0.9,
                                      "plcc": 0.8, "krcc": float("nan")}},
             "b.npz": {}}
  lines = cross_dataset.table(results, ["livec:full", "csiq:full"]).splitlines()
  assert lines[0] == "| checkpoint | metric | livec:full | csiq:full |"
  assert lines[2] == "| a.npz | SRCC | 0.812 [0.700, 0.900] | – |"
  assert lines[3] == "|  | PLCC | 0.800 | – |" and lines[4] == "|  | KRCC | – | – |"
  assert lines[5] == "| b.npz | SRCC | – | – |"
  assert "higher is better" in lines[-1]
  data = cross_dataset.table_json(results, ["livec:full"], {"livec:full": 6})
  assert data["results"]["a.npz"]["livec:full"]["krcc"] is None  # NaN is not JSON
  assert data["datasets"] == [{"dataset": "livec:full", "images": 6}]


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
  """A manual dir with LIVE Challenge and KADID-10k as they ship, one subfolder each."""
  root = tmp_path_factory.mktemp("downloads")
  livec, livec_mos = livec_files()
  write_zip(root / "livec" / "ChallengeDB_release.zip", livec)
  kadid, kadid_mos = kadid_files()
  write_zip(root / "kadid10k" / "kadid10k.zip", kadid)
  return root, {**livec, **kadid}, {**livec_mos, **kadid_mos}


def _rows(path):
  with open(path) as f:
    return list(csv.DictReader(f))


@pytest.mark.slow  # prepares two datasets and compiles the model for each
def test_one_command_scores_a_checkpoint_on_several_datasets(downloads, tmp_path, capsys):
  manual, files, mos = downloads
  npz = write_npz(tmp_path / "model.npz", EVALUATED_MODEL, seed=0)
  out = tmp_path / "eval"
  argv = ["--checkpoint", str(npz), "--datasets", "livec,kadid10k:test",
          "--data-dir", str(tmp_path / "tfds"), "--manual-dir", str(manual),
          "--output-dir", str(out), "--bootstrap-samples", "50"]
  assert evaluate.main(argv) == 0
  printed = capsys.readouterr().out
  assert "| checkpoint | metric | livec:full | kadid10k:test |" in printed
  table = json.loads((out / "cross_dataset.json").read_text())
  assert [d["dataset"] for d in table["datasets"]] == ["livec:full", "kadid10k:test"]
  assert (out / "cross_dataset.md").read_text().startswith("| checkpoint | metric |")
  model = api.load(str(npz))
  for label, folder in (("livec:full", "livec_full"), ("kadid10k:test", "kadid10k_test")):
    rows = _rows(out / folder / "predictions.csv")
    names = [row["image"] for row in rows]
    assert len(names) == table["datasets"][[d["dataset"] for d in table["datasets"]].index(
        label)]["images"] > 1
    # Each image's label is its MOS in the original files; its prediction is mst-predict's.
    targets = np.array([float(row["target"]) for row in rows])
    predictions = np.array([float(row["prediction"]) for row in rows])
    np.testing.assert_allclose(targets, [mos[name] for name in names], rtol=1e-5)
    paths = {path.rsplit("/", 1)[-1]: path for path in files}
    for name, prediction in zip(names, predictions):
      # Decoded as the input pipeline decodes (TensorFlow's JPEG decoder is not PIL's).
      image = tf.io.decode_image(files[paths[name]], channels=3).numpy()
      assert prediction == pytest.approx(model.score(image), abs=1e-4)
    scores = json.loads((out / folder / "metrics.json").read_text())
    cell = table["results"][str(npz)][label]
    assert cell["srcc"] == pytest.approx(scipy.stats.spearmanr(predictions, targets)[0], abs=1e-4)
    assert cell["srcc"] == pytest.approx(scores["srcc"])
    assert {"krcc_ci95_low", "krcc_ci95_high", "plcc_ci95_low"} <= set(cell)
  assert not any(name.startswith("t") for name in
                 (row["image"] for row in _rows(out / "livec_full" / "predictions.csv")))
  page = (out / "report.html").read_text()
  assert "<h2>livec:full" in page and "<h2>kadid10k:test" in page
  # The worst images of both datasets (all 6 and 2 here), each with the model's rollout.
  assert page.count('attention rollout"') == 8

  # The library entry point the command calls returns the same numbers, as values.
  settings = evaluate_lib.EvalSettings(batch_size=32, bootstrap_samples=50, ava_metrics=False,
                                       select="best")
  results = runs.across([str(npz)], cross_dataset.parse_targets("livec,kadid10k:test"), settings,
                        output_dir=str(tmp_path / "library"), data_dir=str(tmp_path / "tfds"))
  assert list(results[str(npz)]) == ["livec:full", "kadid10k:test"]
  for label, scores in results[str(npz)].items():
    assert scores["srcc"] == pytest.approx(table["results"][str(npz)][label]["srcc"])
    assert scores["srcc_ci95_low"] == pytest.approx(
        table["results"][str(npz)][label]["srcc_ci95_low"])
  assert json.loads((tmp_path / "library" / "cross_dataset.json").read_text()) == table


def _usage_error(argv, capsys):
  with pytest.raises(SystemExit) as exit_info:
    evaluate.main(argv)
  assert exit_info.value.code == 2
  return capsys.readouterr().err


def test_datasets_take_no_config_and_no_split(capsys):
  err = _usage_error(["--checkpoint", "x.npz", "--datasets", "livec",
                      "--config", "configs/koniq.py"], capsys)
  assert "--datasets takes no --config" in err
  err = _usage_error(["--checkpoint", "x.npz", "--datasets", "livec", "--split", "test"], capsys)
  assert "drop --split" in err
  err = _usage_error(["--checkpoint", "x.npz"], capsys)
  assert "--config FILE (one dataset) or --datasets LIST" in err


def test_an_unprepared_dataset_without_its_download_is_named(tmp_path, capsys):
  npz = write_npz(tmp_path / "model.npz", EVALUATED_MODEL, seed=0)
  status = evaluate.main(["--checkpoint", str(npz), "--datasets", "tid2013",
                          "--data-dir", str(tmp_path / "tfds"), "--output-dir",
                          str(tmp_path / "out")])
  err = capsys.readouterr().err
  assert status == 2 and "--datasets tid2013:full" in err and "not prepared" in err
  status = evaluate.main(["--checkpoint", str(npz), "--datasets", "livec,kadid:full",
                          "--output-dir", str(tmp_path / "out")])
  assert status == 2 and "unknown dataset 'kadid'" in capsys.readouterr().err
