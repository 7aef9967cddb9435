"""`mst-predict` end to end on a small exported checkpoint and images of every awkward kind."""

import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mst.checkpoints import loader
from mst.checkpoints import npz
from mst.cli import predict
from mst.data import image_io
from mst.data import multiscale
from mst.data import preprocess
from mst.scoring import inference
from mst.models import musiq
from support.checkpoints import jitted_forward
from support.checkpoints import small_model_config
from support.checkpoints import write_npz


def _save(path, array, mode=None, **kwargs):
  image = Image.fromarray(array)
  if mode:
    image = image.convert(mode)
  image.save(path, **kwargs)
  return str(path)


def _run(capsys, argv):
  status = predict.main(argv + ["--quiet"])
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  return status, lines


def _direct_score(ckpt, path, lengths=(224, 384)):
  """The score of the model applied to the unpadded sequence, batch of one."""
  params, config = npz.load_official_npz(ckpt)
  pp_config = multiscale.MultiScaleConfig(patch_size=32, grid_size=10, longer_side_lengths=lengths)
  features = preprocess.multiscale_patches(tf.constant(image_io.read_image(path)), pp_config)
  batch = {key: value.numpy()[None] for key, value in features.items()}
  logits = jitted_forward(config)(params, batch)
  return float(musiq.scores(logits, config.head)[0])


def test_awkward_images_are_scored_and_bad_files_get_error_lines(tmp_path, capsys, small_npz):
  rng = np.random.default_rng(0)
  rgb = lambda h, w: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  folder = tmp_path / "photos"
  (folder / "nested").mkdir(parents=True)
  good = [
      _save(folder / "a_rgb.jpg", rgb(60, 80)),
      _save(folder / "b_grey.png", rgb(50, 40)[..., 0]),
      _save(folder / "c_rgba.png", rgb(33, 65), mode="RGBA"),
      _save(folder / "d_palette.png", rgb(40, 40), mode="P"),
      _save(folder / "e_16bit.png", (rgb(30, 30)[..., 0].astype(np.uint16) * 257), mode="I;16"),
      _save(folder / "f_cmyk.jpg", rgb(64, 48), mode="CMYK"),
      _save(folder / "g_tiny.bmp", rgb(1, 1)),
      _save(folder / "h_wide.webp", rgb(2, 1500)),
      _save(folder / "nested" / "i_tall.jpeg", rgb(900, 3)),
  ]
  jpeg = io.BytesIO()
  Image.fromarray(rgb(64, 64)).save(jpeg, "JPEG")
  bad = {
      folder / "x_truncated.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) // 2],
      folder / "y_empty.png": b"",
      folder / "z_text.jpg": b"this is not an image",
  }
  for path, data in bad.items():
    path.write_bytes(data)
  (folder / "notes.txt").write_text("ignored: not an image extension")
  missing = str(tmp_path / "missing.jpg")

  status, lines = _run(capsys, ["--checkpoint", small_npz, str(folder), missing])

  assert status == 1
  by_image = {line["image"]: line for line in lines}
  # A folder's own files (sorted) come before its subfolders'; lines follow the input order.
  expected_order = good[:8] + [str(p) for p in bad] + [good[8], missing]
  assert [line["image"] for line in lines] == expected_order
  assert set(by_image) == set(good) | {str(p) for p in bad} | {missing}
  for path in good:
    assert np.isfinite(by_image[path]["score"]) and "error" not in by_image[path], path
  assert "truncated" in by_image[str(folder / "x_truncated.jpg")]["error"]
  assert "empty" in by_image[str(folder / "y_empty.png")]["error"]
  assert "not a readable image" in by_image[str(folder / "z_text.jpg")]["error"]
  assert by_image[missing]["error"] == f"{missing}: no such file"
  for path in bad:
    assert by_image[str(path)]["error"].startswith(str(path))


@pytest.mark.slow
def test_scores_equal_the_model_on_the_unpadded_sequence(tmp_path, capsys, small_npz):
  rng = np.random.default_rng(1)
  paths = [_save(tmp_path / f"{i}.png", rng.integers(0, 256, shape, dtype=np.uint8))
           for i, shape in enumerate([(100, 150, 3), (97, 160, 3), (300, 200, 3)])]
  status, lines = _run(capsys, ["--checkpoint", small_npz, "--batch-size", "2"] + paths)
  assert status == 0
  assert [line["image"] for line in lines] == paths  # input order, whatever the batching
  for line in lines:
    assert line["score"] == pytest.approx(_direct_score(small_npz, line["image"]), abs=1e-4)


def test_grey_and_rgba_decode_like_their_rgb_equivalents(tmp_path):
  grey = np.random.default_rng(2).integers(0, 256, (20, 30), dtype=np.uint8)
  decoded = image_io.read_image(_save(tmp_path / "grey.png", grey))
  assert decoded.shape == (20, 30, 3) and (decoded == grey[..., None]).all()
  rgba = np.random.default_rng(3).integers(0, 256, (20, 30, 4), dtype=np.uint8)
  np.testing.assert_array_equal(image_io.read_image(_save(tmp_path / "rgba.png", rgba)),
                                rgba[..., :3])
  sixteen = (grey.astype(np.uint16) * 257)
  np.testing.assert_array_equal(
      image_io.read_image(_save(tmp_path / "16.png", sixteen, mode="I;16"))[..., 0], grey)


