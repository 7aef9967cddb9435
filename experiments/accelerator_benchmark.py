"""`python experiments/benchmark.py --preset gpu`: the paper model on a GPU or TPU.

Prints a markdown table of inference images/s (1024x768 photos: 961 tokens) and train-step images/s
(the paper's training input, l = 512: 49 + 144 + 512 = 705 tokens; SGD with momentum on an MSE
loss), each in float32 and bfloat16, with model FLOP utilisation: XLA's FLOP count of the compiled
program per second over the chip's peak (`PEAK_TFLOPS`, by JAX's device kind, or
`--peak-tflops`). Inputs are random tokens of those shapes: the chip's rate, not the input
pipeline's. Each figure is the median of a few timed calls after a compiling one.

Without an accelerator it says so and runs a small model at a small size on the CPU, so the table's
shape can be checked; those figures say nothing about any accelerator.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mst.models import musiq

# Dense peak TFLOP/s per JAX device kind (substring, first match wins): (bfloat16, float32). For
# NVIDIA the float32 figure is the TF32 tensor-core peak, which XLA's default matmul precision uses.
PEAK_TFLOPS = (
    ("H200", (989.0, 495.0)),
    ("H100 PCIe", (756.0, 378.0)),
    ("H100", (989.0, 495.0)),
    ("A100", (312.0, 156.0)),
    ("L4", (121.0, 60.0)),
    ("TPU v4", (275.0, 275.0)),
    ("TPU v5 lite", (197.0, 197.0)),
    ("TPU v5e", (197.0, 197.0)),
    ("TPU v5p", (459.0, 459.0)),
    ("TPU v5", (459.0, 459.0)),
    ("TPU v6 lite", (918.0, 918.0)),
)
DTYPES = ("float32", "bfloat16")
REPEATS = 5


@dataclasses.dataclass(frozen=True)
class Size:
  """What one preset runs: the model, and the batches of each measurement."""
  model: musiq.ModelConfig
  infer_batch: int
  infer_tokens: int
  train_batch: int
  train_tokens: int


PAPER = Size(musiq.ModelConfig(), infer_batch=64, infer_tokens=961, train_batch=64,
             train_tokens=705)
CPU_FALLBACK = Size(musiq.ModelConfig(hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64,
                                      patch_encoder="linear",
                                      chunked_on_cpu=False),
                    infer_batch=2, infer_tokens=64, train_batch=2, train_tokens=64)


def peak_tflops(device_kind: str) -> tuple[float, float] | None:
  """(bfloat16, float32) dense peak of a device kind, or None for a kind not in the table."""
  for name, peaks in PEAK_TFLOPS:
    if name.lower() in device_kind.lower():
      return peaks
  return None


def random_batch(config: musiq.ModelConfig, batch: int, tokens: int) -> dict[str, jax.Array]:
  rng = np.random.default_rng(0)
  width = config.patch_size ** 2 * 3
  return {"patches": jnp.asarray(rng.uniform(-1, 1, (batch, tokens, width)), jnp.float32),
          "spatial_idx": jnp.asarray(rng.integers(0, config.grid_size ** 2, (batch, tokens)),
                                     jnp.int32),
          "scale_idx": jnp.asarray(rng.integers(0, config.num_scales, (batch, tokens)), jnp.int32),
          "mask": jnp.ones((batch, tokens), bool)}


def _compiled(fn, *args, donate=()):
  compiled = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return compiled, float(cost["flops"])


def _median_seconds(call) -> float:
  jax.block_until_ready(call())  # warm-up
  times = []
  for _ in range(REPEATS):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def inference_rate(size: Size, dtype: str, params) -> tuple[float, float]:
  """(images/s, FLOP/s) of the forward pass at `size.infer_batch`."""
  model = musiq.Musiq(dataclasses.replace(size.model, dtype=dtype))
  batch = random_batch(size.model, size.infer_batch, size.infer_tokens)
  forward = lambda p, b: model.apply({"params": p}, b)
  compiled, flops = _compiled(forward, params, batch)
  seconds = _median_seconds(lambda: compiled(params, batch))
  return size.infer_batch / seconds, flops / seconds


def train_rate(size: Size, dtype: str, params) -> tuple[float, float]:
  """(images/s, FLOP/s) of one SGD step (forward, backward, update) at `size.train_batch`."""
  model = musiq.Musiq(dataclasses.replace(size.model, dtype=dtype))
  batch = random_batch(size.model, size.train_batch, size.train_tokens)
  target = jnp.linspace(0.0, 1.0, size.train_batch)
  optimizer = optax.sgd(1e-3, momentum=0.9)

  def step(state, batch):
    params, opt_state = state
    def loss(p):
      logits = model.apply({"params": p}, batch, train=True)
      return jnp.mean((logits[:, 0].astype(jnp.float32) - target) ** 2)
    grads = jax.grad(loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  state = (params, optimizer.init(params))
  compiled, flops = _compiled(step, state, batch, donate=(0,))
  holder = [jax.tree.map(jnp.copy, state)]

  def call():
    holder[0] = compiled(holder[0], batch)
    return holder[0]
  seconds = _median_seconds(call)
  return size.train_batch / seconds, flops / seconds


def measure(size: Size) -> list[dict]:
  """One row per (measurement, dtype): images/s and achieved TFLOP/s."""
  params = musiq.init_params(size.model, jax.random.key(0))
  rows = []
  for what, rate in (("inference", inference_rate), ("train step", train_rate)):
    for dtype in DTYPES:
      images_per_s, flop_per_s = rate(size, dtype, params)
      rows.append({"what": what, "dtype": dtype, "images_per_s": images_per_s,
                   "tflops": flop_per_s / 1e12})
  return rows


def table(rows: list[dict], peaks: tuple[float, float] | None) -> str:
  """Markdown: measurement, dtype, images/s, achieved TFLOP/s, MFU (n/a without a peak)."""
  lines = ["| measurement | dtype | images / s | TFLOP/s | MFU |", "|---|---|---:|---:|---:|"]
  for row in rows:
    mfu = "n/a"
    if peaks:
      peak = peaks[0] if row["dtype"] == "bfloat16" else peaks[1]
      mfu = f"{row['tflops'] / peak:.1%}"
    lines.append(f"| {row['what']} | {row['dtype']} | {row['images_per_s']:.2f} | "
                 f"{row['tflops']:.3f} | {mfu} |")
  return "\n".join(lines)


def main(peak: float | None = None) -> None:
  """Prints the note on the device, then the table."""
  device = jax.devices()[0]
  on_accelerator = device.platform in ("gpu", "tpu")
  size = PAPER if on_accelerator else CPU_FALLBACK
  peaks = (peak, peak) if peak else peak_tflops(device.device_kind)
  if on_accelerator:
    print(f"{device.device_kind} ({device.platform}); paper model; inference batch "
          f"{size.infer_batch} x {size.infer_tokens} tokens, train batch {size.train_batch} x "
          f"{size.train_tokens} tokens; peak (bf16, f32) TFLOP/s: "
          f"{peaks or 'unknown, give --peak-tflops'}; jax {jax.__version__}\n")
  else:
    print(f"NOTE: no GPU or TPU found (JAX's backend is {device.platform}): a small model at a "
          "small size on the CPU, only to show the table's shape. These figures are not "
          "accelerator figures.\n")
  print(table(measure(size), peaks))
