"""Writes the compatibility fixture: a workdir, test images and a SavedModel made by a released
mst, with the scores and metrics that release gave them (`compat_expected.json`).
tests/compat_test.py checks that the code of today loads, scores, evaluates, exports and resumes
them as that release did.

It was run ONCE, with the released code (commit d3ed78c, mst 0.1.0), from a checkout of it:

    cd <checkout at d3ed78c> && \
        PYTHONPATH=$PWD python3 <this repo>/tests/data/make_compat_workdir.py

Never rerun it to "fix" a failing test: the files it wrote are what users of that release keep,
and rewriting them with newer code would check nothing. A later fixture (for a later release) goes
beside this one, under new names. `write_dataset` is also what tests/compat_test.py imports to
rebuild the training images (they are not checked in), so it must not change either.
"""

import argparse
import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent
RELEASE = "d3ed78c"  # the commit this fixture was written with
WORKDIR = "compat_workdir"
IMAGES = "compat_images"
SAVEDMODEL = "compat_savedmodel"
EXPECTED = "compat_expected.json"
# Four in six rows train, one validates, one tests: 24 / 6 / 6.
SPLITS = ("train",) * 4 + ("validation", "test")
COUNT = 36

# mst-train's command line, run from the repository root. {csv}, {data_dir} and {workdir} are
# placeholders. configs/custom.py:runlocal with the model shrunk to about 30k parameters (conv
# patch encoder of 16 x 16 patches, D = 16, one layer) so the workdir stays a few hundred kB; the
# architecture and preprocessing are pinned on the command line, so a later change to the config
# file's variant does not change what resuming builds.
TRAIN_ARGS = (
    "--config=configs/custom.py:runlocal", "--workdir={workdir}",
    "--config.dataset.csv={csv}", "--config.dataset.data_dir={data_dir}",
    "--config.preprocess.patch_size=16", "--config.preprocess.grid_size=10",
    "--config.preprocess.longer_side_lengths=(64, 128)", "--config.preprocess.max_seq_len=32",
    "--config.model.patch_encoder=conv", "--config.model.hidden_size=16",
    "--config.model.num_layers=1", "--config.model.num_heads=2", "--config.model.mlp_dim=32",
    "--config.optim.name=sgd", "--config.optim.learning_rate=0.05",
    "--config.train.batch_size=8", "--config.train.num_steps=4",
    "--config.train.eval_every_steps=2", "--config.train.checkpoint_every_steps=2",
    "--config.train.keep_checkpoints=1")
# mst-eval's, on the same dataset; {workdir} the fixture's copy.
EVAL_ARGS = ("--config=configs/custom.py:runlocal", "--checkpoint={workdir}", "--split=test",
             "--config.dataset.csv={csv}", "--config.dataset.data_dir={data_dir}",
             "--output-dir={output_dir}")


