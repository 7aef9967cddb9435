"""Attention rollout, the HSE similarity grid, and `mst-visualize` on a small exported model."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mst.checkpoints import npz
from mst.cli import visualize
from mst.data import multiscale
from mst.data import preprocess
from mst.visualization import figures
from mst.visualization import rollout
from support.checkpoints import SMALL_MODEL
from support.checkpoints import jitted_forward
from support.checkpoints import scoring_params
from support.images import random_pixels

# The small model's patch and grid, with resized scales small enough for tiny images.
PP = multiscale.MultiScaleConfig(patch_size=32, grid_size=10, longer_side_lengths=(64, 96))


@pytest.fixture(scope="module")
def params():
  """The params of conftest's `small_npz`; their random head makes the logits non-zero."""
  return jax.device_get(scoring_params(SMALL_MODEL, seed=0))


def _padded_batch(image, length):
  features = preprocess.multiscale_patches(tf.constant(image), PP)
  features = preprocess.pad_to_length(features, length)
  return {key: value.numpy()[None] for key, value in features.items()}


def _random_attention(rng, mask, layers=3, heads=2):
  """Softmax weights [B, heads, T, T] over the unmasked keys, one array per layer."""
  batch, length = mask.shape
  out = []
  for _ in range(layers):
    logits = jnp.asarray(rng.normal(size=(batch, heads, length, length)) * 3)
    out.append(jax.nn.softmax(jnp.where(mask[:, None, None, :], logits, -jnp.inf), axis=-1))
  return out


def test_sown_weights_are_the_ones_used_and_leave_the_output_unchanged(params):
  batch = _padded_batch(random_pixels(50, 70), 64)  # 4 + 9 + 6 real tokens, 45 padded
  # The chunked CPU path, no weights kept; then the one that records them.
  plain = jitted_forward(SMALL_MODEL)(params, batch)
  logits, state = jitted_forward(SMALL_MODEL, mutable=("intermediates",))(params, batch)
  np.testing.assert_allclose(logits, plain, atol=1e-5)
  weights = rollout.attention_weights(state["intermediates"], SMALL_MODEL.num_layers)
  assert len(weights) == SMALL_MODEL.num_layers
  mask = np.concatenate([[True], batch["mask"][0]])  # CLS first
  for w in weights:
    assert w.shape == (1, SMALL_MODEL.num_heads, 65, 65)
    np.testing.assert_allclose(np.sum(w, axis=-1), 1.0, atol=1e-5)
    assert np.all(np.asarray(w)[..., ~mask] == 0)  # padded keys get exactly nothing
    assert np.all(np.asarray(w)[..., mask] > 0)


def test_rollout_rows_sum_to_one_and_the_cls_row_matches_the_full_product():
  rng = np.random.default_rng(0)
  mask = np.array([[True] * 6 + [False] * 3, [True] * 9])
  attentions = _random_attention(rng, mask)
  full = np.asarray(rollout.attention_rollout(attentions))
  np.testing.assert_allclose(full.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(rollout.cls_rollout(attentions), full[:, 0], atol=1e-6)
  assert np.all(full[0, :6, 6:] == 0)  # real tokens never draw on padding, through any layer
  # One layer: the head mean, half-weighted, plus half the identity.
  one = np.asarray(rollout.attention_rollout(attentions[:1]))
  expected = 0.5 * np.mean(attentions[0], axis=1) + 0.5 * np.eye(9)
  np.testing.assert_allclose(one, expected, atol=1e-6)
  # Later layers multiply from the left: A'_2 A'_1.
  two = np.asarray(rollout.attention_rollout(attentions[:2]))
  second = 0.5 * np.mean(attentions[1], axis=1) + 0.5 * np.eye(9)
  np.testing.assert_allclose(two, second @ expected, atol=1e-5)


def test_uniform_attention_rolls_out_uniformly_over_real_tokens(params):
  # Zero queries and keys make every logit 0: each token attends uniformly to the real tokens.
  flat = npz.params_to_flat(params)
  flat = {name: (np.zeros_like(value) if "/query/" in name or "/key/" in name else value)
          for name, value in flat.items()}
  vis = rollout.Visualizer(npz.flat_to_params(flat), SMALL_MODEL, PP)
  batch = _padded_batch(random_pixels(70, 100), 64)  # 4 + 9 + 12 = 25 real tokens, 39 padded
  _, row = vis.rollout({key: value[0] for key, value in batch.items()})
  real = batch["mask"][0]
  assert real.sum() == 25
  assert np.all(row[~real] == 0)
  np.testing.assert_allclose(row[real], row[real][0], rtol=1e-5)
  assert 0 < row[real].sum() < 1  # the CLS token keeps the rest
  maps, _ = vis.attention_maps(random_pixels(70, 100))
  assert [m.label for m in maps] == ["64 px", "96 px", "native 100x70"]
  assert [m.attention.shape for m in maps] == [(2, 2), (3, 3), (3, 4)]
  assert [m.image.shape for m in maps] == [(45, 64, 3), (67, 96, 3), (70, 100, 3)]
  shares = np.array([m.share for m in maps])
  np.testing.assert_allclose(shares / shares.sum(), [4 / 25, 9 / 25, 12 / 25], rtol=1e-5)


def test_scale_grids_follow_scale_ids_mask_and_raster_order():
  # Scale 0: 2x2 grid, padded to 6; scale 1 (native): 2x3 grid, cut to 4 tokens.
  scale_idx = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0])
  mask = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0], bool)
  row = np.arange(12, dtype=np.float32)
  small, native = rollout.scale_grids(row, scale_idx, mask, [(2, 2), (2, 3)])
  np.testing.assert_array_equal(small, [[0, 1], [2, 3]])
  np.testing.assert_array_equal(native[0], [6, 7, 8])
  assert native[1, 0] == 9 and np.isnan(native[1, 1:]).all()
  with pytest.raises(ValueError, match="more than"):
    rollout.scale_grids(row, scale_idx, mask, [(1, 2), (2, 3)])


