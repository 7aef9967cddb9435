"""What a user of the paper MUSIQ model waits for, mst (JAX) against PyTorch, in one run.

    python experiments/benchmark.py [--threads N] [--repeats R] [--images N]
    python experiments/benchmark.py --preset gpu [--peak-tflops T]   # see accelerator_benchmark.py

The paper model (P=32, G=10, D=384, 14 layers, 6 heads, MLP 1152, scales 224, 384 + native) with
random weights (`experiments.torch_musiq.random_flat_params`, written as an official-layout .npz)
scores a folder of real JPEGs: scikit-image's photographs, resized and cropped to 1024x768 (49 + 144
+ 768 = 961 tokens each). Rows of the markdown table:
  end to end: seconds per image over the folder (compiled, warm; median of R rounds, each timing
    every path once in a rotating order) of the path `mst-predict` takes
    (`inference.score_files`: decode, preprocess, bucket, model, JSON line) against PyTorch's own
    path (`experiments/torch_pipeline.py`: PIL decode, pyiqa's preprocessing in torch, model);
    mst runs 2 batches at once on CPU (`--concurrent-batches`); other rows show it with
    preprocessing in line (no threads ahead) and with 1 batch at a time;
  model: one image's forward alone (median of R interleaved calls), also as GFLOP/s (XLA's count
    of the FLOPs each framework runs: mst skips all but the CLS token in the last layer) and as a
    fraction of the float32 2048x2048 matmul ceiling of the same framework;
  cold start: wall time of `mst-predict` on one image in a fresh process, with an empty compilation
    cache, and the median of R more runs with the caches the first run filled (compiled and traced
    programs).

Threads: the process is pinned to N CPUs (`os.sched_setaffinity`) before any framework creates its
thread pools, which inherit that affinity. XLA sizes its CPU thread pool from the CPUs the process
may use, so this is what bounds JAX; PyTorch also gets `torch.set_num_threads(N)`, and TensorFlow
(preprocessing only, untimed) the same intra/inter-op limits. Each timed block starts after a short
idle pause so the other framework's workers have stopped spinning. The process uses mst-predict's
glibc malloc settings (`mst.runtime.host_memory`), which speed up both frameworks (PyTorch's forward
by about a quarter). On a machine shared with other jobs the numbers are noisy: compare ratios from
the same run.
"""

import argparse
import io
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from mst.runtime import host_memory  # pylint: disable=g-import-not-at-top

# As in mst-predict, before any thread starts: freed buffers are reused, not faulted in again
# (this helps both frameworks).
host_memory.keep_freed_memory()

# pylint: disable=g-import-not-at-top,g-bad-import-order
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import skimage.data
import tensorflow as tf
import torch

from experiments import accelerator_benchmark  # pylint: disable=g-import-not-at-top
from experiments import torch_musiq  # pylint: disable=g-import-not-at-top
from experiments import torch_pipeline  # pylint: disable=g-import-not-at-top
from mst.scoring import inference  # pylint: disable=g-import-not-at-top
from mst.data import multiscale  # pylint: disable=g-import-not-at-top
from mst.data import preprocess  # pylint: disable=g-import-not-at-top
from mst.models import musiq  # pylint: disable=g-import-not-at-top

IMAGE_HW = (768, 1024)
# Photographs that ship with scikit-image (nothing is downloaded).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
          "retina", "camera", "cat")
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


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int,
                        warm: bool = False) -> dict[str, float]:
  """Median wall time of each already warmed-up run over `repeats` rounds, each timing every run
  once in a rotating order: the first call after another framework's is slower, and the
  machine's own speed drifts, so neither favours one run. With `warm`, each timed call follows
  an untimed one (a single forward right after the idle pause is ~0.1 s slower: thread pools
  wake up)."""
  seconds = {name: [] for name in runs}
  for round_ in range(repeats):
    names = list(runs)[round_ % len(runs):] + list(runs)[:round_ % len(runs)]
    for name in names:
      time.sleep(SETTLE_S)
      if warm:
        runs[name]()
      seconds[name].append(_timed(runs[name]))
  return {name: statistics.median(values) for name, values in seconds.items()}


def image_batch(batch_size: int) -> Batch:
  """The paper model's input for a random 1024x768 image, repeated `batch_size` times."""
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8)
  features = preprocess.multiscale_patches(tf.constant(image), multiscale.MultiScaleConfig())
  return {k: np.repeat(v.numpy()[None], batch_size, axis=0) for k, v in features.items()}


