"""The traced-program cache: a second start scores without tracing the model, and never reuses a
program (or parameter shapes) for another computation."""

import json
import pathlib

import numpy as np
import pytest

from mst.scoring import inference
from mst.checkpoints import architecture
from mst.runtime import traced_cache
from mst.models import musiq


@pytest.fixture(name="features")
def _features(small_npz):
  image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), np.uint8)
  pp_config = inference.Predictor.from_checkpoint(small_npz).pp_config
  return inference.bucketed_features(image, pp_config, 10_000, "photo")


def _entries(tmp_path, suffix=".jax_exported"):
  folder = tmp_path / "cache" / "traced"
  return sorted(folder.glob("*" + suffix)) if folder.exists() else []


def test_a_second_predictor_scores_the_same_without_tracing_the_model(
    tmp_path, monkeypatch, small_npz, features):
  monkeypatch.setenv("MST_CACHE_DIR", str(tmp_path / "cache"))
  expected = inference.Predictor.from_checkpoint(small_npz).predict([features])
  assert len(_entries(tmp_path)) == 1

  def no_tracing(*args, **kwargs):
    raise AssertionError("the model was traced again")

  second = inference.Predictor.from_checkpoint(small_npz)
  monkeypatch.setattr(musiq.Musiq, "__call__", no_tracing)
  assert second.predict([features]) == expected
  with pytest.raises(AssertionError, match="traced again"):  # a new shape is traced: the patch
    second.predict([features, features])                    # above was in force


def test_a_new_shape_or_output_scale_gets_its_own_entry(tmp_path, monkeypatch, small_npz, features):
  monkeypatch.setenv("MST_CACHE_DIR", str(tmp_path / "cache"))
  plain = inference.Predictor.from_checkpoint(small_npz)
  score = plain.predict([features])[0]["score"]
  plain.predict([features, features])
  assert len(_entries(tmp_path)) == 2
  loaded = inference.Predictor.from_checkpoint(small_npz)
  scaled = inference.Predictor(loaded.params, loaded.model_config, loaded.pp_config,
                               mos_scale=100.0)
  assert scaled.predict([features])[0]["score"] == pytest.approx(100 * score, rel=1e-6)
  assert len(_entries(tmp_path)) == 3


def test_a_damaged_entry_is_traced_again_and_replaced(tmp_path, monkeypatch, small_npz, features):
  monkeypatch.setenv("MST_CACHE_DIR", str(tmp_path / "cache"))
  expected = inference.Predictor.from_checkpoint(small_npz).predict([features])
  [entry] = _entries(tmp_path)
  entry.write_bytes(b"half a file")
  assert inference.Predictor.from_checkpoint(small_npz).predict([features]) == expected
  assert entry.stat().st_size > len(b"half a file")


def test_off_writes_nothing(tmp_path, monkeypatch, small_npz, features):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # where the cache would go if on
  monkeypatch.setenv("MST_CACHE_DIR", "off")
  assert traced_cache.folder() is None
  assert np.isfinite(inference.Predictor.from_checkpoint(small_npz).predict([features])[0]["score"])
  assert not list(tmp_path.iterdir())


def test_parameter_shapes_are_traced_once_and_a_damaged_file_again(tmp_path, monkeypatch):
  monkeypatch.setenv("MST_CACHE_DIR", str(tmp_path / "cache"))
  config = musiq.ModelConfig(num_layers=2, hidden_size=32, mlp_dim=64, num_heads=2)
  traced = architecture.expected_shapes(config)
  [entry] = _entries(tmp_path, ".param_shapes.json")

  def no_tracing(*args, **kwargs):
    raise AssertionError("the model was traced again")

  with monkeypatch.context() as patched:
    patched.setattr(musiq, "init_params", no_tracing)
    assert architecture.expected_shapes(config) == traced
    with pytest.raises(AssertionError, match="traced again"):  # another config is traced
      architecture.expected_shapes(musiq.ModelConfig(num_layers=3, hidden_size=32, mlp_dim=64,
                                                     num_heads=2))
  entry.write_text("{half a file")
  assert architecture.expected_shapes(config) == traced
  assert json.loads(entry.read_text())["head/kernel"] == [list(traced["head/kernel"].shape),
                                                         "float32"]


def test_the_key_covers_every_module_of_the_network_and_their_source():
  model_files = pathlib.Path(musiq.__file__).parent.glob("*.py")
  network = {f"mst.models.{path.stem}" for path in model_files if path.stem != "__init__"}
  assert {module.__name__ for module in musiq.SOURCES} == network
  assert {module.__name__ for module in inference.SOURCES} == network | {"mst.scoring.inference"}
  # Another list of sources (standing in for an edit to one of them) is another entry.
  assert (traced_cache._key(musiq.SOURCES, "model", ())
          != traced_cache._key(inference.SOURCES, "model", ()))
  assert traced_cache._key(musiq.SOURCES, "model", ()) == traced_cache._key(
      list(musiq.SOURCES), "model", ())
