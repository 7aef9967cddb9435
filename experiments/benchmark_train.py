"""CPU training benchmark of the paper MUSIQ model: mst's train step against PyTorch, the input
pipeline's rate, and what skipping padding (real-patch encoding, sequence packing) gains.

    python experiments/benchmark_train.py [--threads N] [--repeats R] [--batch B]
        [--part all/step/pipeline/packing] [--model paper/small] [--packing-batch B]
        [--mixes koniq spaq ava]

1. Train step (forward, L1 loss, backward, SGD with momentum) of the paper model (P=32, G=10,
   D=384, 14 layers, scales 224, 384 + the native image cut to l=512: 705 tokens) on a batch of
   1024x768 images: seconds per step, images/s and GFLOP/s (XLA's count for the jitted step) for
   mst (JAX) and for a straightforward PyTorch implementation of the same network and step.
2. Input pipeline (`--part pipeline`): `mst.data.pipeline.train_dataset` with the flip alone
   (the paper's fine-tuning), 3 scales and l=512, today's path (JPEG decode, flip, 3-scale
   preprocessing, batching) side by side with the prepared one (`config.data.prepared_dir`,
   mst.data.prepared: stored decode and resizes read back, flipped, patched, batched), on KonIQ-like
   1024x768 and AVA-like JPEGs made from scikit-image's photographs: images/s with tf.data held to
   one core and with all cores, in interleaved rounds, plus the one-time preparation rate and the
   stored bytes per image. Then the host cores one chip needs to be fed at 40% of its dense bf16
   peak (mst.runtime.devices' table) with the paper model, for TPU v4, v5e, v5p, H100 and H200,
   with today's path and the prepared one, next to the host vCPUs each chip comes with.
3. Training without padding (`--part packing`): on KonIQ-like (1024x768), SPAQ-like (shorter side
   512, both orientations) and AVA-like (about 500x333, both orientations) size mixes, the
   useful-token fraction (real patches and CLS tokens over all positions) and train images/s of
   the padded path encoding every patch (as before), the padded path encoding the real patches
   only (the default now), and packed rows (`config.data.packing`), side by side with ratios.
   `--model small` (4 layers, 128 wide, the conv patch encoder) and `--mixes ava` give a quick
   look.
Threads are pinned as in experiments/benchmark.py, and the paths compared in a table are timed in
interleaved rounds (each once per round, in a rotating order); compare ratios from the same run.
"""

import argparse
import csv
import math
import os
import sys
import tempfile
import time
from typing import Callable

import jax
import numpy as np
import optax
import tensorflow as tf
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import benchmark  # pylint: disable=g-import-not-at-top
from experiments import torch_musiq  # pylint: disable=g-import-not-at-top
import mst.data.datasets  # pylint: disable=g-import-not-at-top
from mst.data import packing  # pylint: disable=g-import-not-at-top
from mst.data import pipeline  # pylint: disable=g-import-not-at-top
from mst.data import multiscale  # pylint: disable=g-import-not-at-top
from mst.data import prepared  # pylint: disable=g-import-not-at-top
from mst.data import preprocess  # pylint: disable=g-import-not-at-top
from mst.runtime import devices  # pylint: disable=g-import-not-at-top
from mst.training import trainer  # pylint: disable=g-import-not-at-top
from mst.models import musiq  # pylint: disable=g-import-not-at-top

PP = multiscale.MultiScaleConfig(max_seq_len_from_original_res=512)
LEARNING_RATE, MOMENTUM = 1e-4, 0.9
# (height, width) of the images of each mix, drawn uniformly.
SIZE_MIXES = {
    "koniq": ("KonIQ-like 1024x768", ((768, 1024),)),
    "spaq": ("SPAQ-like 512x683, 683x512", ((512, 683), (683, 512))),
    "ava": ("AVA-like 500x333, 333x500, 500x375, 375x500",
            ((333, 500), (500, 333), (375, 500), (500, 375))),
}
MODELS = {"paper": musiq.ModelConfig(),
          "small": musiq.ModelConfig(hidden_size=128, num_layers=4, num_heads=4, mlp_dim=384,
                                     patch_encoder="conv"),
          # Checks that the table comes out, in seconds; its rates say little.
          "tiny": musiq.ModelConfig(hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64,
                                    patch_encoder="linear")}


