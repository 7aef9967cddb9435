"""Seeing training's speed while it trains: the throughput scalars every log step (images/s,
tokens/s, input wait, MFU), the peak table, the FLOP and MFU arithmetic, train.profile_steps and
its profiler trace.

The runs are the trainer tests' (support.configs.tiny_run_config): configs/custom.py:runlocal on
conftest's `csv_dataset`, a few steps on 8 fake CPU devices.
"""

import glob
import os
import time

import jax
import numpy as np
import pytest

from mst.configure import overrides
from mst.configure import resolve
from mst.data import packing
from mst.runtime import devices
from mst.training import throughput
from mst.training import trainer
from support.configs import FAST_ENCODER
from support.configs import tiny_run_config
from support.runs import logged_scalars

THROUGHPUT_TAGS = ("train/images_per_second", "train/tokens_per_second",
                   "train/input_wait_fraction")


def _config(csv_dataset, tmp_path_factory, **changes):
  """Training alone (no evaluation), 4 steps, with `changes`."""
  return tiny_run_config(csv_dataset, tmp_path_factory.getbasetemp() / "tfds", **{
      "dataset__eval_split": "", "dataset__test_split": "", "train__num_steps": 4,
      "train__checkpoint_every_steps": 4, "model__patch_encoder": FAST_ENCODER, **changes})


@pytest.fixture(scope="module")
def measured(csv_dataset, tmp_path_factory):
  """A 4-step run logging every step, with a peak given and steps 2-3 profiled: its workdir and
  wall time."""
  workdir = tmp_path_factory.mktemp("measured")
  config = _config(csv_dataset, tmp_path_factory, train__log_every_steps=1,
                   train__peak_tflops=1.0, train__profile_steps="2,3")
  run = resolve.run(config, jax.device_count())
  start = time.perf_counter()
  trainer.train_and_evaluate(run, str(workdir))
  return workdir, time.perf_counter() - start, run


@pytest.mark.slow
def test_every_log_step_writes_the_throughput(measured):
  workdir, seconds, run = measured
  scalars = {tag: logged_scalars(str(workdir), tag) for tag in THROUGHPUT_TAGS + ("train/mfu",)}
  for tag, values in scalars.items():
    assert sorted(values) == [1, 2, 3, 4], tag
  assert all(0 <= wait <= 1 for wait in scalars["train/input_wait_fraction"].values())
  # A CPU device does far less than 1 TFLOP/s: the MFU against that peak is small but not 0.
  assert all(0 < mfu < 1 for mfu in scalars["train/mfu"].values())
  # Each interval is one step of 8 images: the intervals' times add up to less than the run's.
  batch = run.loop.batch_size
  step_seconds = [batch / ips for ips in scalars["train/images_per_second"].values()]
  assert 0 < sum(step_seconds) <= seconds
  assert 4 * batch / seconds <= np.mean(list(scalars["train/images_per_second"].values()))
  # Real tokens per image: at least one, at most every scale full (4 + 16 patches and l = 32).
  for step, ips in scalars["train/images_per_second"].items():
    assert 1 <= scalars["train/tokens_per_second"][step] / ips <= 4 + 16 + 32


@pytest.mark.slow
def test_profile_steps_leave_a_trace_for_tensorboard(measured):
  workdir, _, _ = measured
  traces = glob.glob(os.path.join(str(workdir), "profile", "plugins", "profile", "*",
                                  "*.xplane.pb"))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0


@pytest.mark.slow
def test_without_a_known_peak_there_is_no_mfu(csv_dataset, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("no_peak")
  config = _config(csv_dataset, tmp_path_factory, train__num_steps=2,
                   train__checkpoint_every_steps=2)
  trainer.train_and_evaluate(resolve.run(config, jax.device_count()), str(workdir))
  assert set(logged_scalars(str(workdir), "train/images_per_second")) == {1, 2}
  assert not logged_scalars(str(workdir), "train/mfu")  # a CPU's peak is not in the table
  assert not os.path.exists(workdir / "profile")


@pytest.mark.parametrize("kind, peak", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H200", 989.0), ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0), ("TPU v4", 275.0),
    ("TPU v5 lite", 197.0), ("TPU v5e", 197.0), ("TPU v5", 459.0), ("TPU v5p", 459.0),
    ("TPU v6 lite", 918.0), ("cpu", None), ("TPU v4 lite", None), ("NVIDIA GeForce RTX 4090", None),
])
def test_peak_table(kind, peak):
  assert devices.peak_tflops(kind) == peak


def test_a_configured_peak_overrides_the_table():
  assert devices.peak_per_device(0.0, "NVIDIA H200") == 989.0
  assert devices.peak_per_device(0.0, "cpu") is None
  assert devices.peak_per_device(2.5, "cpu") == devices.peak_per_device(2.5, "NVIDIA H200") == 2.5


@pytest.mark.parametrize("value, steps", [("", None), ("20,25", (20, 25)), (" 3 , 3 ", (3, 3)),
                                          ("7", (7, 7))])
def test_profile_steps_parse(value, steps):
  config = overrides.load_config("configs/koniq.py", "runlocal")
  config.train.profile_steps = value
  assert resolve.run(config).loop.profile_steps == steps


