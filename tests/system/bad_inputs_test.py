"""Bad input fails at once with what to fix: a custom labels CSV lists every bad row as
`file:line: problem` (missing images are skipped and listed instead), and config values that
cannot work stop mst-train and mst-eval before anything runs, naming the key, the value and the
fix."""

import os
import re

import pytest

import mst.data.datasets
from mst.cli import evaluate as eval_cli
from mst.cli import train as train_cli
from mst.configure import overrides
from mst.configure import resolve
from mst.data.datasets import custom
from support.images import write_csv_dataset


def _labels(tmp_path, text: str) -> str:
  path = tmp_path / "labels.csv"
  path.write_text(text)
  return str(path)


# ------------------------------------------------------------------------------------ labels CSV

@pytest.mark.parametrize("text, line, problem", [
    ("", 1, "the file is empty"),
    ("name,score\na.png,1\n", 1, r"missing column\(s\) \['image', 'mos'\]"),
    ("image,mos\n", 2, "no label rows below the header"),
    ("image,mos\na.png,1\nb.png,good\n", 3, "mos 'good' is not a finite number"),
    ("image,mos\na.png,nan\n", 2, "mos 'nan' is not a finite number"),
    ("image,mos\na.png,1\nb.png,2\na.png,3\n", 4, r"image 'a.png' is listed again \(first on "
     r"line 2\)"),
    ("image,mos,split\na.png,1,train\nb.png,2,val\n", 3, r"split 'val' is not one of \['train', "
     r"'validation', 'test'\]"),
    ("image,mos\n,1\n", 2, "empty `image` value"),
])
def test_each_csv_problem_names_the_file_and_line(tmp_path, text, line, problem):
  path = _labels(tmp_path, text)
  with pytest.raises(custom.LabelFileError, match=rf"{re.escape(path)}:{line}: {problem}"):
    custom.read_labels(path, split_seed=0)


def test_all_bad_rows_are_reported_together_up_to_a_cap(tmp_path):
  rows = [f"{i}.png,x" for i in range(custom.MAX_PROBLEMS + 5)]
  path = _labels(tmp_path, "image,mos,split\nok.png,1,train\nok.png,nan,dev\n" +
                 "\n".join(f"{row},test" for row in rows) + "\n")
  with pytest.raises(custom.LabelFileError) as error:
    custom.read_labels(path, split_seed=0)
  # Line 3 has three problems; then one per row below it.
  assert error.value.problems[:3] == [
      (3, "image 'ok.png' is listed again (first on line 2)"),
      (3, "mos 'nan' is not a finite number"),
      (3, "split 'dev' is not one of ['train', 'validation', 'test']")]
  assert len(error.value.problems) == 3 + len(rows)
  message = str(error.value).splitlines()
  assert message[0].startswith(f"{3 + len(rows)} problem(s) in the labels CSV {path}")
  assert len(message) == 1 + custom.MAX_PROBLEMS + 1
  assert message[-1] == "... and 8 more problem(s)"


def test_bad_rows_stop_preparing_and_missing_images_are_skipped_and_listed(tmp_path):
  csv_path = write_csv_dataset(tmp_path / "data", count=6, sizes=(20, 24))
  bad = tmp_path / "data" / "bad.csv"
  bad.write_text(csv_path.read_text() + "5.png,70,test\n")
  with pytest.raises(custom.LabelFileError, match=r"bad.csv:8: image '5.png' is listed again"):
    mst.data.datasets.build("custom", str(tmp_path / "tfds"), csv=str(bad))
  os.remove(tmp_path / "data" / "1.png")  # a missing image is skipped, not an error
  builder = mst.data.datasets.build("custom", str(tmp_path / "tfds"), csv=str(csv_path))
  assert [(row["name"], row["reason"]) for row in mst.data.datasets.read_skipped(builder)] == [
      ("1.png", "missing file")]
  assert builder.info.splits["train"].num_examples == 3


def test_mst_train_reports_a_bad_csv_without_a_traceback(tmp_path, capsys):
  path = _labels(tmp_path, "image,mos\na.png,1\nb.png,?\n")
  status = train_cli.main(["--config", "configs/custom.py:runlocal", "--workdir",
                           str(tmp_path / "run"), f"--config.dataset.csv={path}",
                           f"--config.dataset.data_dir={tmp_path / 'tfds'}"])
  assert status == 2
  assert f"mst-train: error: 1 problem(s) in the labels CSV {path}" in capsys.readouterr().err