def train_batch(batch_size: int) -> dict[str, np.ndarray]:
  """A random 1024x768 image at training length (49 + 144 + 512 tokens), repeated."""
  image = np.random.default_rng(0).integers(0, 256, (768, 1024, 3), dtype=np.uint8)
  features = preprocess.multiscale_patches(tf.constant(image), PP)
  batch = {k: np.repeat(v.numpy()[None], batch_size, axis=0) for k, v in features.items()}
  batch["mos"] = np.linspace(0.2, 0.8, batch_size, dtype=np.float32)
  return batch


def sgd_l1_step(model_cfg: musiq.ModelConfig, params):
  """The jitted mst train step (SGD with momentum, L1, donated state) and its initial state."""
  model = musiq.Musiq(model_cfg)
  tx = optax.sgd(LEARNING_RATE, MOMENTUM)
  state = trainer.TrainState(jax.numpy.zeros((), jax.numpy.int32), params, tx.init(params))
  loss_fn = lambda logits, b: jax.numpy.mean(jax.numpy.abs(logits[:, 0] - b["mos"]))
  step = jax.jit(lambda s, b, r: trainer.train_step(s, b, r, model=model, tx=tx, loss_fn=loss_fn,
                                                  schedule=lambda _: LEARNING_RATE),
                 donate_argnums=0)
  return step, state


def jax_step(flat, batch):
  """A compiled mst train step (donated state) and its FLOPs."""
  step, state = sgd_l1_step(musiq.ModelConfig(),
                            jax.device_put(torch_musiq.nest_flat_params(flat)))
  batch, rng = jax.device_put(batch), jax.random.key(0)
  compiled = step.lower(state, batch, rng).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  holder = {"state": state}

  def run():
    holder["state"], metrics = compiled(holder["state"], batch, rng)
    return jax.block_until_ready(metrics.loss.total)
  return run, float(cost["flops"])


def torch_step(flat, batch):
  """The same step in PyTorch: forward, L1, backward, SGD with momentum."""
  model = torch_musiq.TorchMusiq.from_flat_params(flat)
  model.requires_grad_(True)  # the reference network is built for inference
  optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
  inputs = [torch.from_numpy(batch[k]) for k in ("patches", "spatial_idx", "scale_idx", "mask")]
  target = torch.from_numpy(batch["mos"])

  def run():
    optimizer.zero_grad()
    loss = (model(*inputs)[:, 0] - target).abs().mean()
    loss.backward()
    optimizer.step()
    return loss
  return run