def jax_runner(flat: dict[str, np.ndarray], batch: Batch
               ) -> tuple[Callable[[], jax.Array], float, float]:
  """A compiled call of the Flax model on `batch`, the FLOPs it runs, and the FLOPs of the whole
  network (every token through every layer, as PyTorch runs it), both from XLA's cost analysis.

  The FLOPs are counted on the model with CPU chunking off: XLA's cost analysis counts a loop body
  once, not once per trip, so the chunked program would be undercounted. The work is the same.
  mst's last layer computes the CLS token only; recording the attention weights (the
  `intermediates` collection) makes it compute every token.
  """
  params = jax.device_put(torch_musiq.nest_flat_params(flat))
  inputs = jax.device_put(batch)
  model = musiq.Musiq(musiq.ModelConfig())
  compiled = jax.jit(model.apply).lower({"params": params}, inputs).compile()
  unchunked = musiq.Musiq(musiq.ModelConfig(chunked_on_cpu=False))

  def flops(**kwargs):
    apply = lambda p, x: unchunked.apply(p, x, **kwargs)
    cost = jax.jit(apply).lower({"params": params}, inputs).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older JAX returned a list
    return float(cost["flops"])
  return (lambda: compiled({"params": params}, inputs).block_until_ready(), flops(),
          flops(mutable=["intermediates"]))


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


def measure_model(flat: dict[str, np.ndarray], repeats: int) -> dict[str, float]:
  """Seconds per forward at batch 1 for both frameworks, XLA's FLOPs, and the logit gap."""
  batch = image_batch(1)
  run_jax, flops, network_flops = jax_runner(flat, batch)
  run_torch = torch_runner(flat, batch)
  # The warm-up calls double as the check that both frameworks compute the same network.
  gap = float(np.abs(np.asarray(run_jax()) - run_torch().numpy()).max())
  return {**interleaved_medians({"jax_s": run_jax, "torch_s": run_torch}, repeats, warm=True),
          "flops": flops, "network_flops": network_flops, "gap": gap,
          "tokens": batch["mask"].shape[1]}


def write_photos(folder: pathlib.Path, count: int) -> list[str]:
  """`count` of scikit-image's photographs as 1024x768 JPEGs (resized to cover, centre-cropped)."""
  folder.mkdir(parents=True, exist_ok=True)
  paths = []
  for i, name in enumerate(PHOTOS[:count]):
    pixels = getattr(skimage.data, name)()
    image = Image.fromarray(pixels).convert("RGB")
    scale = max(IMAGE_HW[1] / image.width, IMAGE_HW[0] / image.height)
    image = image.resize((round(image.width * scale), round(image.height * scale)),
                         Image.Resampling.BICUBIC)
    left, top = (image.width - IMAGE_HW[1]) // 2, (image.height - IMAGE_HW[0]) // 2
    path = folder / f"{i:02d}_{name}.jpg"
    image.crop((left, top, left + IMAGE_HW[1], top + IMAGE_HW[0])).save(path, quality=90)
    paths.append(str(path))
  return paths


def end_to_end(checkpoint: str, flat: dict[str, np.ndarray], paths: list[str], repeats: int
               ) -> dict[str, float]:
  """Seconds per image over the whole folder for each path (warmed up on every file): the median
  of `repeats` interleaved rounds."""
  predictor = inference.Predictor.from_checkpoint(checkpoint)
  model = torch_musiq.TorchMusiq.from_flat_params(flat)
  sink = io.StringIO()

  def run_mst(workers=2, concurrent_batches=None):
    for path, result in inference.score_files(predictor, paths, batch_size=1, workers=workers,
                                              concurrent_batches=concurrent_batches):
      print(json.dumps({"image": path, **result}), file=sink)

  def run_torch():
    for path in paths:
      print(json.dumps({"image": path, "score": torch_pipeline.score_file(model, path)}), file=sink)

  runs = {"mst_s": run_mst, "torch_s": run_torch, "inline_s": lambda: run_mst(workers=0),
          "one_batch_s": lambda: run_mst(concurrent_batches=1)}
  for run in runs.values():
    run()
  return {name: seconds / len(paths)
          for name, seconds in interleaved_medians(runs, repeats).items()}


def cold_start(checkpoint: str, image: str, cache: pathlib.Path, repeats: int
               ) -> tuple[float, float]:
  """Wall seconds of `mst-predict` on one image in fresh processes sharing `cache`: the first run
  (empty cache), then the median of `repeats` runs with the cache it filled."""
  env = dict(os.environ, MST_CACHE_DIR=str(cache))
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  command = [sys.executable, "-m", "mst.cli.predict", "--quiet", "--checkpoint", checkpoint, image]

  def run():
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
      raise RuntimeError(f"mst-predict failed: {done.stderr[-2000:]}")
  return _timed(run), statistics.median(_timed(run) for _ in range(repeats))