def write_dataset(root, count=COUNT, seed=0, sizes=(40, 100)) -> pathlib.Path:
  """The training set: `count` noisy grey-level PNGs of random sizes whose brightness rises with
  the row, as does the MOS (0 to 100); row i is in split SPLITS[i % 6]. Returns the labels CSV.

  The same arithmetic as tests/conftest.py's write_csv_dataset had at the release, frozen here.
  """
  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  rows = [("image", "mos", "split")]
  for i in range(count):
    height, width = rng.integers(*sizes, 2)
    level = i / max(count - 1, 1)
    pixels = np.clip(rng.normal(255 * level, 30, (height, width, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(root / f"{i}.png")
    rows.append((f"{i}.png", 100 * level, SPLITS[i % len(SPLITS)]))
  with open(root / "labels.csv", "w", newline="") as f:
    csv.writer(f).writerows(rows)
  return root / "labels.csv"


def write_images(root) -> list[str]:
  """Three small images of different sizes, aspect ratios and kinds; their file names."""
  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(1)
  y, x = np.mgrid[0:72, 0:120]
  wide = np.stack([x * 2, y * 3, (x + y)], -1) + rng.normal(0, 12, (72, 120, 3))
  Image.fromarray(np.clip(wide, 0, 255).astype(np.uint8)).save(root / "wide_rgb.png")
  y, x = np.mgrid[0:100, 0:48]
  tall = 200 - y * 1.5 + rng.normal(0, 20, (100, 48))
  Image.fromarray(np.clip(tall, 0, 255).astype(np.uint8), "L").save(root / "tall_grey.png")
  y, x = np.mgrid[0:90, 0:90]
  square = np.stack([128 + 100 * np.sin(x / 7.0), 128 + 100 * np.cos(y / 5.0), x + y], -1)
  Image.fromarray(np.clip(square, 0, 255).astype(np.uint8)).save(root / "square.jpg", quality=90)
  return ["wide_rgb.png", "tall_grey.png", "square.jpg"]


def _fill(args, **paths) -> list[str]:
  return [arg.format(**paths) for arg in args]


def _run(module: str, args: list[str], env: dict) -> str:
  """Runs console script `module`'s main(args) in a new process (mst.cli.train has no
  `__main__` block); its output."""
  code = f"import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"
  done = subprocess.run([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True, check=False)
  if done.returncode != 0:
    sys.exit(f"{module} failed ({done.returncode}):\n{done.stdout[-5000:]}")
  return done.stdout


def _size(path) -> int:
  return sum(p.stat().st_size for p in pathlib.Path(path).rglob("*") if p.is_file())


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default=str(HERE), help="where the fixture goes (default: here)")
  parser.add_argument("--savedmodel-limit", type=int, default=1_500_000,
                      help="bytes; a larger SavedModel is not kept")
  args = parser.parse_args()
  import mst  # pylint: disable=import-outside-toplevel  (the release under PYTHONPATH)
  repo = os.getcwd()
  if not os.path.abspath(mst.__file__).startswith(os.path.join(repo, "")):
    sys.exit(f"run from the released checkout's root with PYTHONPATH=$PWD ({mst.__file__} "
             f"is not under {repo})")
  commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()
  out = pathlib.Path(args.out)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="mst_compat_"))
  env = dict(os.environ, PYTHONPATH=repo, MST_CACHE_DIR=str(tmp / "cache"),
             TF_CPP_MIN_LOG_LEVEL="2")
  labels = write_dataset(tmp / "dataset")
  paths = {"csv": str(labels), "data_dir": str(tmp / "tfds"), "workdir": str(tmp / "workdir")}
  log = _run("mst.cli.train", _fill(TRAIN_ARGS, **paths), env)

  # The workdir as users keep it (its TensorBoard summaries are a few kB).
  workdir = out / WORKDIR
  if workdir.exists():
    shutil.rmtree(workdir)
  shutil.copytree(tmp / "workdir", workdir, ignore=shutil.ignore_patterns("*.lock"))
  names = write_images(out / IMAGES)
  images = [str(out / IMAGES / name) for name in names]

  scores = [row["score"] for row in mst.load(str(workdir)).score_files(images)]
  predicted = _run("mst.cli.predict", ["--quiet", "--checkpoint", str(workdir), *images], env)
  predict_scores = [json.loads(line)["score"] for line in predicted.splitlines()
                    if line.startswith("{")]
  eval_dir = tmp / "eval"
  _run("mst.cli.evaluate",
       _fill(EVAL_ARGS, **dict(paths, workdir=str(workdir)), output_dir=eval_dir), env)
  with open(eval_dir / "metrics.json") as f:
    eval_metrics = json.load(f)
  with open(eval_dir / "predictions.csv") as f:
    eval_predictions = {row["image"]: float(row["prediction"]) for row in csv.DictReader(f)}
  with open(workdir / "test_metrics.json") as f:
    test_metrics = json.load(f)

  exported = tmp / "savedmodel"
  _run("mst.cli.export", ["--checkpoint", str(workdir), "--output", str(exported)], env)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  model = tf.saved_model.load(str(exported))
  serve = model.signatures["serving_default"]
  savedmodel_scores = [float(serve(tf.io.read_file(path))["output_0"]) for path in images]
  savedmodel = out / SAVEDMODEL
  if savedmodel.exists():
    shutil.rmtree(savedmodel)
  kept = _size(exported) <= args.savedmodel_limit
  if kept:
    shutil.copytree(exported, savedmodel)

  expected = {
      "written_by": {"commit": commit, "mst_version": mst.__version__,
                     "generator": "tests/data/make_compat_workdir.py"},
      "train_command": ["mst-train", *TRAIN_ARGS],
      "eval_command": ["mst-eval", *EVAL_ARGS],
      "images": [f"{IMAGES}/{name}" for name in names],
      "scores": scores,
      "predict_scores": predict_scores,
      "eval_predictions": eval_predictions,
      "eval_metrics": eval_metrics,
      "test_metrics": test_metrics,
      "last_step": max(int(p.name) for p in (workdir / "checkpoints").iterdir()
                       if p.name.isdigit()),
      "savedmodel": ({"path": SAVEDMODEL, "signature": "serving_default",
                      "scores": savedmodel_scores} if kept else None),
  }
  with open(out / EXPECTED, "w") as f:
    json.dump(expected, f, indent=2)
    f.write("\n")
  print(log[-2000:])
  print(json.dumps(expected, indent=2))
  print(f"workdir {_size(workdir)} bytes, SavedModel {_size(exported)} bytes "
        f"({'kept' if kept else 'not kept'}); temporary files in {tmp}")


if __name__ == "__main__":
  main()