def test_hse_similarity_is_symmetric_with_a_unit_diagonal():
  table = np.random.default_rng(0).normal(size=(16, 8))
  similarity = figures.hse_similarity(table, 4)
  assert similarity.shape == (4, 4, 4, 4)
  flat = similarity.reshape(16, 16)
  np.testing.assert_allclose(np.diag(flat), 1.0, atol=1e-6)
  np.testing.assert_allclose(flat, flat.T, atol=1e-6)
  assert np.all(np.abs(flat) <= 1 + 1e-6)
  # Embeddings that depend on the grid row only are identical along each row.
  rows = np.repeat(np.random.default_rng(1).normal(size=(4, 8)), 4, axis=0)
  by_row = figures.hse_similarity(rows, 4)
  np.testing.assert_allclose(by_row[2, 1, 2], 1.0, atol=1e-6)
  assert np.all(by_row[2, 1, 0] < 0.999)
  mosaic = figures.hse_mosaic(similarity)
  assert mosaic.shape == (19, 19)
  np.testing.assert_array_equal(mosaic[5:9, 10:14], similarity[1, 2])  # tile (1, 2)
  assert np.isnan(mosaic[4]).all() and np.isnan(mosaic[:, 9]).all()  # the gaps


def _png(path):
  return np.asarray(Image.open(path).convert("RGB"))


def test_cli_writes_readable_pngs_and_reports_bad_images(tmp_path, capsys, small_npz):
  (tmp_path / "other").mkdir()
  good = [tmp_path / "wide.png", tmp_path / "other" / "wide.jpg", tmp_path / "grey.png"]
  Image.fromarray(random_pixels(60, 90)).save(good[0])
  Image.fromarray(random_pixels(60, 90, seed=1)).save(good[1])
  Image.fromarray(random_pixels(50, 50)[..., 0]).save(good[2])
  bad = tmp_path / "text.jpg"
  bad.write_bytes(b"not an image")
  out = tmp_path / "figures"
  argv = ["--checkpoint", small_npz, "--output-dir", str(out), str(good[0]), str(bad),
          str(tmp_path / "missing.png"), str(good[1]), str(good[2])]
  assert visualize.main(argv) == 1
  captured = capsys.readouterr()
  assert f"{bad}: not a readable image" in captured.err
  assert f"{tmp_path / 'missing.png'}: no such file" in captured.err
  names = sorted(os.listdir(out))
  assert names == ["grey_attention.png", "hse_similarity.png", "wide_2_attention.png",
                   "wide_attention.png"]
  assert captured.out.split() == [str(out / name) for name in
                                  ["hse_similarity.png", "wide_attention.png",
                                   "wide_2_attention.png", "grey_attention.png"]]
  attention = _png(out / "wide_attention.png")
  height, width, _ = attention.shape
  assert width > 2.5 * height  # three panels side by side
  assert attention.std() > 20  # a picture, not a blank page
  hse = _png(out / "hse_similarity.png")
  assert 0.8 < hse.shape[1] / hse.shape[0] < 1.3 and hse.std() > 20
  assert visualize.main(["--checkpoint", small_npz, "--output-dir", str(out), str(good[0])]) == 0
  capsys.readouterr()
  assert visualize.main(["--checkpoint", small_npz, "--output-dir", str(out), "--max-tokens", "150",
                         str(good[0])]) == 1
  assert f"{good[0]}: 90x60 makes 199 tokens, more than --max-tokens 150" in capsys.readouterr().err


def test_cli_help_and_bad_checkpoint(tmp_path, capsys):
  with pytest.raises(SystemExit):
    visualize.main(["--help"])
  assert "hse_similarity.png" in capsys.readouterr().out
  broken = tmp_path / "broken.npz"
  broken.write_text("nope")
  assert visualize.main(["--checkpoint", str(broken), "a.png"]) == 2
  assert str(broken) in capsys.readouterr().err
