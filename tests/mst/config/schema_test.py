"""config.json's schema version: what is written, and how an older or newer file is read."""

import json
import logging

import pytest

import mst
from mst.checkpoints import workdirs
from mst.cli import predict
from mst.config import defaults
from mst.config import schema


def _json(config) -> dict:
  """A config as config.json holds it (tuples as lists)."""
  return json.loads(config.to_json_best_effort())


def _written(**changes) -> dict:
  """The config.json of a runlocal config, as a dict, with `changes` ("section.key": value; None
  deletes the key)."""
  raw = json.loads(json.dumps(schema.stamp(defaults.get_config("runlocal"))))
  for name, value in changes.items():
    *sections, key = name.split(".")
    where = raw
    for section in sections:
      where = where[section]
    if value is None:
      del where[key]
    else:
      where[key] = value
  return raw


def test_stamp_then_upgrade_gives_the_config_back():
  config = defaults.get_config("runlocal")
  config.model.hidden_size = 48
  config.optim.lr_multipliers = (("^embedding/kernel$", 0.1),)
  stamped = schema.stamp(config)
  assert stamped["schema_version"] == schema.SCHEMA_VERSION == 3
  assert stamped["mst_version"] == mst.__version__
  upgraded = schema.upgrade(json.loads(json.dumps(stamped)), "config.json")
  assert "schema_version" not in upgraded and "mst_version" not in upgraded
  assert _json(upgraded) == _json(config)


def test_workdirs_write_the_versions_and_read_the_config_back(tmp_path):
  config = defaults.get_config("runlocal")
  workdirs.write_config(str(tmp_path), config)
  written = json.loads((tmp_path / workdirs.CONFIG_FILE).read_text())
  assert (written["schema_version"], written["mst_version"]) == (3, mst.__version__)
  assert _json(workdirs.read_config(str(tmp_path))) == _json(config)
  workdirs.write_config(str(tmp_path), _json(config))  # plain JSON values are written the same
  assert json.loads((tmp_path / workdirs.CONFIG_FILE).read_text()) == written


def test_a_file_without_a_version_is_version_1():
  raw = _written(schema_version=None, mst_version=None)
  assert _json(schema.upgrade(raw, "old/config.json")) == _json(defaults.get_config("runlocal"))


def test_a_newer_file_is_refused_naming_the_file_and_both_versions(tmp_path, capsys):
  raw = _written(schema_version=schema.SCHEMA_VERSION + 1, mst_version="9.1.0")
  message = (rf"run/config.json was written by mst 9\.1\.0 with config schema version 4; this is "
             rf"mst {mst.__version__}, which reads schema versions up to 3\. Upgrade mst")
  with pytest.raises(schema.NewerWorkdirError, match=message):
    schema.upgrade(raw, "run/config.json")
  assert issubclass(schema.NewerWorkdirError, ValueError)

  (tmp_path / workdirs.CONFIG_FILE).write_text(json.dumps(raw))
  with pytest.raises(schema.NewerWorkdirError, match=str(tmp_path / workdirs.CONFIG_FILE)):
    workdirs.read_config(str(tmp_path))
  # Scoring it: a message naming both versions, not a traceback.
  assert predict.main(["--quiet", "--checkpoint", str(tmp_path), "photo.png"]) == 2
  err = capsys.readouterr().err
  assert "mst 9.1.0 with config schema version 4" in err and f"this is mst {mst.__version__}" in err
  assert "Traceback" not in err


@pytest.mark.parametrize("version", ["2", 0, True, None])
def test_a_schema_version_that_is_not_a_positive_integer_is_refused(version):
  raw = _written()
  raw["schema_version"] = version
  with pytest.raises(ValueError, match=r"x\.json: schema_version .* is not a positive integer"):
    schema.upgrade(raw, "x.json")


def test_version_2_added_the_throughput_keys_with_values_that_change_nothing():
  # train.peak_tflops and train.profile_steps only report on training: an older file gets "no
  # configured peak" and "no profile", what it did before they existed.
  assert schema.ADDED_KEYS[2] == {"train.peak_tflops": 0.0, "train.profile_steps": ""}
  raw = _written(schema_version=1, **{"train.peak_tflops": None, "train.profile_steps": None})
  config = schema.upgrade(raw, "config.json")
  assert (config.train.peak_tflops, config.train.profile_steps) == (0.0, "")
  today = defaults.get_config()
  for version, keys in schema.ADDED_KEYS.items():
    assert 1 < version <= schema.SCHEMA_VERSION
    for name in keys:
      section, key = name.split(".")
      assert key in today[section], name  # a key of today's defaults


# The table as two later versions might leave it, with today's keys standing in for keys they add
# (a planted key must be one that today's defaults have): version 2 "added" model.chunked_on_cpu,
# whose behaviour before it was False, and version 3 optim.grad_accum_steps, before it 7.
PLANTED = {2: {"model.chunked_on_cpu": False}, 3: {"optim.grad_accum_steps": 7}}


@pytest.mark.parametrize("version, expected", [(1, (False, 7)), (2, (True, 7)), (3, (True, 1))])
def test_keys_added_after_the_files_version_get_their_old_behaviour_value(
    version, expected, monkeypatch):
  monkeypatch.setattr(schema, "SCHEMA_VERSION", 3)
  monkeypatch.setattr(schema, "ADDED_KEYS", PLANTED)
  raw = _written(schema_version=version, **{"model.chunked_on_cpu": None,
                                            "optim.grad_accum_steps": None})
  config = schema.upgrade(raw, "config.json")
  assert (config.model.chunked_on_cpu, config.optim.grad_accum_steps) == expected
  # A key the file has keeps the file's value, whatever the table says.
  raw = _written(schema_version=1, **{"optim.grad_accum_steps": 2})
  assert schema.upgrade(raw, "config.json").optim.grad_accum_steps == 2
  # The table may also be given (it is ADDED_KEYS otherwise).
  raw = _written(schema_version=1, **{"optim.grad_accum_steps": None})
  assert schema.upgrade(raw, "c", added_keys={2: {"optim.grad_accum_steps": 5}}
                        ).optim.grad_accum_steps == 5


def test_a_missing_key_without_a_table_entry_gets_todays_default():
  raw = _written(**{"eval.select": None, "seed": None})
  del raw["data"]  # a whole section
  config = schema.upgrade(raw, "config.json")
  today = defaults.get_config()
  assert config.eval.select == today.eval.select and config.seed == today.seed
  assert _json(config.data) == _json(today.data)
  assert config.train.num_steps == defaults.get_config("runlocal").train.num_steps  # the file's


def test_a_key_that_today_lacks_is_dropped_with_a_warning(caplog):
  raw = _written(**{"model.old_knob": 3})
  raw["legacy"] = {"a": 1}
  with caplog.at_level(logging.WARNING):
    config = schema.upgrade(raw, "run/config.json")
  assert "old_knob" not in config.model and "legacy" not in config
  assert _json(config) == _json(defaults.get_config("runlocal"))
  assert "run/config.json: model.old_knob=3 is not a config key" in caplog.text
  assert "run/config.json: legacy={'a': 1} is not a config key" in caplog.text
