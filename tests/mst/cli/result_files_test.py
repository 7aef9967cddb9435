"""mst-predict's output for pipes and files: CSV, atomic --output, --list, --no-recursive, and
input read lazily with bounded look-ahead."""

import csv
import io
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mst.scoring import api
from mst.cli import predict
from mst.cli import result_files
from support import REPO
from support.checkpoints import small_model_config
from support.checkpoints import write_npz


def _images(folder, sizes, seed=0):
  rng = np.random.default_rng(seed)
  folder.mkdir(parents=True, exist_ok=True)
  paths = []
  for i, (h, w) in enumerate(sizes):
    paths.append(str(folder / f"{i}.png"))
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
  return paths


def test_csv_output_file_list_and_no_recursive(tmp_path, capsys, small_npz):
  top = _images(tmp_path / "photos", [(30, 40), (41, 33)])
  nested = _images(tmp_path / "photos" / "nested", [(35, 35)], seed=1)
  assert predict.main(["--quiet", "--checkpoint", small_npz, str(tmp_path / "photos")]) == 0
  jsonl = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [line["image"] for line in jsonl] == top + nested  # recursive by default

  listing = tmp_path / "list.txt"
  listing.write_text("\n".join([nested[0], "", str(tmp_path / "gone.png"), top[0]]) + "\n")
  out = tmp_path / "scores.csv"
  status = predict.main(["--quiet", "--checkpoint", small_npz, "--no-recursive", "--format",
                         "csv", "--output", str(out), str(tmp_path / "photos"), "--list",
                         str(listing)])
  assert status == 1 and capsys.readouterr().out == ""
  rows = list(csv.DictReader(open(out, newline="")))
  assert list(rows[0]) == ["image", "score", "error"]
  assert [row["image"] for row in rows] == top + [nested[0], str(tmp_path / "gone.png"), top[0]]
  score = {line["image"]: line["score"] for line in jsonl}
  for row in rows[:3] + rows[4:]:
    assert float(row["score"]) == pytest.approx(score[row["image"]], abs=1e-6)
    assert row["error"] == ""
  assert rows[3]["score"] == "" and "no such file" in rows[3]["error"]
  assert os.listdir(tmp_path) and not [n for n in os.listdir(tmp_path) if "partial" in n]

  for flag, path, named in (("--list", tmp_path / "no_list.txt", "no_list.txt"),
                            ("--output", tmp_path / "none" / "out.csv", "no folder")):
    assert predict.main(["--quiet", "--checkpoint", small_npz, flag, str(path), top[0]]) == 2
    assert named in capsys.readouterr().err


def test_distribution_csv_columns():
  assert result_files.csv_columns("distribution", 3) == ["image", "score", "p1", "p2", "p3",
                                                         "error"]
  stream = io.StringIO()
  writer = result_files.ResultWriter(stream, "csv", result_files.csv_columns("distribution", 2))
  writer.write({"image": "a,b.jpg", "score": 1.5, "distribution": [0.5, 0.5]})
  assert list(csv.reader(io.StringIO(stream.getvalue()))) == [
      ["image", "score", "p1", "p2", "error"], ["a,b.jpg", "1.5", "0.5", "0.5", ""]]


def test_an_interrupted_output_leaves_no_file_and_keeps_the_old_one(tmp_path):
  path = tmp_path / "scores.jsonl"
  path.write_text("old\n")
  with pytest.raises(KeyboardInterrupt):
    with result_files.atomic_output(str(path)) as f:
      f.write("half\n")
      raise KeyboardInterrupt
  assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["scores.jsonl"]
  # Killed outright (no cleanup runs): the name asked for never appears.
  code = ("import os, signal, sys; from mst.cli import result_files\n"
          "with result_files.atomic_output(sys.argv[1]) as f:\n"
          "  f.write('line\\n'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n")
  done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "new.jsonl")],
                        env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
  assert done.returncode == -signal.SIGKILL
  assert not (tmp_path / "new.jsonl").exists()
  assert [n for n in os.listdir(tmp_path) if n.startswith(".new.jsonl.")]  # the partial one


def test_paths_are_read_lazily_and_a_rare_bucket_does_not_hold_back_the_output(tmp_path):
  # A cheap model (linear patch encoder, native scale only). One image of bucket 79, then 60 of
  # bucket 63, scored 2 at a time: the lone image's batch never fills, so it runs early once it
  # holds back 32 images, not at the end (its result is out a few batches later: they run
  # concurrently with it).
  ckpt = write_npz(tmp_path / "linear.npz", small_model_config(
      num_layers=1, patch_encoder="linear", num_scales=1))
  paths = (_images(tmp_path / "big", [(200, 300)])
           + _images(tmp_path / "small", [(16, 16)]) * 60)
  pulled = []

  def lazily():
    for path in paths:
      pulled.append(path)
      yield path

  rows = api.load(ckpt).iter_files(lazily(), batch_size=2)
  first = next(rows)
  assert first["image"] == paths[0] and "score" in first
  assert len(pulled) < len(paths)
  assert [row["image"] for row in [first, *rows]] == paths
