"""How fast training goes, seen while it trains: throughput, input wait and MFU between log steps,
and a profiler trace of chosen steps.

Every `train.log_every_steps` the trainer writes, for the steps since the previous log:
- `train/images_per_second`, `train/tokens_per_second`: the real images and real patch tokens (the
  mask's; padding and CLS slots are not counted) of every host's batches over the wall time.
- `train/input_wait_fraction`: the part of that wall time the step loop spent in `next(batches)`,
  reading, decoding, augmenting, laying out and transferring the next batch (on several hosts, the
  host that waited most: it holds the others back).
- `train/mfu`: XLA's FLOPs of the steps over the wall time, as a fraction of the peak of every
  device (`mst.runtime.devices`, or `train.peak_tflops`); absent when the peak is unknown.

Why the wall time is honest: the step is dispatched asynchronously, so the loop gets a step's
outputs before the device has run it, and takes the next batch while it runs. The trainer blocks
on the last step's outputs before `Meter.scalars` reads the clock, so an interval holds all of its
steps' device time. Time in `next(batches)` is then time the loop could not spend feeding the
device: a device-bound run has queued work, `next` returns prefetched batches at once and the loop
waits in that block instead (a fraction near 0); an input-bound run leaves the device idle while
`next` prepares a batch (a fraction near 1). Timing each step to the next batch instead would
charge the device's time to whichever call happens to block. An interval leaves out evaluations
and checkpoints, which are not training (`Meter.paused`); the first one includes compiling the step
and starting the input pipeline, as does any step whose batch shape is new.
"""

from collections.abc import Callable, Iterator
import contextlib
import dataclasses
import os
import time
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

Counts = tuple[int, int]  # (real images, real tokens) of a host's batch


def mfu(flops: float, seconds: float, peak_tflops: float, num_devices: int) -> float:
  """Model FLOP utilisation: `flops` done in `seconds` over the peak of `num_devices` devices of
  `peak_tflops` TFLOP/s each."""
  return flops / seconds / (peak_tflops * 1e12 * num_devices)


def compiled_flops(compiled, num_devices: int) -> float | None:
  """XLA's FLOPs of one run of a compiled program on all `num_devices`; None when the backend
  does not count them.

  The program of a computation sharded over the mesh is the per-device, SPMD-partitioned one, so
  its cost analysis counts one device's work. Parameters are replicated, so the optimizer update
  is counted on every device, as every device does it (a small part of a step).
  """
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # one per program in older JAX versions
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get("flops", 0.0)
  return float(flops) * num_devices if flops and flops > 0 else None


class StepFlops:
  """XLA's FLOPs of a jitted train step on all devices, per batch shape: counted once per shape.

  The shapes of a run's batches vary a little: the real patches each device encodes are rounded to
  one of at most 8 counts, and a packed batch's number of rows varies (mst.data.packing); each new
  shape is a new program. Lowering and compiling the step with the arguments it is about to be
  called with finds (or fills) the compilation cache the call uses, so nothing compiles twice.
  """

  def __init__(self, jitted, num_devices: int):
    self.jitted, self.num_devices = jitted, num_devices
    self._by_shape: dict[tuple, float | None] = {}

  def __call__(self, state, batch: dict, *rest) -> float | None:
    key = tuple(sorted((name, tuple(value.shape)) for name, value in batch.items()))
    if key not in self._by_shape:
      try:
        compiled = self.jitted.lower(state, batch, *rest).compile()
        self._by_shape[key] = compiled_flops(compiled, self.num_devices)
      except Exception as e:  # pylint: disable=broad-except  (a backend without cost analysis)
        logging.warning("No FLOP count of the train step (%s): no train/mfu", e)
        self._by_shape[key] = None
    return self._by_shape[key]


def _over_hosts(images: int, tokens: int, input_s: float) -> tuple[float, float, float]:
  """Every host's images and tokens summed, and the longest input wait of any host."""
  if jax.process_count() == 1:
    return images, tokens, input_s
  gathered = multihost_utils.process_allgather(np.array([images, tokens, input_s], np.float64))
  gathered = np.asarray(gathered).reshape(-1, 3)
  return gathered[:, 0].sum(), gathered[:, 1].sum(), gathered[:, 2].max()


@dataclasses.dataclass
class _Interval:
  images: int = 0
  tokens: int = 0
  input_s: float = 0.0
  flops: float | None = 0.0  # None once a step's FLOPs are unknown