def table(model: dict, e2e: dict, ceiling: tuple[float, float], cold: tuple[float, float]) -> str:
  """The markdown table: a row per measure, columns mst, PyTorch, the ratio and the target."""
  rows = ["| measure | mst (JAX, jit) | PyTorch | ratio | target |", "|---|---:|---:|---:|---|"]

  def row(name, ours, theirs, ratio, target=""):
    rows.append(f"| {name} | {ours} | {theirs} | {ratio} | {target} |")
  speedup = lambda a, b: f"{b / a:.2f}x"
  row("end to end, s / image (decode, preprocess, model, output)", f"{e2e['mst_s']:.3f}",
      f"{e2e['torch_s']:.3f}", speedup(e2e["mst_s"], e2e["torch_s"]), ">= 2x PyTorch")
  row("end to end, preprocessing in line (no worker threads), s / image",
      f"{e2e['inline_s']:.3f}", f"{e2e['torch_s']:.3f}", speedup(e2e["inline_s"], e2e["torch_s"]))
  row("end to end, one batch at a time (`--concurrent-batches 1`), s / image",
      f"{e2e['one_batch_s']:.3f}", f"{e2e['torch_s']:.3f}",
      speedup(e2e["one_batch_s"], e2e["torch_s"]))
  row("model forward, s / image (batch 1)", f"{model['jax_s']:.3f}", f"{model['torch_s']:.3f}",
      speedup(model["jax_s"], model["torch_s"]))
  jax_gf = model["flops"] / model["jax_s"] / 1e9
  torch_gf = model["network_flops"] / model["torch_s"] / 1e9
  row("model forward, GFLOP/s", f"{jax_gf:.1f}", f"{torch_gf:.1f}", f"{jax_gf / torch_gf:.2f}x")
  row(f"f32 matmul {MATMUL_SIZE}^2, GFLOP/s (ceiling)", f"{ceiling[0]:.1f}", f"{ceiling[1]:.1f}",
      f"{ceiling[0] / ceiling[1]:.2f}x")
  row("model forward / own matmul ceiling", f"{jax_gf / ceiling[0]:.0%}",
      f"{torch_gf / ceiling[1]:.0%}", "", ">= 80%")
  row("cold start, one image, empty compilation cache, s", f"{cold[0]:.1f}", "", "")
  row("cold start, one image, caches filled (median of the later runs), s", f"{cold[1]:.1f}", "",
      "", "< 4 s")
  return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=("cpu", "gpu"), default="cpu",
                      help="cpu: this table; gpu: accelerator_benchmark.py's (images/s, MFU)")
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                      help="CPU threads for both frameworks (default: all available CPUs)")
  parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement")
  parser.add_argument("--images", type=int, default=len(PHOTOS),
                      help=f"photos in the end-to-end folder (at most {len(PHOTOS)})")
  parser.add_argument("--peak-tflops", type=float, default=None,
                      help="--preset gpu: the chip's peak TFLOP/s, if its kind is not in the table")
  args = parser.parse_args(argv)
  if args.preset == "gpu":
    accelerator_benchmark.main(args.peak_tflops)
    return
  pin_threads(args.threads)

  flat = torch_musiq.random_flat_params(seed=0)
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    checkpoint = str(tmp / "paper_random.npz")
    np.savez(checkpoint, **flat)
    paths = write_photos(tmp / "photos", args.images)
    cold = cold_start(checkpoint, paths[0], tmp / "cache", args.repeats)
    ceiling = matmul_gflops(max(args.repeats, 3))
    model = measure_model(flat, args.repeats)
    e2e = end_to_end(checkpoint, flat, paths, args.repeats)

  print(f"MUSIQ paper model, {model['tokens']} tokens per {IMAGE_HW[1]}x{IMAGE_HW[0]} photo, "
        f"{model['network_flops'] / 1e9:.1f} GFLOP per image, of which mst runs "
        f"{model['flops'] / 1e9:.1f} (XLA cost analysis); {len(paths)} JPEGs; "
        f"{args.threads} threads, median of {args.repeats}; jax {jax.__version__}, "
        f"torch {torch.__version__}; max |logit gap| {model['gap']:.1e}\n")
  print(table(model, e2e, ceiling, cold))


if __name__ == "__main__":
  main()
