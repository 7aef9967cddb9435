"""Tests for mst.checkpoint: official .npz export/import, architecture inference, error reports."""

import dataclasses
import os

import numpy as np
import pytest

from mst.checkpoints import architecture
from mst.checkpoints import loader
from mst.checkpoints import npz
from mst.data import multiscale
from mst.models import musiq
from support.checkpoints import jitted_forward
from support.checkpoints import random_params
from support.checkpoints import small_model_config
from support.checkpoints import RunsOnUnpickle

# Patch 16, width 64 and grid 5: the shapes and messages the tests below expect are this model's.
SMALL = small_model_config(patch_size=16, hidden_size=64, mlp_dim=128, grid_size=5)
PREFIX = npz.OFFICIAL_PREFIX


def _batch(cfg: musiq.ModelConfig, tokens: int = 6) -> dict:
  rng = np.random.default_rng(0)
  mask = np.ones((2, tokens), bool)
  mask[1, -2:] = False
  return {
      "patches": rng.uniform(-1, 1, (2, tokens, cfg.patch_size ** 2 * 3)).astype(np.float32),
      "spatial_idx": rng.integers(0, cfg.grid_size ** 2, (2, tokens)).astype(np.int32),
      "scale_idx": rng.integers(0, cfg.num_scales, (2, tokens)).astype(np.int32),
      "mask": mask,
  }


def _outputs(cfg: musiq.ModelConfig, params: dict) -> np.ndarray:
  return np.asarray(jitted_forward(cfg)(params, _batch(cfg)))


def _assert_same_params(got: dict, want: dict) -> None:
  got, want = npz.params_to_flat(got), npz.params_to_flat(want)
  assert sorted(got) == sorted(want)
  for name in want:
    assert got[name].dtype == np.float32, name
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def _save(path, entries: dict) -> None:
  with open(path, "wb") as f:
    np.savez(f, **entries)


def _official_entries(params: dict) -> dict:
  """The flat official layout, as `export_official_npz` writes it, for tests to corrupt."""
  return {PREFIX + name: value for name, value in npz.params_to_flat(params).items()}


ROUND_TRIP_CONFIGS = {
    "multi_scale_score": SMALL,
    "single_scale": dataclasses.replace(SMALL, num_scales=1),
    "distribution_head": dataclasses.replace(SMALL, num_classes=10, head="distribution"),
    "classification_pre_logits": dataclasses.replace(
        SMALL, num_classes=7, head="classification", representation_size=32),
    "linear_encoder": dataclasses.replace(SMALL, patch_encoder="linear"),
    "conv_encoder": dataclasses.replace(SMALL, patch_encoder="conv"),
    "fixed_positions": dataclasses.replace(SMALL, spatial_embedding="fixed", max_positions=16),
    "no_scale_embedding": dataclasses.replace(SMALL, use_scale_embedding=False, num_scales=2),
}
# What a file without the corresponding table cannot tell (G and K+1 matter to preprocessing only).
ROUND_TRIP_OVERRIDES = {"fixed_positions": {"grid_size": 5},
                        "no_scale_embedding": {"num_scales": 2}}
# Each variant compiles its own model: the quick tier round-trips the cheapest (no ResNet to run),
# the full suite every one.
ROUND_TRIPS = [name if name == "linear_encoder" else pytest.param(name, marks=pytest.mark.slow)
               for name in ROUND_TRIP_CONFIGS]


@pytest.mark.parametrize("name", ROUND_TRIPS)
def test_export_import_round_trip(tmp_path, name):
  cfg = ROUND_TRIP_CONFIGS[name]
  params = random_params(cfg)
  path = tmp_path / "model.npz"
  npz.export_official_npz(params, path)
  loaded, loaded_cfg = npz.load_official_npz(path, **ROUND_TRIP_OVERRIDES.get(name, {}))
  assert loaded_cfg == cfg
  _assert_same_params(loaded, params)
  want = _outputs(cfg, params)
  assert not np.allclose(want[0], want[1])  # distinct inputs give distinct outputs
  np.testing.assert_array_equal(_outputs(cfg, loaded), want)


