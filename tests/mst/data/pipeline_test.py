"""The input pipeline on a tiny tfds dataset: shapes, masks, flips, determinism, exact resume and
evaluation that counts every example once across simulated hosts."""

import dataclasses
import io
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from mst.data import augmentation
from mst.data import pipeline as ip
from mst.data import multiscale
from mst.data import preprocess

PP = multiscale.MultiScaleConfig(patch_size=32, grid_size=4, longer_side_lengths=(64,),
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
  augment = augmentation.Augment(flip_prob=0.5, crop=True)
  full = _batches(_train(builder, augment=augment), start_step + 2)
  resumed = _batches(_train(builder, augment=augment, start_step=start_step), 2)
  for a, b in zip(full[start_step:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_flip_mirrors_the_native_patches(builder, flip_prob):
  pp = multiscale.MultiScaleConfig(patch_size=32, grid_size=4, longer_side_lengths=(),
                                   max_seq_len_from_original_res=16)
  (batch,) = _batches(_train(builder, batch_size=1, pp_config=pp,
                             augment=augmentation.Augment(flip_prob=flip_prob)), 1)
  index = int(batch["mos"][0])
  image = tf.io.decode_image(_examples()[index]["image"], channels=3)
  if flip_prob:
    image = tf.reverse(image, axis=[1])
  expected = preprocess.multiscale_patches(image, pp)
  np.testing.assert_allclose(batch["patches"][0], expected["patches"].numpy(), atol=1e-6)


def test_random_crop_keeps_pixels_unresized(builder):
  pp = multiscale.MultiScaleConfig(patch_size=32, grid_size=4, longer_side_lengths=(),
                                   max_seq_len_from_original_res=16)
  augment = augmentation.Augment(flip_prob=0.0, crop=True, crop_area=(0.2, 0.5))
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
  stored_mos = [int(e["mos"])
                for e in ip.read_split(builder, "test", ip.Host()).as_numpy_iterator()]
  assert [tuple(s) for s in sizes] == [SIZES[m] for m in stored_mos]
  pp = multiscale.MultiScaleConfig(patch_size=32, grid_size=4, longer_side_lengths=(64,))
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
  assert lengths == {multiscale.bucket_length(pp.seq_len(h, w)) for h, w in SIZES}


def test_eval_uses_native_resolution_with_all_patches(builder):
  pp = multiscale.MultiScaleConfig(patch_size=32, grid_size=4, longer_side_lengths=())
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
    _train(builder, pp_config=multiscale.MultiScaleConfig(max_seq_len_from_original_res=-1))


# RandAugment and mixup (ImageNet pre-training).

PRETRAIN = augmentation.Augment(flip_prob=0.5, crop=True, randaugment_layers=2,
                                randaugment_magnitude=15, mixup_alpha=0.2)


def _token_batch(batch_size=4, tokens=6, seed=0):
  rng = np.random.default_rng(seed)
  mask = rng.random((batch_size, tokens)) < 0.6
  return {"patches": tf.constant(rng.normal(size=(batch_size, tokens, 12)) * mask[..., None],
                                 tf.float32),
          "spatial_idx": tf.constant(rng.integers(1, 16, (batch_size, tokens)) * mask, tf.int32),
          "scale_idx": tf.constant(rng.integers(1, 3, (batch_size, tokens)) * mask, tf.int32),
          "mask": tf.constant(mask),
          "label": tf.constant(rng.integers(0, 5, batch_size), tf.int32),
          "mos": tf.constant(rng.random(batch_size) * 100, tf.float32)}


def test_mixup_lambda_is_a_seeded_beta_draw():
  draws = np.array([augmentation.mixup_lambda(0.2, tf.constant([1, i], tf.int64)).numpy()
                    for i in range(200)])
  assert ((draws >= 0) & (draws <= 1)).all() and len(set(draws.tolist())) > 150
  assert np.mean((draws < 0.1) | (draws > 0.9)) > 0.4  # Beta(0.2, 0.2) piles up at the ends
  assert augmentation.mixup_lambda(0.2, tf.constant([1, 7], tf.int64)).numpy() == draws[7]
  wide = [augmentation.mixup_lambda(200.0, tf.constant([1, i])).numpy() for i in range(20)]
  assert np.allclose(wide, 0.5, atol=0.15)
  with pytest.raises(ValueError, match="alpha > 0"):
    augmentation.mixup_lambda(0.0, tf.constant([1, 2]))


def test_mixup_mixes_each_example_with_the_previous_one():
  batch = _token_batch()
  seed = tf.constant([3, 4], tf.int64)
  mixed = {k: v.numpy()
           for k, v in augmentation.mixup_batch(batch, 0.2, seed, num_classes=5).items()}
  lam = float(augmentation.mixup_lambda(0.2, seed))
  a = {k: v.numpy() for k, v in batch.items()}
  b = {k: np.roll(v, 1, axis=0) for k, v in a.items()}
  assert 0.0 <= lam <= 1.0 and "label" not in mixed
  np.testing.assert_allclose(mixed["patches"], lam * a["patches"] + (1 - lam) * b["patches"],
                             atol=1e-6)
  np.testing.assert_array_equal(mixed["mask"], a["mask"] | b["mask"])
  for key in ("spatial_idx", "scale_idx"):
    np.testing.assert_array_equal(mixed[key], np.where(a["mask"], a[key], b[key]))
  onehot = np.eye(5)[a["label"]]
  np.testing.assert_allclose(mixed["dist"], lam * onehot + (1 - lam) * np.roll(onehot, 1, 0),
                             atol=1e-6)
  np.testing.assert_allclose(mixed["dist"].sum(axis=1), 1.0, atol=1e-6)
  np.testing.assert_allclose(mixed["mos"], lam * a["mos"] + (1 - lam) * b["mos"], rtol=1e-6)


def test_mixup_of_a_batch_with_itself_changes_nothing_but_the_label_form():
  one = {k: v[:1] for k, v in _token_batch().items()}  # rolled by one, a batch of 1 is itself
  for i in range(5):
    mixed = augmentation.mixup_batch(one, 0.2, tf.constant([0, i]), num_classes=5)
    for key in ("patches", "spatial_idx", "scale_idx", "mask", "mos"):
      np.testing.assert_array_equal(mixed[key].numpy(), one[key].numpy())
    np.testing.assert_array_equal(mixed["dist"].numpy(), np.eye(5)[one["label"].numpy()])


def test_mixup_of_class_labels_needs_num_classes():
  with pytest.raises(ValueError, match="num_classes"):
    augmentation.mixup_batch(_token_batch(), 0.2, tf.constant([0, 0]))


def test_augment_validates_the_new_fields():
  for bad in (dict(randaugment_layers=-1), dict(randaugment_layers=1.5),
              dict(randaugment_magnitude=31), dict(mixup_alpha=-0.1)):
    with pytest.raises(ValueError, match=next(iter(bad))):
      augmentation.Augment(**bad)


def test_randaugment_leaves_order_crops_and_flips_as_they_were(builder):
  plain = augmentation.Augment(flip_prob=0.5, crop=True)
  strong = augmentation.Augment(flip_prob=0.5, crop=True, randaugment_layers=2,
                                randaugment_magnitude=15)
  before, after = _batches(_train(builder, augment=plain), 3), _batches(_train(builder,
                                                                                augment=strong), 3)
  for a, b in zip(before, after):
    np.testing.assert_array_equal(a["mos"], b["mos"])
    np.testing.assert_array_equal(a["mask"], b["mask"])  # same crop sizes: ops keep the shape
  assert any(not np.array_equal(a["patches"], b["patches"]) for a, b in zip(before, after))


def test_mixup_in_the_stream_mixes_labels_within_the_batch(builder):
  plain = _batches(_train(builder, augment=augmentation.Augment(flip_prob=0.0)), 3)
  mixed = _batches(_train(builder, augment=augmentation.Augment(flip_prob=0.0, mixup_alpha=0.2)), 3)
  for a, b in zip(plain, mixed):
    lo = np.minimum(a["mos"], np.roll(a["mos"], 1))
    hi = np.maximum(a["mos"], np.roll(a["mos"], 1))
    assert ((b["mos"] >= lo - 1e-4) & (b["mos"] <= hi + 1e-4)).all()
    np.testing.assert_array_equal(b["mask"], a["mask"] | np.roll(a["mask"], 1, axis=0))
  assert any(not np.array_equal(a["mos"], b["mos"]) for a, b in zip(plain, mixed))


@pytest.mark.slow  # three RandAugment pipelines to trace; the quick tier's resume test has one
def test_pretraining_stream_is_deterministic_and_seeded(builder):
  first = _batches(_train(builder, augment=PRETRAIN, seed=3), 2)
  again = _batches(_train(builder, augment=PRETRAIN, seed=3), 2)
  for a, b in zip(first, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  other = _batches(_train(builder, augment=PRETRAIN, seed=4), 2)
  assert any(not np.array_equal(a["patches"], b["patches"]) for a, b in zip(first, other))


def test_resume_with_randaugment_and_mixup_is_exact(builder):
  start_step = 3  # inside epoch 1 (batches of 4 over 11 examples)
  full = _batches(_train(builder, augment=PRETRAIN), start_step + 2)
  resumed = _batches(_train(builder, augment=PRETRAIN, start_step=start_step), 2)
  for a, b in zip(full[start_step:], resumed):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_sharded_stream_mixes_within_each_shard(builder):
  kwargs = dict(pp_config=PP, augment=augmentation.Augment(flip_prob=0.0, mixup_alpha=0.2))
  (both,) = _batches(ip.sharded_train_dataset(builder, "train", shards=[0, 1], num_shards=2,
                                              batch_size_per_shard=2, **kwargs), 1)
  for shard in range(2):
    (alone,) = _batches(ip.train_dataset(builder, "train", batch_size=2,
                                         host=ip.Host(shard, 2), **kwargs), 1)
    for key in alone:
      np.testing.assert_array_equal(both[key][2 * shard:2 * shard + 2], alone[key])


def _autograph_modules() -> set[str]:
  """The modules autograph has written so far: one per Python function it rewrote."""
  return {name for name in sys.modules if name.startswith("__autograph_generated_file")}


def test_the_pipelines_are_traced_as_written_without_autograph(builder):
  """Autograph's rewriting would add start-up time to every run, and on Python 3.13 thousands of
  gast DeprecationWarnings."""
  before = _autograph_modules()
  _batches(ip.sharded_train_dataset(builder, "train", shards=[0, 1], num_shards=2,
                                    batch_size_per_shard=2, pp_config=PP, augment=PRETRAIN), 1)
  sizes = ip.image_sizes(builder, "test")
  plan = ip.eval_plan(sizes, PP, batch_size=2)
  list(ip.eval_dataset(builder, "test", batch_size=2, pp_config=PP, plan=plan))
  list(ip.feature(ip.read_split(builder, "test", ip.Host()), "mos"))
  assert _autograph_modules() == before


def test_the_pipelines_run_in_order_without_the_autotuning_model(builder):
  """Deleting an iterator of an autotuned pipeline waits for the model's thread, which sleeps up to
  a minute between optimisations: every training and evaluation would end with that wait."""
  plan = ip.eval_plan(ip.image_sizes(builder, "test"), PP, batch_size=2)
  pipelines = {
      "train": ip.train_dataset(builder, "train", batch_size=2, pp_config=PP),
      "sharded": ip.sharded_train_dataset(builder, "train", shards=[0, 1], num_shards=2,
                                          batch_size_per_shard=2, pp_config=PP),
      "eval": ip.eval_dataset(builder, "test", batch_size=2, pp_config=PP, plan=plan),
      "feature": ip.feature(ip.read_split(builder, "test", ip.Host()), "mos")}
  for name, data in pipelines.items():
    options = data.options()
    assert (options.autotune.enabled, options.deterministic) == (False, True), name
    assert options.autotune.initial_parallelism >= 1, name


def test_pipelines_of_one_configuration_trace_its_preprocessing_once(builder):
  """Tracing the decode, augmentation and patch ops costs a second or more per pipeline: the
  training streams and every evaluation share one traced function per configuration."""
  pp = dataclasses.replace(PP, grid_size=PP.grid_size + 1)  # a configuration no other test uses
  plan = ip.eval_plan(ip.image_sizes(builder, "test"), pp, batch_size=2)
  for _ in range(2):
    _batches(ip.train_dataset(builder, "train", batch_size=2, pp_config=pp), 1)
    list(ip.eval_dataset(builder, "test", batch_size=2, pp_config=pp, plan=plan))
  assert ip.example_tokens(pp, augmentation.Augment()).experimental_get_tracing_count() == 1
  assert ip.example_tokens(pp).experimental_get_tracing_count() == 1


class LabelledTestImages(tfds.core.GeneratorBasedBuilder):
  """Six small images in three classes (ImageNet's features: an image and a class label)."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(), dtype=tf.string),
        "label": tfds.features.ClassLabel(num_classes=3)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i, example in enumerate(_examples()[:6]):
      yield i, {"image": example["image"], "label": i % 3}


def test_mixup_turns_class_labels_into_mixed_one_hot_dist(tmp_path):
  labelled = LabelledTestImages(data_dir=str(tmp_path))
  labelled.download_and_prepare()
  augment = augmentation.Augment(flip_prob=0.0, mixup_alpha=0.2)
  train = lambda **kw: ip.train_dataset(labelled, "train", batch_size=3, pp_config=PP,
                                        augment=augment, **kw)
  for batch in _batches(train(num_classes=3), 2):
    assert "label" not in batch and batch["dist"].shape == (3, 3)
    np.testing.assert_allclose(batch["dist"].sum(axis=1), 1.0, atol=1e-6)
    assert ((batch["dist"] > 0).sum(axis=1) <= 2).all()  # at most two classes in each mix
  with pytest.raises(ValueError, match="pass num_classes"):
    train()
  with pytest.raises(ValueError, match="3 classes"):
    train(num_classes=4)