@pytest.mark.slow
def test_distribution_head_adds_a_distribution(tmp_path, capsys):
  ckpt = write_npz(tmp_path / "ava.npz", small_model_config(num_classes=10, head="distribution"))
  image = _save(tmp_path / "a.jpg", np.full((64, 64, 3), 128, np.uint8))
  status, (line,) = _run(capsys, ["--checkpoint", ckpt, image])
  assert status == 0
  assert len(line["distribution"]) == 10 and sum(line["distribution"]) == pytest.approx(1, 1e-5)
  expected = sum((i + 1) * p for i, p in enumerate(line["distribution"]))
  assert line["score"] == pytest.approx(expected, rel=1e-5)
  assert 1 <= line["score"] <= 10


@pytest.mark.slow
def test_single_scale_checkpoint_uses_the_native_image_only(tmp_path, capsys):
  ckpt = write_npz(tmp_path / "single.npz", small_model_config(num_scales=1))
  image = _save(tmp_path / "a.png", np.random.default_rng(4).integers(0, 256, (70, 90, 3),
                                                                     dtype=np.uint8))
  status, (line,) = _run(capsys, ["--checkpoint", ckpt, image])
  assert status == 0
  assert line["score"] == pytest.approx(_direct_score(ckpt, image, lengths=()), abs=1e-4)


def test_many_sizes_compile_once_per_bucket(tmp_path, small_npz):
  params, config = npz.load_official_npz(small_npz)
  predictor = inference.Predictor(params, config, loader.preprocess_config_for(config))
  rng = np.random.default_rng(5)
  # Native patch counts 12..20 -> 205..213 tokens, all in the 223 bucket (224 with CLS).
  sizes = [(96, 128), (100, 130), (120, 128), (128, 140), (128, 160), (110, 150)]
  paths = [_save(tmp_path / f"{h}x{w}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
           for h, w in sizes]
  results = list(inference.score_files(predictor, paths, batch_size=1))
  assert all("score" in result for _, result in results)
  assert predictor.compiled_shapes == {(1, 223)}
  # Preprocessing in line, without threads ahead of the model, gives the same, in order.
  assert list(inference.score_files(predictor, paths, batch_size=1, workers=0)) == results


class _RecordingPredictor(inference.Predictor):
  """Records, for each batch it scores, its images and how many paths had been read when it was
  submitted."""

  def __init__(self, *args, read, **kwargs):
    super().__init__(*args, **kwargs)
    self.read, self.calls = read, []

  def prepare(self, path):
    prepared = super().prepare(path)
    self.read.append(path)
    return prepared

  @property
  def predict(self):
    """Looked up as score_files submits a batch, so the count is of the paths read by then (the
    batch itself runs later, in a model thread, while more paths are read)."""
    read_by_then = len(self.read)

    def predict(features):
      self.calls.append((len(features), read_by_then))
      return inference.Predictor.predict(self, features)
    return predict


def test_concurrent_batches_keep_order_results_and_the_lag_bound(tmp_path, small_npz):
  params, config = npz.load_official_npz(small_npz)
  rng = np.random.default_rng(6)
  small = [_save(tmp_path / f"s{i}.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
           for i in range(40)]
  lone = _save(tmp_path / "lone.png", rng.integers(0, 256, (400, 400, 3), dtype=np.uint8))
  broken = tmp_path / "broken.png"
  broken.write_bytes(b"not a png")
  paths = [small[0], lone, str(broken)] + small[1:]  # the lone image's bucket never fills

  def score(concurrent):
    read = []
    # Resized to 32 and 64 px, not the paper's 224 and 384: 9 tokens an image, not 197, so the
    # 42 batches take a second, not ten.
    predictor = _RecordingPredictor(params, config,
                                    loader.preprocess_config_for(config, (32, 64)), read=read)
    results = list(inference.score_files(predictor, paths, batch_size=2, workers=0,
                                         concurrent_batches=concurrent))
    return results, predictor.calls

  sequential, _ = score(1)
  results, calls = score(3)
  assert results == sequential
  assert [path for path, _ in results] == paths
  assert "error" in results[2][1] and all("score" in r for i, r in results if i != str(broken))
  # The lone image (read second) runs alone once it is 16 * batch_size images behind the newest.
  assert (1, 2 + 16 * 2) in calls


def test_too_many_tokens_is_an_error_line_not_a_crash(tmp_path, capsys, small_npz):
  image = _save(tmp_path / "big.png", np.zeros((640, 640, 3), np.uint8))  # 400 + 193 tokens
  status, (line,) = _run(capsys, ["--checkpoint", small_npz, "--max-tokens", "500", image])
  assert status == 1
  assert "593 tokens" in line["error"] and "--max-tokens 500" in line["error"]


def test_bad_checkpoint_and_empty_folder(tmp_path, capsys, small_npz):
  broken = tmp_path / "broken.npz"
  broken.write_text("nope")
  image = _save(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
  assert predict.main(["--checkpoint", str(broken), image]) == 2
  assert str(broken) in capsys.readouterr().err
  empty = tmp_path / "empty"
  empty.mkdir()
  status, lines = _run(capsys, ["--checkpoint", small_npz, str(empty)])
  assert status == 1 and "no image files" in lines[0]["error"]
  with pytest.raises(SystemExit):
    predict.main(["--checkpoint", small_npz, "--longer-side-lengths", "224,x", image])
  assert predict.main(["--checkpoint", small_npz, "--longer-side-lengths", "224", image]) == 2
  assert "scale" in capsys.readouterr().err