def test_export_writes_official_layout(tmp_path):
  params = random_params(SMALL)
  path = tmp_path / "exported"  # no .npz suffix: numpy must not add one
  npz.export_official_npz(params, path)
  assert os.listdir(tmp_path) == ["exported"]
  with np.load(path) as archive:
    stored = {name: archive[name] for name in archive.files}
  flat = npz.params_to_flat(params)
  assert sorted(stored) == sorted(PREFIX + name for name in flat)
  assert stored[PREFIX + "gn_root/scale"].shape == (1, 1, 1, 64)
  assert stored[PREFIX + "block1/unit1/gn_proj/bias"].shape == (1, 1, 1, 256)
  np.testing.assert_array_equal(stored[PREFIX + "block1/unit1/gn3/scale"][0, 0, 0],
                                flat["block1/unit1/gn3/scale"])
  assert stored[PREFIX + "embedding/kernel"].shape == (4 * 4 * 256, 64)


def test_flat_and_nested_params_convert_both_ways():
  params = random_params(SMALL)
  flat = npz.params_to_flat(params)
  assert flat["Transformer/encoderblock_1/SelfAttention_0/query/kernel"].shape == (64, 4, 16)
  assert all(isinstance(value, np.ndarray) for value in flat.values())
  _assert_same_params(npz.flat_to_params(flat), params)


@pytest.mark.parametrize("layout", ["vector_groupnorm", "no_prefix", "pickled_empty_pre_logits",
                                    "zero_size_pre_logits", "optimizer_state"])
def test_accepted_layouts(tmp_path, layout):
  params = random_params(SMALL)
  flat = npz.params_to_flat(params)
  entries = {
      "vector_groupnorm": _official_entries(params),  # GroupNorm stays (C,)
      "no_prefix": flat,
      "pickled_empty_pre_logits": _official_entries(params) | {
          PREFIX + "pre_logits": np.array({}, dtype=object)},
      "zero_size_pre_logits": _official_entries(params) | {
          PREFIX + "pre_logits/kernel": np.zeros((64, 0), np.float32),
          PREFIX + "pre_logits/bias": np.zeros((0,), np.float32)},
      "optimizer_state": _official_entries(params) | {
          "opt/state/step": np.array(7), "opt/state/param_states/head/kernel": np.ones((64, 1))},
  }[layout]
  path = tmp_path / "model.npz"
  _save(path, entries)
  loaded, cfg = npz.load_official_npz(path)
  assert cfg == SMALL
  _assert_same_params(loaded, params)


def test_table_free_spatial_embeddings_need_overrides(tmp_path):
  cfg = dataclasses.replace(SMALL, spatial_embedding="none")
  path = tmp_path / "model.npz"
  npz.export_official_npz(random_params(cfg), path)
  _, guessed = npz.load_official_npz(path)
  assert guessed.spatial_embedding == "sinusoid"  # the file cannot tell
  _, loaded_cfg = npz.load_official_npz(path, spatial_embedding="none", grid_size=5)
  assert loaded_cfg == cfg
  with pytest.raises(TypeError, match="grid"):
    npz.load_official_npz(path, grid=5)


def _malformed_file(tmp_path, *, remove=False, extra=False, reshape=False) -> str:
  entries = _official_entries(random_params(SMALL))
  if remove:
    del entries[PREFIX + "Transformer/encoderblock_1/MlpBlock_0/Dense_1/bias"]
  if extra:
    entries[PREFIX + "Transformer/encoderblock_0/extra/kernel"] = np.ones((3,), np.float32)
  if reshape:
    entries[PREFIX + "Transformer/encoderblock_1/LayerNorm_0/scale"] = np.ones((63,), np.float32)
  path = str(tmp_path / "bad_ckpt.npz")
  _save(path, entries)
  return path


MISSING = "Transformer/encoderblock_1/MlpBlock_0/Dense_1/bias"
EXTRA = "Transformer/encoderblock_0/extra/kernel"
MISMATCH = "Transformer/encoderblock_1/LayerNorm_0/scale: file (63,), model (64,)"


@pytest.mark.parametrize("problem", ["remove", "extra", "reshape"])
def test_each_malformation_is_reported(tmp_path, problem):
  path = _malformed_file(tmp_path, **{problem: True})
  with pytest.raises(npz.CheckpointError) as error:
    npz.load_official_npz(path)
  message = str(error.value)
  assert message.startswith(path)
  expected = {"remove": MISSING, "extra": EXTRA, "reshape": MISMATCH}[problem]
  assert expected in message
  assert [line for line in (MISSING, EXTRA, MISMATCH) if line in message] == [expected]


def test_all_malformations_reported_in_one_error(tmp_path):
  path = _malformed_file(tmp_path, remove=True, extra=True, reshape=True)
  with pytest.raises(npz.CheckpointError) as error:
    npz.load_official_npz(path)
  message = str(error.value)
  assert path in message
  for expected in ("missing keys (1)", MISSING, "unexpected keys (1)", EXTRA,
                   "shape/dtype mismatches (1)", MISMATCH):
    assert expected in message
  assert isinstance(error.value, ValueError)


