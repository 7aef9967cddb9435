"""What happens to a run when the cluster interferes: preemption (SIGTERM), SIGKILL at every phase
of an asynchronous save, damaged checkpoints, a full disk, a workdir another run owns or nobody can
write. Each test would fail without the handling it names (docs/troubleshooting.md).

The end-to-end runs are `mst-train` subprocesses on one CPU device
(`tests/support/fault_injection.py` places the faults), sharing a compilation cache so that only
the first one compiles.
"""

import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint._src.path import async_path

import mst.data.datasets
from mst import errors
from mst.runtime import sharding
from mst.checkpoints import workdir_lock
from mst.checkpoints import workdirs
from mst.cli import evaluate
from mst.cli import predict
from mst.cli import train
from support import REPO
from support.configs import FAST_ENCODER
from support.runs import FAULT_INJECTION
from support.runs import workdir_params



@pytest.fixture(scope="module")
def run_flags(csv_dataset, tmp_path_factory):
  """mst-train flags for 6 steps of the tiny dataset, a checkpoint every 2, only the last kept."""
  data_dir = str(tmp_path_factory.getbasetemp() / "tfds")
  mst.data.datasets.build("custom", data_dir, csv=str(csv_dataset))
  return ["--config=configs/custom.py:runlocal", f"--config.dataset.csv={csv_dataset}",
          f"--config.dataset.data_dir={data_dir}", "--config.dataset.eval_split=",
          "--config.dataset.test_split=", "--config.train.batch_size=4",
          "--config.train.num_steps=6", "--config.train.checkpoint_every_steps=2",
          "--config.train.keep_checkpoints=1", f"--config.model.patch_encoder={FAST_ENCODER}"]


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("jax_cache"))


