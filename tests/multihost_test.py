"""Two processes on localhost with 2 CPU devices each train exactly like one process with 4."""

import glob
import os
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

import mst.data.datasets
from conftest import write_csv_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each process runs mst-train's main with JAX's SIGTERM-trapping preemption service off.
RUNNER = ("import jax; jax.config.update('jax_enable_preemption_service', False); "
          "import sys; from mst.cli import train; sys.exit(train.main())")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(workdir, flags, devices, process_id=None, num_processes=1, port=None):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             PYTHONPATH=REPO)
  if process_id is not None:
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(num_processes),
               JAX_PROCESS_ID=str(process_id))
  command = [sys.executable, "-c", RUNNER, f"--workdir={workdir}", *flags]
  return subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _wait(process, timeout=600):
  output, _ = process.communicate(timeout=timeout)
  assert process.returncode == 0, output[-3000:]
  return output


def _losses(workdir):
  values = {}
  for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == "train/loss":
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return values


def test_two_processes_of_two_devices_match_one_process_of_four(tmp_path):
  csv_path = str(write_csv_dataset(tmp_path / "images", count=20, seed=1,
                                   splits=("train",) * 12 + ("validation",) * 8, sizes=(40, 90)))
  data_dir = str(tmp_path / "tfds")
  mst.data.datasets.build("custom", data_dir, csv=csv_path)  # prepared once, before the runs
  flags = ["--config=configs/custom.py:runlocal", f"--config.dataset.csv={csv_path}",
           f"--config.dataset.data_dir={data_dir}", "--config.dataset.test_split=",
           "--config.train.num_steps=3", "--config.train.eval_every_steps=3"]

  single = str(tmp_path / "single")
  _wait(_launch(single, flags, devices=4))
  pair = str(tmp_path / "pair")
  port = _free_port()
  processes = [_launch(pair, flags, devices=2, process_id=i, num_processes=2, port=port)
               for i in range(2)]
  outputs = [_wait(process) for process in processes]
  assert "Process 0 of 2" in outputs[0] and "Process 1 of 2" in outputs[1]

  expected, got = _losses(single), _losses(pair)
  assert sorted(expected) == sorted(got) == [1, 2, 3]
  for step in expected:
    # The same examples in every global batch; only the all-reduce order may differ.
    assert got[step] == pytest.approx(expected[step], rel=1e-5), step