def test_integer_parameter_is_a_mismatch(tmp_path):
  entries = _official_entries(random_params(SMALL))
  entries[PREFIX + "head/bias"] = np.zeros((1,), np.int32)
  path = tmp_path / "int.npz"
  _save(path, entries)
  with pytest.raises(npz.CheckpointError, match="head/bias: file dtype int32"):
    npz.load_official_npz(path)


@pytest.mark.parametrize("removed, reason", [
    ("Transformer/encoderblock_0/SelfAttention_0/query/kernel", "SelfAttention_0/query/kernel"),
    ("head/kernel", None),  # the bias still tells the class count; the kernel is then missing
])
def test_keys_needed_for_inference(tmp_path, removed, reason):
  entries = _official_entries(random_params(SMALL))
  del entries[PREFIX + removed]
  path = tmp_path / "partial.npz"
  _save(path, entries)
  with pytest.raises(npz.CheckpointError) as error:
    npz.load_official_npz(path)
  message = str(error.value)
  assert str(path) in message and removed in message
  if reason:
    assert "cannot infer the architecture" in message and reason in message


def test_embedding_rows_that_fit_no_patch_size(tmp_path):
  entries = _official_entries(random_params(SMALL))
  entries[PREFIX + "embedding/kernel"] = np.ones((1000, 64), np.float32)
  path = tmp_path / "rows.npz"
  _save(path, entries)
  with pytest.raises(npz.CheckpointError, match="1000 rows"):
    npz.load_official_npz(path)


def test_text_file_renamed_npz(tmp_path):
  path = tmp_path / "notes.npz"
  path.write_text("these are not weights\n")
  with pytest.raises(npz.CheckpointError, match="not a numpy .npz archive") as error:
    npz.load_official_npz(path)
  assert str(path) in str(error.value)


def test_missing_file(tmp_path):
  path = tmp_path / "absent.npz"
  with pytest.raises(npz.CheckpointError, match="no such checkpoint file") as error:
    npz.load_official_npz(path)
  assert str(path) in str(error.value)


def test_object_array_is_refused_unread(tmp_path):
  marker = str(tmp_path / "unpickled")
  entries = _official_entries(random_params(SMALL))
  entries[PREFIX + "head/kernel"] = np.array([RunsOnUnpickle(marker)], dtype=object)
  path = tmp_path / "pickled.npz"
  _save(path, entries)
  with pytest.raises(npz.CheckpointError) as error:
    npz.load_official_npz(path)
  message = str(error.value)
  assert str(path) in message
  assert "unreadable entries (1)" in message and "head/kernel" in message
  assert "missing keys" not in message  # reported once, as unreadable
  assert not os.path.exists(marker)


def test_paper_model_inferred_from_exported_file(tmp_path):
  rng = np.random.default_rng(0)
  shapes = architecture.expected_shapes(musiq.ModelConfig())
  flat = {name: rng.standard_normal(s.shape, np.float32) for name, s in shapes.items()}
  path = tmp_path / "paper.npz"
  npz.export_official_npz(npz.flat_to_params(flat), path)
  params, cfg = npz.load_official_npz(path)
  assert cfg == musiq.ModelConfig()
  assert abs(musiq.count_params(params) - 27.1e6) < 0.05e6
  assert params["embedding"]["kernel"].shape == (16384, 384)


def test_preprocess_config_for_official_models():
  multi = loader.preprocess_config_for(musiq.ModelConfig())
  assert multi == multiscale.MultiScaleConfig(
      patch_size=32, grid_size=10, longer_side_lengths=(224, 384), max_seq_len_from_original_res=-1)
  single = loader.preprocess_config_for(dataclasses.replace(SMALL, num_scales=1))
  assert (single.patch_size, single.grid_size, single.longer_side_lengths) == (16, 5, ())
  assert single.max_seq_len_from_original_res == -1


def test_preprocess_config_for_other_scale_counts():
  four = dataclasses.replace(SMALL, num_scales=4)
  with pytest.raises(ValueError, match="pass longer_side_lengths"):
    loader.preprocess_config_for(four)
  with pytest.raises(ValueError, match="needs 3 longer_side_lengths"):
    loader.preprocess_config_for(four, longer_side_lengths=(224, 384))
  cfg = loader.preprocess_config_for(four, longer_side_lengths=(384, 160, 224))
  assert cfg.longer_side_lengths == (160, 224, 384)