def _run(workdir, flags, cache, fault=None):
  """Runs mst-train (with `fault`, see fault_injection.py) to its end; (status, output)."""
  env = dict(os.environ, PYTHONPATH=str(REPO), XLA_FLAGS="--xla_force_host_platform_device_count=1",
             JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", MST_FAULT=fault or "none@0")
  done = subprocess.run([sys.executable, FAULT_INJECTION, f"--workdir={workdir}", *flags], env=env,
                        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        timeout=600, check=False)
  return done.returncode, done.stdout


def _steps(workdir):
  return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


@pytest.fixture(scope="module")
def uninterrupted(run_flags, compilation_cache, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  status, output = _run(workdir, run_flags, compilation_cache)
  assert status == 0, output[-3000:]
  assert _steps(workdir) == ["6"]
  return workdir_params(workdir)


@pytest.mark.slow
def test_preempted_then_killed_while_saving_resumes_to_the_same_params(
    run_flags, compilation_cache, uninterrupted, tmp_path):
  workdir = str(tmp_path / "run")
  lock = workdir_lock.lock_path(workdir, 0)

  status, output = _run(workdir, run_flags, compilation_cache, "sigterm@1")
  assert status == errors.PREEMPTED, output[-3000:]
  assert "preempted: saved the checkpoint of step 1" in output
  assert _steps(workdir) == ["1"] and not os.path.exists(lock)

  # Killed while step 4 is written: step 2 is the last complete one.
  status, output = _run(workdir, run_flags, compilation_cache, "writing@4")
  assert status == -signal.SIGKILL, output[-3000:]
  assert "Resuming from step 1" in output and "SIGKILL while writing step 4" in output
  assert "2" in _steps(workdir) and "4" not in _steps(workdir)
  assert os.path.exists(lock)  # left by the killed run

  # Killed while step 4 is finalised (committed, not yet renamed): still step 2.
  status, output = _run(workdir, run_flags, compilation_cache, "finalize@4")
  assert status == -signal.SIGKILL, output[-3000:]
  assert "Resuming from step 2" in output and "Taking over" in output
  assert "SIGKILL while finalising step 4" in output and "4" not in _steps(workdir)

  status, output = _run(workdir, run_flags, compilation_cache)
  assert status == 0, output[-3000:]
  assert "Resuming from step 2" in output and not os.path.exists(lock)
  got = workdir_params(workdir)
  assert sorted(got) == sorted(uninterrupted)
  for name, value in uninterrupted.items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints and failed saves, on real orbax checkpoints of a small state.


def _state(value):
  return {"step": jnp.asarray(value, jnp.int32),
          "params": {"w": jnp.full((4, 3), value, jnp.float32)}}


def _save_steps(workdir, steps, keep=3):
  manager = workdirs.TrainCheckpoints(str(workdir), keep)
  for step in steps:
    manager.save(step, _state(step))
  manager.wait()
  return manager


def _restore(workdir):
  mesh = sharding.make_mesh()
  abstract = jax.eval_shape(lambda: _state(0))
  shardings = jax.tree.map(lambda _: sharding.replicated(mesh), abstract)
  manager = workdirs.TrainCheckpoints(str(workdir), 3)
  try:
    return manager.restore_latest(abstract, shardings)
  finally:
    manager.close()


def _files(directory, name=None):
  found = [os.path.join(d, f) for d, _, files in os.walk(directory) for f in files]
  return [f for f in found if name is None or os.path.basename(f) == name]


def _truncate_data(step_dir):
  for path in _files(step_dir):
    if os.path.basename(os.path.dirname(path)) == "d":  # the array data files
      os.truncate(path, os.path.getsize(path) // 2)


def _delete_manifests(step_dir):
  for path in _files(step_dir, "manifest.ocdbt"):
    os.remove(path)


def _delete_metadata(step_dir):
  for path in _files(step_dir, "_METADATA") + _files(step_dir, "_CHECKPOINT_METADATA"):
    os.remove(path)


@pytest.mark.parametrize("damage", [_truncate_data, _delete_manifests, _delete_metadata])
def test_a_damaged_latest_checkpoint_is_named_set_aside_and_the_previous_one_restored(
    damage, tmp_path, caplog):
  _save_steps(tmp_path, [2, 4, 6]).close()
  damage(str(tmp_path / "checkpoints" / "6"))
  with caplog.at_level(logging.WARNING):
    state = _restore(tmp_path)
  assert int(state["step"]) == 4
  np.testing.assert_array_equal(state["params"]["w"], np.full((4, 3), 4.0))
  assert "Checkpoint step 6" in caplog.text and "damaged" in caplog.text
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
  (aside,) = os.listdir(tmp_path / workdirs.DAMAGED_DIR)
  assert aside.startswith("6-")


def test_with_no_intact_checkpoint_the_run_stops_saying_how_to_start_over(tmp_path):
  _save_steps(tmp_path, [2, 4]).close()
  for step in ("2", "4"):
    _delete_manifests(str(tmp_path / "checkpoints" / step))
  with pytest.raises(workdirs.WorkdirCheckpointError,
                     match=r"step 4: .*step 2: .*to start over from step 0, delete .*checkpoints "
                     r"or use a new --workdir"):
    _restore(tmp_path)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]  # nothing moved or deleted


def test_a_full_disk_stops_the_save_with_a_message_and_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch):
  manager = _save_steps(tmp_path, [2], keep=1)
  rename = async_path.rename

  async def disk_full(src, dst):
    if os.path.basename(str(dst)) == "4":
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
    return await rename(src, dst)

  monkeypatch.setattr(async_path, "rename", disk_full)
  with pytest.raises(workdirs.WorkdirCheckpointError,
                     match=r"No space left on device.*Stopping; the checkpoints saved before "
                     r"\(steps 2\) are intact"):
    manager.save(4, _state(4))
    manager.wait()
  monkeypatch.setattr(async_path, "rename", rename)
  manager.close()
  assert [name for name in os.listdir(tmp_path / "checkpoints") if name.isdigit()] == ["2"]
  assert int(_restore(tmp_path)["step"]) == 2


@pytest.mark.parametrize("damage", [_truncate_data, _delete_metadata])
def test_mst_predict_names_a_damaged_best_checkpoint_and_says_what_to_do(
    damage, tmp_path, capsys):
  manager = _save_steps(tmp_path, [2])
  assert manager.maybe_save_best(2, _state(2)["params"], {"srcc": 0.5})
  manager.close()
  (tmp_path / workdirs.CONFIG_FILE).write_text("{}")
  damage(str(tmp_path / "best" / "2"))
  assert predict.main(["--checkpoint", str(tmp_path), str(tmp_path / "photo.png")]) == 2
  err = capsys.readouterr().err
  assert f"the best parameters in {tmp_path / 'best' / '2'} cannot be restored" in err
  assert "move that folder aside to score the latest train state instead" in err


def _half_deleted(step_dir):
  """What SIGKILL leaves of a folder that orbax was deleting (a recursive delete, in directory
  order): its first half of files gone, metadata among them."""
  found = _files(step_dir)
  for path in found[:len(found) // 2]:
    os.remove(path)
  assert _missing_metadata(step_dir)


def _missing_metadata(step_dir):
  return any(not os.path.exists(os.path.join(step_dir, name)) for name in workdirs.STEP_METADATA)


def test_killed_while_an_old_checkpoint_was_deleted_the_run_resumes_and_removes_it(tmp_path):
  _save_steps(tmp_path, [2, 4], keep=2).close()
  _half_deleted(str(tmp_path / "checkpoints" / "2"))  # a save of step 6 was deleting it
  assert int(_restore(tmp_path)["step"]) == 4
  _save_steps(tmp_path, [6], keep=2).close()
  assert _steps(tmp_path) == ["4", "6"]


def test_killed_while_the_previous_best_was_deleted_the_new_best_is_scored(tmp_path, capsys):
  manager = _save_steps(tmp_path, [2, 4])
  assert manager.maybe_save_best(2, _state(2)["params"], {"srcc": 0.5})
  manager.wait()
  previous = str(tmp_path / "best" / "2")
  shutil.copytree(previous, str(tmp_path / "previous"))
  assert manager.maybe_save_best(4, _state(4)["params"], {"srcc": 0.6})  # deletes best/2
  manager.close()
  shutil.copytree(str(tmp_path / "previous"), previous)
  _half_deleted(previous)

  manager = workdirs.TrainCheckpoints(str(tmp_path), 3)  # what a resumed run does with it
  abstract = jax.eval_shape(lambda: _state(0)["params"])
  np.testing.assert_array_equal(manager.restore_best(abstract)["w"], np.full((4, 3), 4.0))
  assert not manager.maybe_save_best(6, _state(6)["params"], {"srcc": 0.55})
  manager.close()
  (tmp_path / workdirs.CONFIG_FILE).write_text("{}")
  params, _ = workdirs.load_params(str(tmp_path))  # what mst-predict and mst-eval score
  np.testing.assert_array_equal(params["w"], np.full((4, 3), 4.0))


# ---------------------------------------------------------------------------------------------
# The workdir: one run at a time, and writable before anything starts.


def _train(workdir, flags, capsys):
  # In this process there are 8 devices: a global batch of 8.
  status = train.main([f"--workdir={workdir}", *flags, "--config.train.batch_size=8"])
  return status, capsys.readouterr().err


def _lock_holder(workdir):
  """Another live process holding the workdir's lock, as a running mst-train does."""
  code = ("import sys; from mst.checkpoints import workdir_lock; "
          f"workdir_lock.WorkdirLock({str(workdir)!r}).acquire(); print('locked', flush=True); "
          "sys.stdin.read()")
  holder = subprocess.Popen([sys.executable, "-c", code],
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "locked"
  return holder


def test_a_live_runs_workdir_is_refused_naming_it_and_taken_over_once_it_is_killed(
    run_flags, tmp_path, capsys, caplog):
  holder = _lock_holder(tmp_path)
  try:
    status, error = _train(tmp_path, run_flags, capsys)
  finally:
    holder.kill()
    holder.wait()
  assert status == 1
  assert (f"--workdir {tmp_path} is in use by mst-train pid {holder.pid} on host "
          f"{socket.gethostname()}") in error
  assert not os.path.exists(tmp_path / "config.json")  # refused before touching anything

  with caplog.at_level(logging.WARNING):
    with workdir_lock.WorkdirLock(str(tmp_path)) as lock:
      with open(lock.path) as f:
        assert json.load(f)["pid"] == os.getpid()
  assert f"left by mst-train pid {holder.pid}" in caplog.text
  assert not os.path.exists(lock.path)  # released


def test_an_unwritable_workdir_fails_at_start_up(run_flags, tmp_path, capsys):
  (tmp_path / "a_file").write_text("")
  status, error = _train(tmp_path / "a_file" / "run", run_flags, capsys)
  assert status == 1
  assert f"cannot write to --workdir {tmp_path}/a_file/run" in error
  assert "Traceback" not in error


def test_an_unwritable_eval_output_dir_fails_before_evaluating(small_npz, tmp_path, capsys):
  (tmp_path / "a_file").write_text("")
  status = evaluate.main(["--config=configs/custom.py:runlocal", f"--checkpoint={small_npz}",
                          f"--config.dataset.csv={tmp_path}/labels.csv",  # never read
                          f"--output-dir={tmp_path}/a_file/out"])
  error = capsys.readouterr().err
  assert status == 1
  assert f"cannot write to --output-dir {tmp_path}/a_file/out" in error


def test_mst_eval_names_missing_checkpoints_before_building_anything(tmp_path, capsys):
  status = evaluate.main(["--config=configs/custom.py:runlocal", "--runs", str(tmp_path / "run0"),
                          str(tmp_path / "run1"), f"--config.dataset.csv={tmp_path}/labels.csv"])
  assert status == 2
  assert f"no such checkpoint: {tmp_path}/run0, {tmp_path}/run1" in capsys.readouterr().err
  assert not list(tmp_path.iterdir())
