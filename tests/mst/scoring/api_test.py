"""The Python API: `mst.load` -> `Scorer`, what mst-predict runs, and the README's example."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import mst
from mst.scoring import api
from mst.cli import predict
from mst.data import image_io
from support import REPO
from support.readme_code import code_blocks



@pytest.fixture(scope="module")
def scorer(small_npz):
  return mst.load(small_npz)


def test_import_mst_is_cheap():
  code = ("import sys, mst; assert 'jax' not in sys.modules and 'tensorflow' not in sys.modules; "
          "assert 'load' in mst.__all__")
  done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)),
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]


def test_readme_example_runs_and_scores_like_mst_predict(tmp_path, monkeypatch, capsys, small_npz):
  (example,) = code_blocks("README.md", "Use it from Python", "python")
  assert len(example.strip().splitlines()) == 5
  shutil.copy(small_npz, tmp_path / "koniq_ckpt.npz")
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
  (tmp_path / "holiday_photos").mkdir()
  (tmp_path / "holiday_photos" / "beach.png").write_bytes(b"not an image")
  monkeypatch.chdir(tmp_path)
  exec(compile(example, "README.md", "exec"), {})  # pylint: disable=exec-used
  printed = capsys.readouterr().out.splitlines()
  assert predict.main(["--quiet", "--checkpoint", "koniq_ckpt.npz", "photo.jpg",
                       "holiday_photos/beach.png"]) == 1
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert float(printed[0]) == pytest.approx(lines[0]["score"], abs=1e-6)
  assert [eval(row) for row in printed[1:]] == lines  # pylint: disable=eval-used
  assert set(lines[1]) == {"image", "error"}


def test_a_path_an_array_and_a_pil_image_score_the_same(tmp_path, scorer):
  pixels = np.random.default_rng(1).integers(0, 256, (40, 70, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(tmp_path / "a.png")
  grey = pixels[..., 0]
  Image.fromarray(grey).save(tmp_path / "grey.png")
  by_path = scorer.score(tmp_path / "a.png")
  assert isinstance(by_path, float) and np.isfinite(by_path)
  assert scorer.score(pixels) == pytest.approx(by_path, abs=1e-6)
  assert scorer.score(Image.fromarray(pixels)) == pytest.approx(by_path, abs=1e-6)
  assert scorer.score(np.dstack([pixels, np.full((40, 70), 7, np.uint8)])) == pytest.approx(
      by_path, abs=1e-6)  # RGBA: alpha dropped
  by_grey_file = scorer.score(str(tmp_path / "grey.png"))
  for image in (grey, grey[..., None], Image.fromarray(grey)):
    assert scorer.score(image) == pytest.approx(by_grey_file, abs=1e-6)
  assert scorer.score(pixels) != pytest.approx(by_grey_file, abs=1e-6)


def test_bad_inputs_raise_image_errors_naming_the_problem(tmp_path, scorer):
  with pytest.raises(image_io.ImageError, match="no such file"):
    scorer.score(tmp_path / "missing.png")
  with pytest.raises(image_io.ImageError, match="uint8"):
    scorer.score(np.zeros((8, 8, 3), np.float32))
  with pytest.raises(image_io.ImageError, match="shape"):
    scorer.score(np.zeros((8, 8, 2), np.uint8))
  with pytest.raises(image_io.ImageError, match="PIL"):
    scorer.score([[1, 2], [3, 4]])


def test_pil_modes_convert_as_the_file_reader_does(tmp_path):
  rng = np.random.default_rng(2)
  for mode in ("P", "RGBA", "LA", "I;16"):  # (CMYK: PIL's conversion, not libjpeg's)
    source = Image.fromarray(rng.integers(0, 256, (12, 9, 3), dtype=np.uint8))
    image = (source.convert("L").convert("I;16") if mode == "I;16" else source.convert(mode))
    path = tmp_path / f"{mode.replace(';', '')}.png"
    image.save(path)
    from_file = image_io.read_image(str(path))
    got = api.as_rgb(Image.open(path))
    assert got.shape == (12, 9, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, from_file, err_msg=mode)


def test_score_files_gives_mst_predicts_lines_and_never_raises(tmp_path, scorer, capsys,
                                                               small_npz):
  rng = np.random.default_rng(3)
  paths = []
  for i, (h, w) in enumerate([(30, 30), (70, 40), (31, 45)]):  # one bucket, 2 + 1 images
    paths.append(str(tmp_path / f"{i}.png"))
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
  paths.insert(1, str(tmp_path / "missing.jpg"))
  rows = scorer.score_files(paths, batch_size=2)
  assert predict.main(["--quiet", "--batch-size", "2", "--checkpoint", small_npz, *paths]) == 1
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [row["image"] for row in rows] == paths
  assert rows[1] == {"image": paths[1], "error": f"{paths[1]}: no such file"}
  assert [set(row) for row in rows] == [set(line) for line in lines]
  for row, line in zip(rows, lines):
    assert row.get("score") == pytest.approx(line.get("score"), abs=1e-6)
  assert [set(row) for row in rows[:1] + rows[2:]] == [{"image", "score"}] * 3
