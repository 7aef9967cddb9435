"""The Flax MUSIQ model: size, masking, permutation invariance and the ablation switches."""

import dataclasses
import functools
import math

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mst.checkpoints import architecture
from mst.models import embeddings
from mst.models import encoder
from mst.models import musiq
from mst.models import patch_encoders
from support.checkpoints import jitted_forward
from support.checkpoints import random_params

# The linear patch encoder: most tests here are about the Transformer and the embeddings, and it
# compiles in a fraction of the ResNet's time; the tests of the encoders name theirs.
SMALL = musiq.ModelConfig(patch_size=16, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64,
                          grid_size=4, num_scales=3, patch_encoder="linear")


def _batch(config, seq_len=12, num_real=9, batch_size=2, seed=0):
  rng = np.random.default_rng(seed)
  mask = np.zeros((batch_size, seq_len), bool)
  mask[:, :num_real] = True
  return {
      "patches": jnp.asarray(rng.uniform(-1, 1, (batch_size, seq_len, config.patch_size ** 2 * 3)),
                             jnp.float32),
      "spatial_idx": jnp.asarray(rng.integers(0, config.grid_size ** 2, (batch_size, seq_len)),
                                 jnp.int32),
      "scale_idx": jnp.asarray(rng.integers(0, config.num_scales, (batch_size, seq_len)),
                               jnp.int32),
      "mask": jnp.asarray(mask),
  }


def _params(config, seed=0):
  """Noise in every parameter, nothing compiled (the real init's zero head would hide all)."""
  return random_params(config, seed, scale=0.3)


def _apply(config, params, batch, train=False, dropout=None):
  """The model's output, as a numpy array."""
  return np.asarray(jitted_forward(config, train)(params, batch, dropout))


def test_paper_model_has_27_1_million_parameters():
  params = jax.eval_shape(lambda: musiq.init_params(musiq.ModelConfig(), jax.random.key(0)))
  assert abs(musiq.count_params(params) / 1e6 - 27.1) < 0.05


def test_head_is_zero_initialised():
  params = musiq.init_params(SMALL, jax.random.key(0))
  assert not np.asarray(params["head"]["kernel"]).any()
  assert not np.asarray(_apply(SMALL, params, _batch(SMALL))).any()


