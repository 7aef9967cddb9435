"""The input pipeline on a tiny tfds dataset: shapes, masks, flips, determinism, exact resume and
evaluation that counts every example once across simulated hosts."""

import io

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from mst import input_pipeline as ip
from mst import preprocess

PP = preprocess.MultiScaleConfig(patch_size=32, grid_size=4, longer_side_lengths=(64,),
                                 max_seq_len_from_original_res=10)
SIZES = [(40, 60), (64, 64), (100, 30), (33, 97), (70, 70), (50, 120), (20, 20), (90, 64),
         (64, 40), (128, 96), (45, 45)]


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, "PNG")
  return buffer.getvalue()


def _examples():
  rng = np.random.default_rng(0)
  out = []
  for i, (h, w) in enumerate(SIZES):
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if i == 2:
      pixels = pixels[..., 0]  # one greyscale image
    out.append({"image": _png(pixels), "mos": float(i), "name": f"{i}.png"})
  return out


class PipelineTestImages(tfds.core.GeneratorBasedBuilder):
  """Eleven small images of different sizes with mos = their position."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(), dtype=tf.string),
        "mos": tfds.features.Scalar(np.float32), "name": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(), "test": self._generate_examples()}

  def _generate_examples(self):
    for i, example in enumerate(_examples()):
      yield i, example


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
  b = PipelineTestImages(data_dir=str(tmp_path_factory.mktemp("tfds")))
  b.download_and_prepare()
  return b


def _batches(dataset, n):
  return [batch for _, batch in zip(range(n), dataset.as_numpy_iterator())]


def _train(builder, **kwargs):
  return ip.train_dataset(builder, "train", **{"batch_size": 4, "pp_config": PP, **kwargs})


def test_train_batches_have_fixed_shapes_and_labels(builder):
  (batch,) = _batches(_train(builder), 1)
  assert batch["patches"].shape == (4, 4 + 10, 32 * 32 * 3)
  assert batch["mask"].shape == batch["spatial_idx"].shape == batch["scale_idx"].shape == (4, 14)
  assert batch["mos"].dtype == np.float32 and set(batch["mos"]) <= set(range(len(SIZES)))
  assert batch["mask"][:, 4:].sum(axis=1).max() <= 10


def test_each_epoch_holds_every_example_once_and_epochs_differ(builder):
  # 11 examples, batch 1: positions 0..10 are epoch 0, 11..21 epoch 1.
  order = [int(b["mos"][0]) for b in _batches(_train(builder, batch_size=1), 22)]
  assert sorted(order[:11]) == list(range(11)) and sorted(order[11:]) == list(range(11))
  assert order[:11] != order[11:]


def test_same_seed_same_batches_other_seed_other_order(builder):
  first = _batches(_train(builder, seed=3), 5)
  again = _batches(_train(builder, seed=3), 5)
  for a, b in zip(first, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  other = _batches(_train(builder, seed=4), 5)
  assert [b["mos"].tolist() for b in first] != [b["mos"].tolist() for b in other]


@pytest.mark.parametrize("start_step", [1, 3, 7])
def test_resume_continues_exactly_where_the_stream_was(builder, start_step):
  # Batches of 4 over 11 examples: step 3 starts inside epoch 1, step 7 inside epoch 2.
  augment = ip.Augment(flip_prob=0.5, crop=True)
  full = _batches(_train(builder, augment=augment), start_step + 2)
  resumed = _batches(_train(builder, augment=augment, start_step=start_step), 2)
  for a, b in zip(full[start_step:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_flip_mirrors_the_native_patches(builder, flip_prob):
  pp = preprocess.MultiScaleConfig(patch_size=32, grid_size=4, longer_side_lengths=(),
                                   max_seq_len_from_original_res=16)
  (batch,) = _batches(_train(builder, batch_size=1, pp_config=pp,
                             augment=ip.Augment(flip_prob=flip_prob)), 1)
  index = int(batch["mos"][0])
  image = tf.io.decode_image(_examples()[index]["image"], channels=3)
  if flip_prob:
    image = tf.reverse(image, axis=[1])
  expected = preprocess.multiscale_patches(image, pp)
  np.testing.assert_allclose(batch["patches"][0], expected["patches"].numpy(), atol=1e-6)


def test_random_crop_keeps_pixels_unresized(builder):
  pp = preprocess.MultiScaleConfig(patch_size=32, grid_size=4, longer_side_lengths=(),
                                   max_seq_len_from_original_res=16)
  augment = ip.Augment(flip_prob=0.0, crop=True, crop_area=(0.2, 0.5))
  for batch in _batches(_train(builder, batch_size=1, pp_config=pp, augment=augment), 6):
    h, w = SIZES[int(batch["mos"][0])]
    full_tokens = -(-h // 32) * -(-w // 32)
    assert batch["mask"].sum() <= min(full_tokens, 16)
    # Pixel values stay those of the image: a crop, not an interpolation, so every value is k/255
    # (the SAME padding inside patches is exactly 0, i.e. 127.5, and left out).
    values = batch["patches"][batch["mask"]]
    values = (values[values != 0] + 1) / 2 * 255
    np.testing.assert_allclose(values, np.round(values), atol=1e-3)


def test_hosts_read_disjoint_parts_that_cover_the_split(builder):
  seen = []
  for index in range(2):
    host = ip.Host(index, 2)
    n = ip.num_examples(builder, "train", host)
    seen.append({int(b["mos"][0]) for b in _batches(_train(builder, batch_size=1, host=host), n)})
  assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(len(SIZES)))


def test_eval_counts_every_example_once_across_two_hosts(builder):
  sizes = ip.image_sizes(builder, "test")
  # Sizes come in the split's stored order (tfds shuffles at preparation); mos tells which is which.
  stored_mos = [int(e["mos"]) for e in ip.read_split(builder, "test", ip.Host()).as_numpy_iterator()]
  assert [tuple(s) for s in sizes] == [SIZES[m] for m in stored_mos]
  pp = preprocess.MultiScaleConfig(patch_size=32, grid_size=4, longer_side_lengths=(64,))
  shapes, indices = [], []
  for index in range(2):
    host = ip.Host(index, 2)
    plan = ip.eval_plan(sizes, pp, batch_size=2, host=host)
    batches = list(ip.eval_dataset(builder, "test", batch_size=2, pp_config=pp, plan=plan)
                   .as_numpy_iterator())
    shapes.append([b["patches"].shape for b in batches])
    for batch in batches:
      valid = batch["valid"]
      indices.extend(batch["index"][valid].tolist())
      np.testing.assert_array_equal(batch["mos"][valid], np.take(stored_mos, batch["index"][valid]))
      assert not batch["mask"][~valid].any() and (batch["index"][~valid] == -1).all()
  assert shapes[0] == shapes[1]  # same steps, same shapes on every host
  assert sorted(indices) == list(range(len(SIZES)))
  lengths = {shape[1] for shape in shapes[0]}
  assert lengths == {preprocess.bucket_length(pp.seq_len(h, w)) for h, w in SIZES}


def test_eval_uses_native_resolution_with_all_patches(builder):
  pp = preprocess.MultiScaleConfig(patch_size=32, grid_size=4, longer_side_lengths=())
  plan = ip.eval_plan(ip.image_sizes(builder, "test"), pp, batch_size=1)
  for batch in ip.eval_dataset(builder, "test", batch_size=1, pp_config=pp,
                               plan=plan).as_numpy_iterator():
    h, w = SIZES[int(batch["mos"][0])]
    assert batch["mask"].sum() == -(-h // 32) * -(-w // 32)


def test_greyscale_decodes_to_three_channels():
  grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
  image = ip.decode(tf.constant(_png(grey))).numpy()
  assert image.shape == (3, 4, 3) and (image == grey[..., None]).all()


def test_training_refuses_unbounded_native_length(builder):
  with pytest.raises(ValueError, match="fixed sequence length"):
    _train(builder, pp_config=preprocess.MultiScaleConfig(max_seq_len_from_original_res=-1))