def mix_batch(sizes, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A padded training batch (l = 512) of random images whose sizes are drawn from `sizes`."""
  rng = np.random.default_rng(seed)
  examples = []
  for index in rng.integers(0, len(sizes), batch_size):
    image = rng.integers(0, 256, sizes[index] + (3,), dtype=np.uint8)
    examples.append(preprocess.multiscale_patches(tf.constant(image), PP))
  batch = {k: np.stack([e[k].numpy() for e in examples]) for k in examples[0]}
  batch["mos"] = np.linspace(0.2, 0.8, batch_size, dtype=np.float32)
  return batch


def step_runner(model_cfg: musiq.ModelConfig, batch) -> Callable[[], object]:
  """A compiled, warmed-up train step (SGD with momentum, L1) of `model_cfg` on `batch`."""
  step, state = sgd_l1_step(model_cfg, musiq.init_params(model_cfg, jax.random.key(0)))
  batch, rng = jax.device_put(batch), jax.random.key(0)
  holder = {"state": state}

  def run():
    holder["state"], metrics = step(holder["state"], batch, rng)
    return jax.block_until_ready(metrics.loss.total)
  run()
  return run


def packing_report(model_name: str, batch_size: int, repeats: int,
                   mixes: tuple[str, ...] = tuple(SIZE_MIXES)) -> None:
  """Prints the markdown table of section 3 (a row per mix as it is measured): useful-token
  fraction and train images/s."""
  model_cfg = MODELS[model_name]
  longest = PP.seq_len(1, 1) + 1
  print(f"Train step of the {model_name} model, batch {batch_size}, l=512 ({longest} positions "
        f"per padded row with CLS), one device, median of {repeats}\n\n"
        "| size mix | tokens / image | packed rows | useful: padded | useful: packed | "
        "img/s padded, all patches | img/s padded, real patches | img/s packed | "
        "packed / padded all | packed / padded real |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
  for name, sizes in (SIZE_MIXES[mix] for mix in mixes):
    batch = mix_batch(sizes, batch_size)
    draws = np.random.default_rng(1).integers(0, len(sizes), packing.SIZE_SAMPLE)
    sample = [packing.image_tokens(*sizes[i], PP) for i in draws]
    length = packing.choose_row_length(sample, batch_size, longest)
    packed = packing.packed_layout(batch, 1, length)
    layouts = {"all": batch, "real": packing.padded_layout(batch, 1), "packed": packed}
    seconds = benchmark.interleaved_medians(
        {name: step_runner(model_cfg, laid) for name, laid in layouts.items()}, repeats)
    rates = [batch_size / seconds[name] for name in layouts]
    tokens = float(np.mean(batch["mask"].sum(axis=1) + 1))
    print(
        f"| {name} | {tokens:.0f} | {packed['mask'].shape[0]} x {length} | "
        f"{packing.useful_fraction(batch):.1%} | {packing.useful_fraction(packed):.1%} | "
        f"{rates[0]:.2f} | {rates[1]:.2f} | {rates[2]:.2f} | {rates[2] / rates[0]:.2f}x | "
        f"{rates[2] / rates[1]:.2f}x |", flush=True)


def jpeg_dataset(folder: str, count: int, sizes=((768, 1024),)):
  """`count` JPEGs from scikit-image's photographs, as a prepared `custom` dataset; image i is
  sizes[i % len(sizes)] (height, width)."""
  from mst.data.datasets import demo  # pylint: disable=g-import-not-at-top
  names = [n for n in demo.SOURCES if not n.endswith(("page.png", "coins.png"))]
  rows = []
  for i in range(count):
    height, width = sizes[i % len(sizes)]
    photo = demo.source_photo(names[i % len(names)]).convert("RGB").resize((width, height))
    photo.save(os.path.join(folder, f"{i}.jpg"), quality=90)
    rows.append((f"{i}.jpg", 50.0, "train"))
  with open(os.path.join(folder, "labels.csv"), "w", newline="") as f:
    csv.writer(f).writerows([("image", "mos", "split")] + rows)
  return mst.data.datasets.build("custom", os.path.join(folder, "tfds"),
                                 csv=os.path.join(folder, "labels.csv"))


def _pin_process(cpus: list[int]) -> None:
  """Every thread of this process, and those they start later, on `cpus` only."""
  for task in os.listdir("/proc/self/task"):
    try:
      os.sched_setaffinity(int(task), cpus)
    except OSError:  # a thread that has ended meanwhile
      pass


def pipeline_images_per_second(builder, threads: int, images: int, batch_size: int,
                               prepared_split=None) -> float:
  """Images/s of `pipeline.train_dataset` (flip only, l=512) on `threads` cores (the whole
  process: tf.data's threads, the batching and the copy to NumPy), after its first batch; with
  `prepared_split`, the prepared pipeline."""
  cpus = sorted(os.sched_getaffinity(0))
  _pin_process(cpus[:threads])
  try:
    data = pipeline.train_dataset(builder, "train", batch_size=batch_size, pp_config=PP,
                                  shuffle_buffer=64, prepared=prepared_split)
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    iterator = data.with_options(options).as_numpy_iterator()
    next(iterator)  # start-up
    start = time.perf_counter()
    for _ in range(images // batch_size):
      next(iterator)
    return images // batch_size * batch_size / (time.perf_counter() - start)
  finally:
    _pin_process(cpus)


def pipeline_rates(builder, prepared_split, threads: int, images: int, repeats: int
                   ) -> dict[tuple[str, int], float]:
  """Median images/s of each (path, cores) over `repeats` rounds, each measuring every one once
  in a rotating order (a fresh iterator each time, so no idle one fills its buffers meanwhile)."""
  runs = {(path, cores): (lambda cores=cores, split=split: pipeline_images_per_second(
      builder, cores, images, 8, split))
          for path, split in (("today", None), ("prepared", prepared_split))
          for cores in sorted({1, threads})}
  rates = {name: [] for name in runs}
  for round_ in range(repeats):
    names = list(runs)[round_ % len(runs):] + list(runs)[:round_ % len(runs)]
    for name in names:
      time.sleep(benchmark.SETTLE_S)
      rates[name].append(runs[name]())
  return {name: float(np.median(values)) for name, values in rates.items()}


def pipeline_report(threads: int, images: int, repeats: int) -> dict[str, dict]:
  """Prints section 2's table, a row per size mix and path; returns the rates by mix."""
  print(f"Input pipeline, flip only, 3 scales, l=512, batches of 8: images/s after the first "
        f"batch, median of {repeats} interleaved rounds of {images} images; the whole process on "
        f"1 and on {threads} cores. Today's batches hold float32 patches, the prepared ones "
        f"float16 (widened on the device)\n\n"
        "| size mix | path | 1 core | all cores | prepared / today, 1 core | prepare once, "
        "images/s | stored MB / image |\n|---|---|---:|---:|---:|---:|---:|", flush=True)
  results = {}
  for mix in ("koniq", "ava"):
    name, sizes = SIZE_MIXES[mix]
    with tempfile.TemporaryDirectory() as folder:
      builder = jpeg_dataset(folder, 32, sizes)
      start = time.perf_counter()
      split = prepared.prepare(builder, "train", PP, os.path.join(folder, "prepared"))
      prepare_rate = 32 / (time.perf_counter() - start)
      stored = sum(tf.io.gfile.stat(os.path.join(split.folder, f)).length
                   for f in tf.io.gfile.listdir(split.folder) if f.endswith(".bin")) / 32 / 1e6
      rates = pipeline_rates(builder, split, threads, images, repeats)
    today = (rates["today", 1], rates["today", threads])
    new = (rates["prepared", 1], rates["prepared", threads])
    print(f"| {name} | today (decode every epoch) | {today[0]:.1f} | {today[1]:.1f} | | | |")
    print(f"| {name} | prepared (`data.prepared_dir`) | {new[0]:.1f} | {new[1]:.1f} | "
          f"{new[0] / today[0]:.2f}x | {prepare_rate:.1f} | {stored:.2f} |", flush=True)
    results[mix] = {"today": today[0], "prepared": new[0]}
  return results


# The accelerators of the cores-per-chip table: (name, a device kind mst.runtime.devices knows,
# host vCPUs per chip and the machine they come from: Google Cloud's machine-type pages).
CHIPS = (
    ("TPU v4", "TPU v4", 240 / 4, "v4 host: 240 vCPUs, 4 chips"),
    ("TPU v5e", "TPU v5 lite", 224 / 8, "v5litepod-8 host: 224 vCPUs, 8 chips"),
    ("TPU v5p", "TPU v5", 208 / 4, "v5p host: 208 vCPUs, 4 chips"),
    ("H100", "NVIDIA H100 80GB HBM3", 208 / 8, "a3-highgpu-8g: 208 vCPUs, 8 GPUs"),
    ("H200", "NVIDIA H200", 224 / 8, "a3-ultragpu-8g: 224 vCPUs, 8 GPUs"),
)
# XLA's count of one paper-model train step per image at l=512 (705 tokens; experiments/flops.py).
TRAIN_GFLOP_PER_IMAGE = 172.6
UTILISATION = 0.4


def cores_per_chip_report(results: dict[str, dict]) -> None:
  """Prints the table of section 4 from the one-core rates of `pipeline_report`."""
  print(f"\nHost cores one chip needs: images/s at {UTILISATION:.0%} of the dense bf16 peak "
        f"(mst.runtime.devices: vendors' datasheets) with the paper model "
        f"({TRAIN_GFLOP_PER_IMAGE} GFLOP per image per train step), over the one-core rates "
        "above, rounded up (one core here = one vCPU; the training loop's own host work, "
        "laying out batches and copying them to the device, comes on top)\n\n"
        "| chip | bf16 peak TFLOP/s | images/s at 40% | host vCPUs per chip | "
        "KonIQ-like: today | KonIQ-like: prepared | AVA-like: today | AVA-like: prepared |\n"
        "|---|---:|---:|---|---:|---:|---:|---:|")
  for name, kind, vcpus, host in CHIPS:
    peak = devices.peak_tflops(kind)
    rate = peak * 1e12 * UTILISATION / (TRAIN_GFLOP_PER_IMAGE * 1e9)
    need = [rate / results[mix][path] for mix in ("koniq", "ava")
            for path in ("today", "prepared")]
    print(f"| {name} | {peak:.0f} | {rate:,.0f} | {vcpus:.0f} ({host}) | "
          + " | ".join(str(math.ceil(n)) for n in need) + " |")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--batch", type=int, default=4, help="train batch size")
  parser.add_argument("--images", type=int, default=96, help="images through the pipeline")
  parser.add_argument("--part", choices=("all", "step", "pipeline", "packing"), default="all")
  parser.add_argument("--model", choices=tuple(MODELS), default="paper",
                      help="the model of the packing part (tiny: a quick check of the table)")
  parser.add_argument("--packing-batch", type=int, default=8,
                      help="train batch size of the packing part")
  parser.add_argument("--mixes", nargs="+", choices=tuple(SIZE_MIXES), default=tuple(SIZE_MIXES),
                      help="the size mixes of the packing part")
  args = parser.parse_args(argv)
  benchmark.pin_threads(args.threads)
  if args.part in ("all", "step", "pipeline"):
    step_and_pipeline(args)
  if args.part in ("all", "packing"):
    packing_report(args.model, args.packing_batch, args.repeats, tuple(args.mixes))


def step_and_pipeline(args) -> None:
  """Sections 1 and 2 (`--part step` prints only the first, `pipeline` only the second)."""
  if args.part in ("all", "step"):
    flat = torch_musiq.random_flat_params(seed=0)
    batch = train_batch(args.batch)
    run_jax, flops = jax_step(flat, batch)
    run_torch = torch_step(flat, batch)
    run_jax()
    run_torch()
    seconds = benchmark.interleaved_medians({"jax": run_jax, "torch": run_torch}, args.repeats)
    jax_s, torch_s = seconds["jax"], seconds["torch"]
    print(f"MUSIQ paper model train step, batch {args.batch} x {batch['mask'].shape[1]} tokens "
          f"(l=512), {flops / 1e9:.0f} GFLOP per step (XLA); {args.threads} threads, median of "
          f"{args.repeats}; jax {jax.__version__}, torch {torch.__version__}\n")
    print("| train step | mst (JAX) | PyTorch | JAX / PyTorch speed |\n|---|---:|---:|---:|")
    print(f"| s / step | {jax_s:.2f} | {torch_s:.2f} | {torch_s / jax_s:.2f}x |")
    print(f"| images / s | {args.batch / jax_s:.2f} | {args.batch / torch_s:.2f} | "
          f"{torch_s / jax_s:.2f}x |")
    print(f"| GFLOP/s | {flops / jax_s / 1e9:.1f} | {flops / torch_s / 1e9:.1f} | "
          f"{torch_s / jax_s:.2f}x |\n")
  if args.part in ("all", "pipeline"):
    cores_per_chip_report(pipeline_report(args.threads, args.images, args.repeats))


if __name__ == "__main__":
  main()
