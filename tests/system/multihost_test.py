"""Two processes on localhost with 2 CPU devices each train exactly like one process with 4, and,
preempted by a SIGTERM to one of them, save at the same step and resume to exactly the same
parameters."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import mst.data.datasets
from mst import errors
from support import REPO
from support.images import write_csv_dataset
from support.configs import FAST_ENCODER
from support.runs import FAULT_INJECTION
from support.runs import free_port
from support.runs import logged_scalars
from support.runs import workdir_params

# Trains in subprocesses; with --dist loadgroup (the full suite's command) one worker runs this
# file, so the uninterrupted `pair` of processes runs once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("multihost_test")]

# Each process runs mst-train's main with JAX's SIGTERM-trapping preemption service off, counting
# the multi-host device collectives mst calls (`COLLECTIVE <caller>` lines at exit).
RUNNER = """
import atexit, collections, sys, traceback
import jax
from jax.experimental import multihost_utils
jax.config.update("jax_enable_preemption_service", False)
calls = collections.Counter()
def counted(name, function):
  def call(*args, **kwargs):
    frames = [f for f in traceback.extract_stack()[:-1] if "/mst/" in f.filename]
    calls[f"{name} from {frames[-1].name}" if frames else name] += 1
    return function(*args, **kwargs)
  return call
for name in ("process_allgather", "broadcast_one_to_all", "sync_global_devices"):
  setattr(multihost_utils, name, counted(name, getattr(multihost_utils, name)))
atexit.register(lambda: [print("COLLECTIVE", count, key) for key, count in calls.items()])
from mst.cli import train
sys.exit(train.main())
"""


def _launch(workdir, flags, devices, process_id=None, num_processes=1, port=None, fault=None):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             PYTHONPATH=str(REPO), MST_CACHE_DIR=flags.cache)
  if process_id is not None:
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(num_processes),
               JAX_PROCESS_ID=str(process_id))
  runner = ["-c", RUNNER]
  if fault:
    runner = [FAULT_INJECTION]  # mst-train with a SIGTERM sent to one process at a step
    env.update(MST_FAULT=fault, MST_FAULT_PROCESS="1")
  command = [sys.executable, *runner, f"--workdir={workdir}", *flags]
  return subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _wait(process, timeout=600, status=0):
  try:
    output, _ = process.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    process.kill()  # SIGKILL: JAX's preemption service traps SIGTERM
    output, _ = process.communicate()
  assert process.returncode == status, output[-3000:]
  return output


def _pair(workdir, flags, fault=None, status=0):
  """Runs 2 processes of 2 devices each; their outputs."""
  port = free_port()
  processes = [_launch(workdir, flags, devices=2, process_id=i, num_processes=2, port=port,
                       fault=fault) for i in range(2)]
  return [_wait(process, status=status) for process in processes]


class Flags(list):
  """mst-train's flags, and the compilation cache (`cache`) of every run given them: each run
  after the first loads the programs an earlier one compiled."""

  def __init__(self, flags: list[str], cache: str):
    super().__init__(flags)
    self.cache = cache


@pytest.fixture(scope="module")
def flags(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("multihost")
  csv_path = str(write_csv_dataset(tmp_path / "images", count=20, seed=1,
                                   splits=("train",) * 12 + ("validation",) * 8, sizes=(40, 90)))
  data_dir = str(tmp_path / "tfds")
  mst.data.datasets.build("custom", data_dir, csv=csv_path)  # prepared once, before the runs
  return Flags(["--config=configs/custom.py:runlocal", f"--config.dataset.csv={csv_path}",
                f"--config.dataset.data_dir={data_dir}", "--config.dataset.test_split=",
                "--config.train.num_steps=4", "--config.train.eval_every_steps=4",
                f"--config.model.patch_encoder={FAST_ENCODER}"], str(tmp_path / "mst-cache"))


@pytest.fixture(scope="module")
def pair(flags, tmp_path_factory):
  """An uninterrupted run of 2 processes: its workdir and outputs."""
  workdir = str(tmp_path_factory.mktemp("pair"))
  return workdir, _pair(workdir, flags)


def test_two_processes_of_two_devices_match_one_process_of_four(flags, pair, tmp_path):
  single = str(tmp_path / "single")
  # Only the training is compared: no validation, whose programs the pair's runs do not share.
  _wait(_launch(single, Flags([*flags, "--config.dataset.eval_split="], flags.cache), devices=4))
  workdir, outputs = pair
  assert "Process 0 of 2" in outputs[0] and "Process 1 of 2" in outputs[1]

  expected, got = logged_scalars(single), logged_scalars(workdir)
  assert sorted(expected) == sorted(got) == [1, 2, 3, 4]
  for step in expected:
    # The same examples in every global batch; only the all-reduce order may differ.
    assert got[step] == pytest.approx(expected[step], rel=1e-5), step


def test_batch_shapes_agree_without_a_device_collective_per_step(pair):
  """The hosts agree on each step's layout through the coordinator's key-value store: no device
  collective in the training data path (it would wait for the devices each step)."""
  for output in pair[1]:
    collectives = re.findall(r"^COLLECTIVE (\d+) (.*)$", output, re.MULTILINE)
    assert collectives, output[-3000:]  # the counter ran
    by_caller = {caller: int(count) for count, caller in collectives}
    assert not [caller for caller in by_caller if "train_batches" in caller
                or "layout" in caller or "agree" in caller], by_caller


def test_sigterm_to_one_process_saves_both_at_one_step_and_the_rerun_resumes_exactly(
    flags, pair, tmp_path):
  workdir = str(tmp_path / "preempted")
  outputs = _pair(workdir, flags, fault="sigterm@1", status=errors.PREEMPTED)
  steps = [re.findall(r"preempted: saved the checkpoint of step (\d+)", out) for out in outputs]
  assert steps[0] == steps[1] and len(steps[0]) == 1, outputs[1][-3000:]
  (step,) = steps[0]
  assert int(step) < 4 and step in os.listdir(os.path.join(workdir, "checkpoints"))

  outputs = _pair(workdir, flags)
  assert all(f"Resuming from step {step}" in output for output in outputs)
  expected, got = workdir_params(pair[0]), workdir_params(workdir)
  assert sorted(expected) == sorted(got)
  for name, value in expected.items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)