# conv's patches are normalised as resnet's are: the quick tier runs the other two.
@pytest.mark.parametrize("kind", ["linear", pytest.param("conv", marks=pytest.mark.slow), "resnet"])
def test_padded_tokens_do_not_change_the_output(kind):
  config = dataclasses.replace(SMALL, patch_encoder=kind)
  params = _params(config)
  short = _batch(config, seq_len=9, num_real=9)
  longer = _batch(config, seq_len=20, num_real=9, seed=1)  # padding with arbitrary values
  for key in short:
    longer[key] = longer[key].at[:, :9].set(short[key])
  np.testing.assert_allclose(_apply(config, params, short), _apply(config, params, longer),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spatial", ["hse", "sinusoid", "none"])
def test_permuting_real_tokens_with_their_indices_does_not_change_the_output(spatial):
  config = dataclasses.replace(SMALL, spatial_embedding=spatial)
  params = _params(config)
  batch = _batch(config)
  order = np.random.default_rng(3).permutation(9)
  order = np.concatenate([order, np.arange(9, 12)])
  permuted = {key: value[:, order] for key, value in batch.items()}
  np.testing.assert_allclose(_apply(config, params, batch), _apply(config, params, permuted),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_fixed_position_embedding_depends_on_the_sequence_position():
  config = dataclasses.replace(SMALL, spatial_embedding="fixed", max_positions=16)
  params = _params(config)
  batch = _batch(config)
  permuted = {key: value[:, ::-1] for key, value in batch.items()}
  permuted["mask"] = batch["mask"]
  assert not np.allclose(_apply(config, params, batch), _apply(config, params, permuted))
  assert params["Transformer"]["posembed_fixed"]["pos_embedding"].shape == (1, 16, 32)
  with pytest.raises(ValueError, match="max_positions"):
    _apply(config, params, _batch(config, seq_len=17))


def _changes_output(config, edit):
  params = _params(config)
  batch = _batch(config)
  return not np.allclose(_apply(config, params, batch), _apply(config, params, edit(batch)),
                         atol=1e-6)


def _with(key, values):
  return lambda batch: {**batch, key: jnp.asarray(values(batch[key]))}


@pytest.mark.parametrize("spatial, sensitive", [("hse", True), ("sinusoid", True), ("none", False)])
def test_spatial_embedding_switch(spatial, sensitive):
  config = dataclasses.replace(SMALL, spatial_embedding=spatial)
  moved = _with("spatial_idx", lambda idx: (idx + 5) % config.grid_size ** 2)
  assert _changes_output(config, moved) == sensitive


@pytest.mark.parametrize("use_scale_embedding", [True, False])
def test_scale_embedding_switch(use_scale_embedding):
  config = dataclasses.replace(SMALL, use_scale_embedding=use_scale_embedding)
  rescaled = _with("scale_idx", lambda idx: (idx + 1) % config.num_scales)
  assert _changes_output(config, rescaled) == use_scale_embedding
  assert ("scaleembed_input" in _params(config)["Transformer"]) == use_scale_embedding


def test_patch_encoders_give_different_outputs_and_embedding_sizes():
  batch = _batch(SMALL)
  outputs, rows = {}, {}
  for kind in ("linear", "conv", "resnet"):
    config = dataclasses.replace(SMALL, patch_encoder=kind)
    params = _params(config)
    outputs[kind] = _apply(config, params, batch)
    rows[kind] = params["embedding"]["kernel"].shape[0]
  assert rows == {"linear": 16 * 16 * 3, "conv": 4 * 4 * 64, "resnet": 4 * 4 * 256}
  assert not np.allclose(outputs["linear"], outputs["conv"])
  assert not np.allclose(outputs["conv"], outputs["resnet"])


# The top-level parameters every model has, whatever its patch encoder.
MODEL_PARAMS = {"embedding", "Transformer", "head"}


@pytest.mark.parametrize("config", [musiq.ModelConfig(), dataclasses.replace(SMALL, num_layers=3),
                                    dataclasses.replace(SMALL, num_layers=1)])
def test_expected_shapes_equal_those_of_the_whole_model(config):
  # expected_shapes traces one encoder layer and repeats it: it must equal tracing them all.
  params = jax.eval_shape(lambda key: musiq.init_params(config, key), jax.random.key(0))
  whole = {"/".join(path): leaf for path, leaf in
           flax.traverse_util.flatten_dict(params).items()}
  assert architecture.expected_shapes(config) == whole


@pytest.mark.parametrize("patch_size", [16, 32])
@pytest.mark.parametrize("name", sorted(patch_encoders.PATCH_ENCODERS))
def test_patch_encoder_entry_describes_the_model_it_builds(name, patch_size):
  # feature_size and param_names are what checkpoint inference relies on: they must be the truth.
  entry = patch_encoders.PATCH_ENCODERS[name]
  config = dataclasses.replace(SMALL, patch_encoder=name, patch_size=patch_size)
  shapes = architecture.expected_shapes(config)
  assert shapes["embedding/kernel"].shape[0] == entry.feature_size(patch_size)
  top_level = {key.split("/")[0] for key in shapes}
  assert top_level - MODEL_PARAMS == set(entry.param_names)


def test_patch_encoder_fingerprints_are_distinct():
  names = [frozenset(entry.param_names) for entry in patch_encoders.PATCH_ENCODERS.values()]
  assert len(set(names)) == len(names)


class _ToyScale(nn.Module):
  """A learnable per-channel scale: gives the toy encoder a parameter to be recognised by."""

  @nn.compact
  def __call__(self, x):
    return x * self.param("scale", nn.initializers.ones, (x.shape[-1],))


def _toy_features(patches, patch_size, dtype):
  """2 x 2 average pooling ('SAME') of each patch, scaled per channel."""
  x = patches.reshape(-1, patch_size, patch_size, 3).astype(dtype)
  x = nn.avg_pool(_ToyScale(name="toy_scale")(x), (2, 2), strides=(2, 2), padding="SAME")
  return x.reshape(patches.shape[:2] + (-1,))


TOY = patch_encoders.PatchEncoder(features=_toy_features,
                                  feature_size=lambda p: math.ceil(p / 2) ** 2 * 3,
                                  param_names=("toy_scale",))


def test_a_new_patch_encoder_is_one_registry_entry(monkeypatch):
  with pytest.raises(ValueError, match="patch_encoder"):
    dataclasses.replace(SMALL, patch_encoder="toy")
  monkeypatch.setattr(patch_encoders, "PATCH_ENCODERS",
                      {**patch_encoders.PATCH_ENCODERS, "toy": TOY})
  config = dataclasses.replace(SMALL, patch_encoder="toy")  # ModelConfig accepts it
  params = _params(config)
  assert params["embedding"]["kernel"].shape[0] == 8 * 8 * 3
  assert _apply(config, params, _batch(config)).shape == (2, 1)
  # Checkpoint inference recognises its parameters and solves its feature_size for P.
  flat = architecture.expected_shapes(config)
  assert architecture.infer_model_config(flat) == config
  for name in ("linear", "conv", "resnet"):
    flat = architecture.expected_shapes(dataclasses.replace(SMALL, patch_encoder=name))
    assert architecture.infer_model_config(flat).patch_encoder == name


def test_patch_encoders_with_one_fingerprint_are_ambiguous(monkeypatch):
  conv = patch_encoders.PATCH_ENCODERS["conv"]
  monkeypatch.setattr(patch_encoders, "PATCH_ENCODERS",
                      {**patch_encoders.PATCH_ENCODERS, "conv_copy": conv})
  flat = architecture.expected_shapes(dataclasses.replace(SMALL, patch_encoder="conv"))
  with pytest.raises(ValueError, match=r"\['conv', 'conv_copy'\] equally"):
    architecture.infer_model_config(flat)


# What the Transformer holds besides a spatial table.
TRANSFORMER_PARAMS = {"scaleembed_input", "cls", "encoder_norm"}


@pytest.mark.parametrize("name", sorted(embeddings.SPATIAL_EMBEDDINGS))
def test_spatial_embedding_entry_describes_the_model_it_builds(name):
  entry = embeddings.SPATIAL_EMBEDDINGS[name]
  config = dataclasses.replace(SMALL, spatial_embedding=name, max_positions=16)
  shapes = architecture.expected_shapes(config)
  tables = {key.removeprefix("Transformer/") for key in shapes
            if key.startswith("Transformer/") and not key.startswith("Transformer/encoderblock_")
            and key.split("/")[1] not in TRANSFORMER_PARAMS}
  assert tables == ({entry.table} if entry.table else set())
  if entry.table:
    fields = entry.fields_from_rows(shapes[f"Transformer/{entry.table}"].shape[1])
    assert fields and all(getattr(config, key) == value for key, value in fields.items())
  inferred = architecture.infer_model_config(shapes).spatial_embedding
  assert inferred == (name if entry.table else architecture.TABLE_FREE_SPATIAL_EMBEDDING)


class _RowEmbedding(nn.Module):
  """A learnable vector per grid row (G rows): a toy spatial embedding with its own table."""
  grid_size: int

  @nn.compact
  def __call__(self, x, spatial_idx):
    table = self.param("pos_embedding", nn.initializers.normal(0.02),
                       (1, self.grid_size, x.shape[-1]))
    return x + jnp.take(table[0], spatial_idx // self.grid_size, axis=0)


TOY_SPATIAL = embeddings.SpatialEmbedding(
    add=lambda x, idx, config: _RowEmbedding(config.grid_size, name="posembed_rows")(x, idx),
    table="posembed_rows/pos_embedding",
    fields_from_rows=lambda rows: {"grid_size": rows})


def test_a_new_spatial_embedding_is_one_registry_entry(monkeypatch):
  with pytest.raises(ValueError, match="spatial_embedding"):
    dataclasses.replace(SMALL, spatial_embedding="rows")
  monkeypatch.setattr(embeddings, "SPATIAL_EMBEDDINGS",
                      {**embeddings.SPATIAL_EMBEDDINGS, "rows": TOY_SPATIAL})
  config = dataclasses.replace(SMALL, spatial_embedding="rows")
  params = _params(config)
  assert params["Transformer"]["posembed_rows"]["pos_embedding"].shape == (1, 4, 32)
  same_row = _with("spatial_idx", lambda idx: idx - idx % 4)  # column 0 of the same grid row
  assert not _changes_output(config, same_row)
  assert _changes_output(config, _with("spatial_idx", lambda idx: (idx + 4) % 16))
  assert architecture.infer_model_config(architecture.expected_shapes(config)) == config


def test_distribution_head_score_is_the_expected_bin():
  logits = jnp.log(jnp.array([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]]) + 1e-30)
  np.testing.assert_allclose(musiq.scores(logits, "distribution"), [2.0, 2.0], atol=1e-5)
  np.testing.assert_allclose(musiq.scores(jnp.array([[3.5]]), "score"), [3.5])
  with pytest.raises(ValueError, match="classes"):
    musiq.scores(logits, "classification")


@pytest.mark.slow
def test_pre_logits_and_classification_head():
  config = dataclasses.replace(SMALL, representation_size=24, num_classes=7, head="classification")
  params = _params(config)
  assert params["pre_logits"]["kernel"].shape == (32, 24)
  assert _apply(config, params, _batch(config)).shape == (2, 7)


@pytest.mark.slow
def test_bfloat16_compute_is_close_to_float32():
  config = dataclasses.replace(SMALL, patch_encoder="resnet")  # its GroupNorms in bfloat16 too
  params = _params(config)
  batch = _batch(config)
  reference = _apply(config, params, batch)
  low = _apply(dataclasses.replace(config, dtype="bfloat16"), params, batch)
  assert low.dtype == np.float32
  np.testing.assert_allclose(low, reference, atol=0.1 * np.abs(reference).max())
  assert not np.array_equal(low, reference)


@pytest.mark.slow
def test_dropout_and_stochastic_depth_only_in_training():
  config = dataclasses.replace(SMALL, dropout_rate=0.3, attention_dropout_rate=0.3,
                               stochastic_depth=0.5)
  params = _params(config)
  batch = _batch(config)
  plain = _apply(SMALL, params, batch)
  np.testing.assert_allclose(_apply(config, params, batch), plain, rtol=1e-6)
  trained = lambda seed: _apply(config, params, batch, train=True, dropout=jax.random.key(seed))
  first = trained(0)
  assert not np.allclose(first, plain)
  np.testing.assert_array_equal(first, trained(0))
  assert not np.allclose(first, trained(1))


def test_explicit_attention_path_matches_the_fused_one():
  # A vanishing attention dropout rate takes the explicit softmax path used in training.
  config = dataclasses.replace(SMALL, attention_dropout_rate=1e-9)
  params = _params(config)
  batch = _batch(config)
  trained = _apply(config, params, batch, train=True, dropout=jax.random.key(0))
  np.testing.assert_allclose(trained, _apply(config, params, batch), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change, message", [
    (dict(patch_encoder="vit"), "patch_encoder"),
    (dict(spatial_embedding="learned"), "spatial_embedding"),
    (dict(num_heads=5), "divisible"),
    (dict(head="score", num_classes=10), "1 output"),
    (dict(dropout_rate=1.0), "dropout_rate"),
    (dict(dtype="float16"), "dtype"),
    (dict(grid_size=0), "grid_size"),
])
def test_bad_config_values_are_named(change, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(SMALL, **change)


def test_group_norm_equals_flax_group_norm():
  x = jax.random.normal(jax.random.key(0), (3, 8, 8, 64)) * 3 + 1
  ours = patch_encoders.GroupNorm(epsilon=1e-4)
  params = ours.init(jax.random.key(1), x)
  params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(2), p.shape), params)
  expected = nn.GroupNorm(num_groups=32, epsilon=1e-4).apply(params, x)
  np.testing.assert_allclose(ours.apply(params, x), expected, atol=1e-5)