class Meter:
  """Counts the images, tokens, input wait and FLOPs of the steps between two log steps.

  Args:
    num_devices: every device of every host (the mesh's).
    peak_tflops: one device's peak in TFLOP/s (None: no MFU).
    clock: seconds since some start; replaceable in tests.
    over_hosts: (images, tokens, input seconds) of this host -> of the run; replaceable in tests.
  """

  def __init__(self, num_devices: int, peak_tflops: float | None, *,
               clock: Callable[[], float] = time.perf_counter,
               over_hosts: Callable[[int, int, float], tuple[float, float, float]] = _over_hosts):
    self.num_devices, self.peak_tflops = num_devices, peak_tflops
    self.clock, self.over_hosts = clock, over_hosts
    self.restart()

  def restart(self) -> None:
    """Starts a new interval now, counting nothing yet."""
    self.start, self.now = self.clock(), _Interval()

  def timed(self, batches: Iterator[tuple[Any, Counts]]) -> Iterator[Any]:
    """The batches of `batches` ((batch, counts) pairs), the time of each `next` counted as input
    wait and its counts as the interval's."""
    batches = iter(batches)
    while True:
      start = self.clock()
      try:
        batch, (images, tokens) = next(batches)
      except StopIteration:
        return
      self.now.input_s += self.clock() - start
      self.now.images += images
      self.now.tokens += tokens
      yield batch

  @contextlib.contextmanager
  def paused(self, state: Any):
    """Leaves what runs inside (an evaluation, a checkpoint) out of the interval's wall time, once
    the device has finished the interval's steps so far (`state`)."""
    jax.block_until_ready(state)
    start = self.clock()
    try:
      yield
    finally:
      self.start += self.clock() - start

  def add_flops(self, flops: float | None) -> None:
    """One step's FLOPs on all devices (None: unknown, and so the interval's)."""
    if self.now.flops is not None:
      self.now.flops = None if flops is None else self.now.flops + flops

  def scalars(self) -> dict[str, float]:
    """The interval's throughput (call it once the device has finished the interval's last step;
    every host at the same step), then a new interval."""
    seconds = max(self.clock() - self.start, 1e-9)
    images, tokens, input_s = self.over_hosts(self.now.images, self.now.tokens, self.now.input_s)
    out = {"images_per_second": images / seconds, "tokens_per_second": tokens / seconds,
           "input_wait_fraction": min(input_s / seconds, 1.0)}
    if self.peak_tflops and self.now.flops:
      out["mfu"] = mfu(self.now.flops, seconds, self.peak_tflops, self.num_devices)
    self.restart()
    return out


def log_line(scalars: dict[str, float]) -> dict[str, str]:
  """The progress line's notes for `Meter.scalars`: `images/s 812, tokens/s 2.9e+04, input wait
  3%, MFU 41.2%`."""
  notes = {"images/s": f"{scalars['images_per_second']:.4g}",
           "tokens/s": f"{scalars['tokens_per_second']:.3g}",
           "input wait": f"{100 * scalars['input_wait_fraction']:.0f}%"}
  if "mfu" in scalars:
    notes["MFU"] = f"{100 * scalars['mfu']:.3g}%"
  return notes


class ProfileWindow:
  """A `jax.profiler` trace of the steps `steps` (first, last; None: none) in `<workdir>/profile`,
  where TensorBoard's profile tab finds it (`tensorboard --logdir <workdir>`).

  Process 0 traces: every host runs the same program on its devices, and hosts sharing a machine
  would write the same file names. A run resumed within the window traces its remaining steps.
  """

  def __init__(self, steps: tuple[int, int] | None, workdir: str, enabled: bool = True):
    self.steps = steps if enabled else None
    self.logdir = os.path.join(workdir, "profile")
    self.active = self.done = False

  def before(self, step: int) -> None:
    """Starts the trace before the window's first step (that this run takes)."""
    if self.steps and not (self.active or self.done) and self.steps[0] <= step <= self.steps[1]:
      logging.info("Tracing steps %d-%d into %s", step, self.steps[1], self.logdir)
      jax.profiler.start_trace(self.logdir)
      self.active = True

  def after(self, step: int, state: Any) -> None:
    """Stops the trace after the window's last step, once the device has run it."""
    if self.active and step >= self.steps[1]:
      self.close(state)

  def close(self, state: Any = None) -> None:
    """Stops a trace still running (the run ended or failed within the window)."""
    if self.active:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active, self.done = False, True
