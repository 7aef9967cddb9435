"""CPU inference benchmark of the paper MUSIQ model: mst's Flax model (jit) against PyTorch.

    python experiments/benchmark.py [--threads N] [--repeats R]

The paper model (P=32, G=10, D=384, 14 layers, 6 heads, MLP 1152, scales 224, 384 + native) scores a
synthetic 1024x768 image, preprocessed by `mst.data.preprocess` (49 + 144 + 768 = 961 tokens). Both
frameworks run the same random weights (`experiments.torch_musiq.random_flat_params`); one untimed
warm-up call each also checks that their logits agree. Reported: seconds per image at batch 1,
images/s at batch 1 and 8 (median of R timed calls), achieved GFLOP/s (XLA's FLOP count for the
compiled program divided by each framework's time) and a float32 2048x2048 matmul ceiling.

Threads: the process is pinned to N CPUs (`os.sched_setaffinity`) before any framework creates its
thread pools, which inherit that affinity. XLA sizes its CPU thread pool from the CPUs the process
may use, so this is what bounds JAX; PyTorch also gets `torch.set_num_threads(N)`, and TensorFlow
(preprocessing only, untimed) the same intra/inter-op limits. Each timed block starts after a short
idle pause so the other framework's workers have stopped spinning. On a machine shared with other
jobs the numbers are noisy: compare ratios from the same run.
"""

import argparse
import os
import pathlib
import statistics
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from experiments import torch_musiq  # pylint: disable=g-import-not-at-top
from mst.data import preprocess  # pylint: disable=g-import-not-at-top
from mst.models import musiq  # pylint: disable=g-import-not-at-top

IMAGE_HW = (768, 1024)
BATCH_SIZES = (1, 8)
MATMUL_SIZE = 2048
# Idle time before each timed block, so the other framework's thread pool has stopped spinning
# (OpenMP and Eigen workers busy-wait for a while after their last task).
SETTLE_S = 1.0
Batch = dict[str, np.ndarray]


def pin_threads(threads: int) -> None:
  """Restricts this process (and every thread it starts later) to `threads` CPUs."""
  cpus = sorted(os.sched_getaffinity(0))
  if threads > len(cpus):
    raise ValueError(f"--threads {threads} but only {len(cpus)} CPUs are available")
  os.sched_setaffinity(0, cpus[:threads])
  torch.set_num_threads(threads)
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(threads)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
  """Median wall time of `repeats` calls of an already warmed-up `fn`."""
  time.sleep(SETTLE_S)
  return statistics.median(_timed(fn) for _ in range(repeats))


def image_batch(batch_size: int) -> Batch:
  """The paper model's input for a random 1024x768 image, repeated `batch_size` times."""
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8)
  features = preprocess.multiscale_patches(tf.constant(image), preprocess.MultiScaleConfig())
  return {k: np.repeat(v.numpy()[None], batch_size, axis=0) for k, v in features.items()}


def jax_runner(flat: dict[str, np.ndarray], batch: Batch) -> tuple[Callable[[], jax.Array], float]:
  """A compiled call of the Flax model on `batch` and its FLOP count from XLA's cost analysis.

  The FLOPs are counted on the model with CPU chunking off: XLA's cost analysis counts a loop body
  once, not once per trip, so the chunked program would be undercounted. The work is the same.
  """
  params = jax.device_put(torch_musiq.nest_flat_params(flat))
  inputs = jax.device_put(batch)
  model = musiq.Musiq(musiq.ModelConfig())
  compiled = jax.jit(model.apply).lower({"params": params}, inputs).compile()
  unchunked = musiq.Musiq(musiq.ModelConfig(chunked_on_cpu=False))
  cost = jax.jit(unchunked.apply).lower({"params": params}, inputs).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older JAX returned a list
  return lambda: compiled({"params": params}, inputs).block_until_ready(), float(cost["flops"])


def torch_runner(flat: dict[str, np.ndarray], batch: Batch) -> Callable[[], torch.Tensor]:
  """A call of the PyTorch reference on `batch` in inference mode."""
  model = torch_musiq.TorchMusiq.from_flat_params(flat)
  inputs = [torch.from_numpy(batch[k]) for k in ("patches", "spatial_idx", "scale_idx", "mask")]

  def run() -> torch.Tensor:
    with torch.inference_mode():
      return model(*inputs)
  return run