@pytest.mark.parametrize("length, chunk", [(17, 256), (300, 64), (257, 128)])
def test_chunked_attention_equals_dot_product_attention(length, chunk):
  shape = (2, length, 4, 8)
  q, k, v = (jax.random.normal(jax.random.key(i), shape) for i in range(3))
  mask = jnp.arange(length)[None, :] < jnp.array([[length], [length // 3]])
  expected = jax.jit(jax.nn.dot_product_attention)(q, k, v, mask=mask[:, None, None, :])
  chunked = jax.jit(functools.partial(encoder.chunked_attention, chunk=chunk))
  np.testing.assert_allclose(chunked(q, k, v, mask), expected, atol=1e-5)


@pytest.mark.slow
def test_chunked_patch_embedding_equals_the_whole_batch_on_real_tokens():
  embed = musiq.PatchEmbedding("resnet", 16, 32, parent=None)
  batch = _batch(SMALL, seq_len=10, num_real=6, batch_size=3)
  params = jax.jit(embed.init)(jax.random.key(0), batch["patches"][:1])["params"]
  embedded = jax.jit(functools.partial(musiq.embed_patches, embed), static_argnames="chunk")
  whole = embedded(params, batch["patches"], batch["mask"], chunk=0)
  chunked = embedded(params, batch["patches"], batch["mask"], chunk=4)
  real = np.asarray(batch["mask"])
  np.testing.assert_allclose(chunked[real], whole[real], atol=1e-5)
  # 18 real patches fill 4 chunks and half of a 5th; the 3 chunks of padding only are skipped.
  computed_padding = np.asarray(chunked)[~real].any(axis=-1).sum()
  assert computed_padding == 2


@pytest.mark.slow
def test_cpu_chunking_changes_neither_outputs_nor_gradients():
  # Inference only chunks, but gradients through it (e.g. saliency maps) must be right too.
  chunked = dataclasses.replace(SMALL, patch_encoder="conv")  # a cheaper compile than resnet
  plain = dataclasses.replace(chunked, chunked_on_cpu=False)
  batch = _batch(chunked, seq_len=140, num_real=100, batch_size=2)  # 280 patches: 2 chunks
  params = _params(chunked)

  def loss(config, p):
    return jnp.sum(musiq.Musiq(config).apply({"params": p}, batch) ** 2)

  np.testing.assert_allclose(_apply(chunked, params, batch), _apply(plain, params, batch),
                             rtol=1e-5, atol=1e-5)
  grads = jax.jit(jax.grad(lambda p: loss(chunked, p)))(params)
  expected = jax.jit(jax.grad(lambda p: loss(plain, p)))(params)
  # Summation orders differ: compare relative to each gradient's scale, or the largest gradient's
  # for the ones that are float noise around 0 (e.g. behind the zero-initialised gn3 scale).
  largest = max(float(np.abs(g).max()) for g in jax.tree.leaves(expected))
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
    scale = max(float(np.abs(want).max()), 1e-3 * largest)
    np.testing.assert_allclose(got, want, atol=1e-4 * scale)


@pytest.mark.slow
def test_cls_only_last_block_gives_the_full_encoders_cls_output_and_gradients():
  config = SMALL  # 2 layers: the first runs on every token, the last on CLS only
  batch = _batch(config, seq_len=12, num_real=7)
  tokens = jax.random.normal(jax.random.key(0), (2, 12, config.hidden_size))
  module = encoder.Encoder(config)
  args = (batch["spatial_idx"], batch["scale_idx"], batch["mask"])
  params = jax.jit(functools.partial(module.init, deterministic=True))(jax.random.key(1), tokens,
                                                                      *args)
  rng = np.random.default_rng(2)
  params = jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(p.shape, np.float32), params)

  @functools.partial(jax.jit, static_argnums=1)
  def cls_output(p, cls_only):
    out = module.apply(p, tokens, *args, deterministic=True, cls_only=cls_only)
    return out[:, 0]

  full, cls = cls_output(params, False), cls_output(params, True)
  assert jax.eval_shape(functools.partial(module.apply, deterministic=True, cls_only=True),
                        params, tokens, *args).shape == (2, 1, 32)
  np.testing.assert_allclose(cls, full, rtol=1e-5, atol=1e-6)
  loss = lambda p, cls_only: jnp.sum(jnp.sin(cls_output(p, cls_only)))
  expected, grads = (jax.jit(jax.grad(loss), static_argnums=1)(params, c) for c in (False, True))
  for name, got in flax.traverse_util.flatten_dict(grads["params"], sep="/").items():
    want = flax.traverse_util.flatten_dict(expected["params"], sep="/")[name]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=name)


def test_model_scores_equal_with_and_without_recording_attention():
  # Recording every layer's attention runs the last block on all tokens; scoring, on CLS only.
  params, batch = _params(SMALL), _batch(SMALL)
  recorded, _ = jitted_forward(SMALL, mutable=("intermediates",))(params, batch)
  np.testing.assert_allclose(_apply(SMALL, params, batch), recorded, rtol=1e-5, atol=1e-6)
