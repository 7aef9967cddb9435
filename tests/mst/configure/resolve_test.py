"""The config resolved once into a typed, frozen `Run` (or mst-eval's `Evaluation`): the values
each part carries, that building it is the validation, and that every console script leaves
through one wrapper with one message format."""

import dataclasses

import pytest

from mst import errors
from mst.cli import exits
from mst.cli import export as export_cli
from mst.cli import predict as predict_cli
from mst.config import defaults
from mst.configure import overrides
from mst.configure import resolve
from mst.data import source
from mst.evaluation import evaluate
from mst.training import losses
from mst.training import optim

DEFAULTS = defaults.get_config()


def test_a_paper_config_becomes_a_typed_run_with_its_values():
  config = overrides.load_config("configs/ava.py")
  run = resolve.run(config, num_devices=8)
  assert run.dataset == source.DatasetSpec(**config.dataset.to_dict())
  assert (run.optim.name, run.optim.learning_rate) == ("sgd", 0.12)
  assert run.loss == losses.LossChoice("emd", "dist", (("r", 2.0),))
  assert (run.model.head, run.model.num_classes, run.model.num_scales) == ("distribution", 10, 3)
  assert run.train_preprocess.max_seq_len_from_original_res == 512
  assert run.eval_preprocess.max_seq_len_from_original_res == -1  # every native patch
  assert (run.loop.batch_size, run.eval.select, run.eval.ava_metrics) == (512, "last", True)
  assert run.init.checkpoint == config.init.checkpoint
  assert run.config["optim"]["learning_rate"] == 0.12  # what config.json records


def test_the_run_is_frozen_and_equal_for_equal_configs():
  run = resolve.run(overrides.load_config("configs/koniq.py", "runlocal"))
  with pytest.raises(dataclasses.FrozenInstanceError):
    run.optim.learning_rate = 1.0
  assert run == resolve.run(overrides.load_config("configs/koniq.py", "runlocal"))
  config = overrides.load_config("configs/koniq.py", "runlocal")
  config.optim.learning_rate = 1e-4
  assert resolve.run(config).optim.learning_rate == 1e-4 != run.optim.learning_rate


def test_from_scratch_is_no_init_checkpoint():
  config = overrides.load_config("configs/koniq.py", "runlocal")
  assert resolve.run(config).init.checkpoint is None
  config.init.checkpoint = " None "
  assert resolve.run(config).init.checkpoint is None


@pytest.mark.parametrize("key, value, message", [
    ("optim.name", "lamb", r"optim.name='lamb' is not one of \('sgd', 'adam', 'adamw'\)"),
    ("optim.schedule", "step", r"optim.schedule='step' is not one of"),
    ("optim.lr_multipliers", (("(", 0.1),), r"optim.lr_multipliers: bad regex '\('"),
    ("eval.select", "first", r"eval.select='first' is not one of \('best', 'last'\)"),
    ("loss.emd_r", 0.0, r"loss.emd_r must be positive"),
])
def test_building_the_run_is_the_validation(key, value, message):
  config = overrides.load_config("configs/ava.py", "runlocal")
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(ValueError, match=message):
    resolve.run(config)


def test_each_typed_part_checks_itself_with_the_same_message():
  with pytest.raises(ValueError, match="optim.name='adam' has no weight decay: use 'adamw'"):
    optim.OptimConfig(**{**DEFAULTS.optim.to_dict(), "name": "adam", "weight_decay": 0.1})
  with pytest.raises(ValueError, match="eval.select='first'"):
    evaluate.EvalSettings(**{**DEFAULTS.eval.to_dict(), "select": "first"})
  with pytest.raises(ValueError, match="needs model.head"):
    losses.choose("l1", "mos", "distribution", {})


def test_mst_evals_evaluation_takes_the_dataset_and_eval_settings():
  config = overrides.load_config("configs/spaq.py")
  evaluation = resolve.evaluation(config, "test", num_devices=8)
  assert evaluation.dataset.name == "spaq/shorter_side_512"
  assert evaluation.eval.batch_size == config.eval.batch_size and evaluation.seed == 0
  with pytest.raises(resolve.ConfigError, match=r"--split='dev': dataset 'spaq/shorter_side_512'"
                                                r" has only the splits"):
    resolve.evaluation(config, "dev", num_devices=8)


def test_a_catalogue_dataset_split_is_checked_by_the_same_rule_once_prepared():
  with pytest.raises(source.SplitError, match=r"dataset.eval_split='dev': dataset 'imagenet2012' "
                                              r"has only the splits \['train', 'validation'\]"):
    source.check_splits("imagenet2012", ("train", "validation"),
                        {"dataset.eval_split": "dev"}, optional=("dataset.eval_split",))
  source.check_splits("imagenet2012", None, {"dataset.eval_split": "dev"})  # not prepared yet


def test_the_wrapper_prints_the_message_and_exits_with_its_status(capsys):
  def fails(argv):
    with exits.exit_status(exits.USAGE, KeyError):
      raise KeyError("no such key")

  assert exits.run("mst-x", fails, []) == 2
  assert capsys.readouterr().err == "mst-x: error: 'no such key'\n"
  preempted = errors.Preempted("preempted: saved the checkpoint of step 3")

  def stops(argv):
    raise preempted

  assert exits.run("mst-x", stops, []) == 75
  assert capsys.readouterr().err == "mst-x: preempted: saved the checkpoint of step 3\n"
  assert exits.run("mst-x", lambda argv: exits.OK, []) == 0
  with pytest.raises(RuntimeError):  # anything else is a bug: its traceback is shown
    exits.run("mst-x", lambda argv: (_ for _ in ()).throw(RuntimeError("bug")), [])


@pytest.mark.parametrize("script, main", [("mst-predict", predict_cli.main),
                                          ("mst-export", export_cli.main)])
def test_console_scripts_share_the_error_format(script, main, tmp_path, capsys):
  missing = str(tmp_path / "missing.npz")
  argv = (["--checkpoint", missing, str(tmp_path)] if script == "mst-predict"
          else ["--checkpoint", missing, "--output", str(tmp_path / "out")])
  assert main(argv) == 2
  error = capsys.readouterr().err
  assert error.startswith(f"{script}: error: ") and "missing.npz" in error