@pytest.mark.parametrize("value, problem", [
    ("25,20", "the first step, 25, comes after the last"), ("0,3", "steps count from 1"),
    ("x", "not 'first,last'"), ("1,2,3", "not 'first,last'"), ("2-5", "not 'first,last'"),
    ("-1,2", "not 'first,last'")])
def test_malformed_profile_steps_are_config_errors(value, problem):
  config = overrides.load_config("configs/koniq.py", "runlocal")
  config.train.profile_steps = value
  with pytest.raises(resolve.ConfigError) as error:
    resolve.run(config)
  assert str(error.value).startswith(f"train.profile_steps={value!r}: ")
  assert problem in str(error.value)
  assert "; fix: set --config.train.profile_steps to 'first,last' steps" in str(error.value)


def test_a_negative_peak_is_a_config_error():
  config = overrides.load_config("configs/koniq.py", "runlocal")
  config.train.peak_tflops = -1.0
  with pytest.raises(resolve.ConfigError, match=r"train.peak_tflops=-1.0: .*; fix: set"):
    resolve.run(config)


def test_mfu_arithmetic():
  # 8 devices of 100 TFLOP/s doing 4e14 FLOPs in 1 s: half their peak.
  assert throughput.mfu(4e14, 1.0, 100.0, 8) == pytest.approx(0.5)
  assert throughput.mfu(4e14, 2.0, 100.0, 8) == pytest.approx(0.25)


class _Compiled:
  def __init__(self, analysis):
    self.analysis = analysis

  def cost_analysis(self):
    return self.analysis


def test_compiled_flops_count_every_device():
  # The partitioned program's count is one device's.
  assert throughput.compiled_flops(_Compiled({"flops": 1e9}), 8) == 8e9
  assert throughput.compiled_flops(_Compiled([{"flops": 1e9}]), 2) == 2e9  # older JAX: a list
  assert throughput.compiled_flops(_Compiled({}), 8) is None
  assert throughput.compiled_flops(_Compiled(None), 8) is None


def test_step_flops_of_a_sharded_jit_are_the_whole_computation():
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  jitted = jax.jit(lambda w, batch: (batch["x"] @ w).sum(), in_shardings=(replicated, data))
  w, x = np.ones((64, 32), np.float32), np.ones((8 * 16, 64), np.float32)
  flops = throughput.StepFlops(jitted, len(jax.devices()))
  # The matmul's 2 * 128 * 64 * 32 multiply-adds, plus the sums; counted once per shape.
  assert 2 * 128 * 64 * 32 <= flops(w, {"x": x}) <= 1.1 * 2 * 128 * 64 * 32
  assert flops(w, {"x": x}) == flops(w, {"x": x + 1}) and len(flops._by_shape) == 1
  assert flops(w, {"x": x[:64]}) < flops(w, {"x": x}) and len(flops._by_shape) == 2


class _Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_meter_scalars_over_the_interval():
  clock = _Clock()
  meter = throughput.Meter(4, 10.0, clock=clock, over_hosts=lambda *counts: counts)

  def batches():
    for _ in range(3):
      clock.now += 0.5  # reading a batch takes 0.5 s
      yield "batch", (8, 100)

  for _ in meter.timed(batches()):
    clock.now += 1.5  # the step
    meter.add_flops(2e13)
  with meter.paused(None):
    clock.now += 100  # an evaluation: not in the interval
  scalars = meter.scalars()  # 3 steps, 6 s, 1.5 s of it waiting for batches
  assert scalars == pytest.approx({"images_per_second": 4.0, "tokens_per_second": 50.0,
                                   "input_wait_fraction": 0.25, "mfu": 6e13 / 6 / 4e13})
  clock.now += 2
  assert meter.scalars()["images_per_second"] == 0  # a new interval
  assert throughput.log_line(scalars) == {"images/s": "4", "tokens/s": "50",
                                          "input wait": "25%", "MFU": "25%"}


def test_meter_without_peak_or_flops_has_no_mfu():
  clock = _Clock()
  meter = throughput.Meter(1, None, clock=clock, over_hosts=lambda *counts: counts)
  meter.add_flops(1e9)
  clock.now += 1
  assert "mfu" not in meter.scalars()
  meter = throughput.Meter(1, 10.0, clock=clock, over_hosts=lambda *counts: counts)
  meter.add_flops(1e9)
  meter.add_flops(None)  # one step's FLOPs unknown: the interval's are
  clock.now += 1
  assert "mfu" not in meter.scalars()


def test_real_counts_of_both_layouts():
  mask = np.zeros((4, 10), bool)
  mask[0, :3] = mask[1, :5] = mask[2, :1] = mask[3, :10] = True
  batch = {"mask": mask, "patches": np.zeros((4, 10, 2), np.float32), "mos": np.zeros(4),
           "spatial_idx": np.zeros((4, 10), np.int32), "scale_idx": np.zeros((4, 10), np.int32)}
  assert packing.real_counts(batch) == (4, 19)
  padded = packing.padded_layout(batch, shards=2)
  packed = packing.packed_layout(batch, shards=2, row_length=16)
  assert packing.real_counts(padded) == packing.real_counts(packed) == (4, 19)
