"""Training without padding work: the host-side layouts (`mst.data.packing`) keep every image
whole and its tokens intact, and the model gives the padded path's scores and gradients on them."""

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from mst.configure import resolve
from mst.data import packing
from mst.data import multiscale
from mst.data import preprocess
from mst.models import musiq
from mst.models import packing as model_packing
from support.checkpoints import small_model_config
from support.configs import tiny_run_config

PP = multiscale.MultiScaleConfig(patch_size=32, longer_side_lengths=(64, 96),
                                 max_seq_len_from_original_res=8)
SIZES = ((40, 100), (100, 40), (64, 64), (200, 150), (33, 90), (120, 300), (50, 50), (90, 160))


@pytest.fixture(scope="module")
def batch():
  """Eight images of varied sizes and orientations, as the padded training pipeline makes them."""
  rng = np.random.default_rng(0)
  examples = [preprocess.multiscale_patches(
      tf.constant(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), PP) for h, w in SIZES]
  out = {key: np.stack([e[key].numpy() for e in examples]) for key in examples[0]}
  out["mos"] = np.linspace(0.0, 1.0, len(SIZES), dtype=np.float32)
  return out


def test_image_tokens_counts_what_preprocessing_makes(batch):
  counts = [packing.image_tokens(h, w, PP) for h, w in SIZES]
  assert counts == list(batch["mask"].sum(axis=1) + 1)


def test_first_fit_decreasing_fills_rows_without_splitting_images():
  rows = packing.pack_rows([5, 3, 7, 2, 4], 10)
  assert sorted(i for row in rows for i in row) == [0, 1, 2, 3, 4]
  assert rows == [[2, 1], [0, 4], [3]]
  with pytest.raises(ValueError, match="11 tokens does not fit a packed row of 10"):
    packing.pack_rows([11], 10)


def test_row_length_is_the_shortest_that_packs_well():
  # 300-token images: rows of 600 hold exactly two; a row must still hold a 500-token image.
  assert packing.choose_row_length([300] * 16, 8, 500) == 600
  assert packing.fill([300] * 16, 8, 600) == 1.0


def test_packed_rows_hold_whole_images_with_block_diagonal_segments(batch):
  shards, length = 2, 40
  packed = packing.packed_layout(batch, shards, length)
  per_shard, rows = 4, packed["mask"].shape[0] // shards
  flat = {key: packed[key].reshape((shards, rows * length) + packed[key].shape[2:])
          for key in ("patches", "spatial_idx", "scale_idx", "mask", "segment_ids")}
  for image in range(len(SIZES)):
    shard, slot = divmod(image, per_shard)
    start = int(packed["cls_idx"][shard, slot])
    real = np.flatnonzero(batch["mask"][image])
    span = slice(start + 1, start + 1 + real.size)
    assert start // length == (start + real.size) // length  # one row: never split
    segment = flat["segment_ids"][shard, start]
    assert segment > 0 and not flat["mask"][shard, start]  # the CLS slot
    assert (flat["segment_ids"][shard, span] == segment).all()
    for key in ("patches", "spatial_idx", "scale_idx", "mask"):
      np.testing.assert_array_equal(flat[key][shard, span], batch[key][image, real])
  # Every real token is one image's, and only the images' tokens carry a segment.
  assert packed["mask"].sum() == batch["mask"].sum()
  assert (packed["segment_ids"] > 0).sum() == batch["mask"].sum() + len(SIZES)
  assert packing.useful_fraction(packed) > packing.useful_fraction(batch)
  mask = np.asarray(model_packing.attention_mask(packed["segment_ids"]))
  same = packed["segment_ids"][:, :, None] == packed["segment_ids"][:, None, :]
  np.testing.assert_array_equal(mask, same)


def test_padded_layout_indexes_every_real_patch_of_each_shard(batch):
  laid = packing.padded_layout(batch, 2)
  idx = laid["real_patch_idx"]
  per_shard = batch["mask"].reshape(2, -1)
  assert idx.shape[1] < per_shard.shape[1]  # padding skipped
  for shard in range(2):
    assert set(np.flatnonzero(per_shard[shard])) <= set(idx[shard])


@pytest.mark.slow
def test_packed_and_real_patch_paths_give_the_padded_scores_and_gradients(batch):
  config = small_model_config(patch_encoder="linear")  # compiles fast; the layout is the point
  params = musiq.init_params(config, jax.random.key(0))
  noise = lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape)
  params = jax.tree.map(noise, params)  # a trained-looking model: no zero head or CLS token
  model = musiq.Musiq(config)

  def loss(p, b):
    logits = model.apply({"params": p}, b, train=True, rngs={"dropout": jax.random.key(0)})
    return jnp.mean(jnp.abs(logits[:, 0] - b["mos"])), logits

  step = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (expected_loss, expected_logits), expected_grads = step(params, batch)
  expected_grads = flax.traverse_util.flatten_dict(expected_grads, sep="/")
  scale = max(float(jnp.abs(g).max()) for g in expected_grads.values())
  for laid in (packing.padded_layout(batch, 2), packing.packed_layout(batch, 2, 40)):
    (got_loss, got_logits), grads = step(params, laid)
    np.testing.assert_allclose(got_logits, expected_logits, atol=1e-5)
    assert float(got_loss) == pytest.approx(float(expected_loss), abs=1e-6)
    for name, grad in flax.traverse_util.flatten_dict(grads, sep="/").items():
      np.testing.assert_allclose(grad, expected_grads[name], atol=1e-4 * scale, err_msg=name)


def test_config_refuses_packing_it_cannot_do():
  config = tiny_run_config("labels.csv", data__packing=True, model__spatial_embedding="fixed")
  with pytest.raises(ValueError, match="embeds the row position"):
    resolve.validate(config)
  config.model.spatial_embedding = "hse"
  config.data.packed_length = 40  # runlocal: 4 + 16 + 32 tokens and CLS need 53
  with pytest.raises(ValueError, match="packed_length=40 is shorter than the 53 tokens"):
    resolve.validate(config)