# --------------------------------------------------------------------------------- config values

def _koniq(**values):
  return overrides.apply_overrides(overrides.load_config("configs/koniq.py"), values)


@pytest.mark.parametrize("values, message", [
    ({"preprocess.longer_side_lengths": (16, 224)},
     r"preprocess.longer_side_lengths=\(16, 224\): side\(s\) \[16\] cannot hold one "
     r"preprocess.patch_size=32 patch; fix: drop them or make them >= 32"),
    ({"preprocess.patch_size": 0},
     r"preprocess.patch_size=0: P, a patch's side in pixels, must be >= 1; fix: set "
     r"--config.preprocess.patch_size to 32"),
    ({"preprocess.grid_size": 0},
     r"preprocess.grid_size=0: G must be >= 1 .*; fix: set --config.preprocess.grid_size to 10"),
    ({"preprocess.grid_size": -3}, r"preprocess.grid_size=-3: G must be >= 1"),
    ({"optim.learning_rate": -1e-3},
     r"optim.learning_rate=-0.001: the peak learning rate must be > 0; fix: set "
     r"--config.optim.learning_rate to e.g. 2e-3"),
    ({"optim.learning_rate": 0.0}, r"optim.learning_rate=0.0: the peak learning rate"),
    ({"dataset.eval_split": "val"},
     r"dataset.eval_split='val': dataset 'koniq10k' has only the splits \['train', "
     r"'validation', 'test'\]; fix: name one of them or ''"),
    ({"dataset.name": "ava", "dataset.train_split": "train+val"},
     r"dataset.train_split='train\+val': dataset 'ava' has only the splits \['train', "
     r"'validation', 'test'\]"),
])
def test_config_values_that_cannot_work_name_key_value_and_fix(values, message):
  with pytest.raises(resolve.ConfigError, match=message):
    resolve.validate(_koniq(**values))


@pytest.mark.parametrize("key, value, message", [
    ("train.batch_size", 12, r"train.batch_size=12: a global batch must split evenly over the 8 "
     r"devices \(jax.device_count\(\)\); fix: use a multiple of 8, e.g. "
     r"--config.train.batch_size=16"),
    ("eval.batch_size", 20, r"eval.batch_size=20: .* over the 8 devices.*"
     r"--config.eval.batch_size=24"),
])
def test_batch_sizes_must_split_over_the_devices(key, value, message):
  config = _koniq(**{key: value})
  resolve.validate(config)  # without a device count, nothing to check
  with pytest.raises(resolve.ConfigError, match=message):
    resolve.validate(config, num_devices=8)
  resolve.validate(config, num_devices=4)


def test_mst_train_and_mst_eval_stop_at_start_up(tmp_path, capsys):
  # The conftest's 8 CPU devices cannot split a batch of 12.
  workdir = tmp_path / "run"
  assert train_cli.main(["--config", "configs/koniq.py", "--workdir", str(workdir),
                         "--config.train.batch_size=12"]) == 2
  assert "mst-train: error: train.batch_size=12: " in capsys.readouterr().err
  assert not workdir.exists()  # nothing ran
  assert eval_cli.main(["--config", "configs/spaq.py", "--checkpoint", str(workdir),
                        "--split", "dev"]) == 2
  assert ("mst-eval: error: --split='dev': dataset 'spaq/shorter_side_512' has only the "
          "splits ['train', 'validation', 'test']; fix: name one of them"
          ) in capsys.readouterr().err


@pytest.mark.parametrize("name, text, message", [
    ("labels.txt", "def get_config(arg):\n  return None\n", r"is not a Python file \(\.py\)"),
    ("broken.py", "import ml_collections\ndef get_config(:\n", r"broken.py', line 2: "),
    ("empty.py", "NAME = 'no function here'\n", r"empty.py' defines no get_config\(arg\)"),
])
def test_mst_train_names_a_config_file_it_cannot_use(tmp_path, capsys, name, text, message):
  path = tmp_path / name
  path.write_text(text)
  with pytest.raises(SystemExit) as exit_info:
    train_cli.main(["--config", str(path), "--workdir", str(tmp_path / "run")])
  assert exit_info.value.code == 2
  assert re.search(message, capsys.readouterr().err)
  assert not (tmp_path / "run").exists()