def matmul_gflops(repeats: int) -> tuple[float, float]:
  """Best-of-`repeats` float32 square matmul throughput (GFLOP/s) for JAX and PyTorch."""
  flops = 2 * MATMUL_SIZE ** 3
  rng = np.random.default_rng(0)
  a, b = (rng.standard_normal((MATMUL_SIZE, MATMUL_SIZE), np.float32) for _ in range(2))
  ja, jb = jnp.asarray(a), jnp.asarray(b)
  jdot = jax.jit(jnp.dot)
  ta, tb = torch.from_numpy(a), torch.from_numpy(b)

  def best(fn):
    fn()
    time.sleep(SETTLE_S)
    return min(_timed(fn) for _ in range(repeats))
  return (flops / best(lambda: jdot(ja, jb).block_until_ready()) / 1e9,
          flops / best(lambda: torch.mm(ta, tb)) / 1e9)


def _timed(fn: Callable[[], object]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def measure(flat: dict[str, np.ndarray], batch_size: int, repeats: int) -> dict[str, float]:
  """Seconds per call for both frameworks at one batch size, XLA's FLOPs, and the logit gap."""
  batch = image_batch(batch_size)
  run_jax, flops = jax_runner(flat, batch)
  run_torch = torch_runner(flat, batch)
  # The warm-up calls double as the check that both frameworks compute the same network.
  gap = float(np.abs(np.asarray(run_jax()) - run_torch().numpy()).max())
  return {"jax_s": median_seconds(run_jax, repeats), "torch_s": median_seconds(run_torch, repeats),
          "flops": flops, "gap": gap, "tokens": batch["mask"].shape[1]}


def table(results: dict[int, dict[str, float]], ceiling: tuple[float, float]) -> str:
  """The markdown table: rows are metrics, columns JAX, PyTorch and the JAX speed-up."""
  rows = [("| metric | JAX (XLA, jit) | PyTorch (eager) | JAX / PyTorch speed |"),
          ("|---|---:|---:|---:|")]
  one = results[1]
  rows.append(f"| s / image, batch 1 | {one['jax_s']:.3f} | {one['torch_s']:.3f} | "
              f"{one['torch_s'] / one['jax_s']:.2f}x |")
  for size, r in results.items():
    jax_ips, torch_ips = size / r["jax_s"], size / r["torch_s"]
    rows.append(f"| images / s, batch {size} | {jax_ips:.2f} | {torch_ips:.2f} | "
                f"{jax_ips / torch_ips:.2f}x |")
  for size, r in results.items():
    jax_gf, torch_gf = r["flops"] / r["jax_s"] / 1e9, r["flops"] / r["torch_s"] / 1e9
    rows.append(f"| GFLOP/s, batch {size} | {jax_gf:.1f} | {torch_gf:.1f} | "
                f"{jax_gf / torch_gf:.2f}x |")
  rows.append(f"| f32 matmul {MATMUL_SIZE}^2 GFLOP/s (ceiling) | {ceiling[0]:.1f} | "
              f"{ceiling[1]:.1f} | {ceiling[0] / ceiling[1]:.2f}x |")
  return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                      help="CPU threads for both frameworks (default: all available CPUs)")
  parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement")
  args = parser.parse_args(argv)
  pin_threads(args.threads)

  flat = torch_musiq.random_flat_params(seed=0)
  ceiling = matmul_gflops(max(args.repeats, 3))
  results = {size: measure(flat, size, args.repeats) for size in BATCH_SIZES}

  one = results[1]
  print(f"MUSIQ paper model, {one['tokens']} tokens per {IMAGE_HW[1]}x{IMAGE_HW[0]} image, "
        f"{one['flops'] / 1e9:.1f} GFLOP per image (XLA cost analysis); {args.threads} threads, "
        f"median of {args.repeats}; jax {jax.__version__}, torch {torch.__version__}; "
        f"max |logit gap| {max(r['gap'] for r in results.values()):.1e}\n")
  print(table(results, ceiling))


if __name__ == "__main__":
  main()
