"""FLOPs of reproducing the paper, counted by XLA, and the time they take on a given accelerator.

    python experiments/flops.py [--tflops 989] [--utilisation 0.4]

XLA's cost analysis of the jitted train step (forward, L1 or cross-entropy loss, backward, the
optimizer update) of the paper model (P=32, G=10, D=384, 14 layers) on one example at training
length (the 224 and 384 copies plus l = 512 native tokens: 705 tokens; every example is padded to
it), times the images and epochs of each run in the paper, plus one evaluation of the test split at
native resolution. Time = FLOPs / (peak x utilisation): the default peak is an H100 / H200's dense
bf16 989 TFLOP/s; float32 runs at far less.
"""

import argparse
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mst.models import musiq  # pylint: disable=g-import-not-at-top
from mst.training import trainer  # pylint: disable=g-import-not-at-top

TRAIN_TOKENS = 49 + 144 + 512  # the 224 and 384 copies (7x7, 12x12 patches) and l = 512
# (run, classes, training images, epochs, test images, native patches of a typical test image)
RUNS = (
    ("ImageNet pre-training", 1000, 1_281_167, 300, 50_000, 512),
    ("KonIQ-10k", 1, 7_058, 30, 2_015, 768),  # 1024x768: 32 x 24 patches
    ("SPAQ", 1, 8_900, 30, 2_225, 352),  # 512 x 683 after the resize: 16 x 22
    ("AVA", 10, 235_000, 20, 19_928, 176),  # about 500 x 333: 16 x 11
    ("PaQ-2-PiQ", 1, 30_000, 10, 1_827, 660),  # > 640 px, e.g. 640 x 1000: 20 x 33
)


def _batch(tokens: int) -> dict[str, jax.ShapeDtypeStruct]:
  return {"patches": jax.ShapeDtypeStruct((1, tokens, 32 * 32 * 3), jnp.float32),
          "spatial_idx": jax.ShapeDtypeStruct((1, tokens), jnp.int32),
          "scale_idx": jax.ShapeDtypeStruct((1, tokens), jnp.int32),
          "mask": jax.ShapeDtypeStruct((1, tokens), jnp.bool_),
          "mos": jax.ShapeDtypeStruct((1,), jnp.float32)}


def _model(num_classes: int) -> musiq.Musiq:
  head = {1: "score", 10: "distribution"}.get(num_classes, "classification")
  return musiq.Musiq(musiq.ModelConfig(num_classes=num_classes, head=head))


def train_step_flops(num_classes: int) -> float:
  """XLA's FLOPs of one training step on one example of TRAIN_TOKENS tokens."""
  model = _model(num_classes)
  tx = optax.sgd(1e-3, 0.9)
  params = jax.eval_shape(functools.partial(musiq.init_params, model.config), jax.random.key(0))
  state = jax.eval_shape(lambda p: trainer.TrainState(jnp.zeros((), jnp.int32), p, tx.init(p)),
                         params)
  loss_fn = lambda logits, batch: jnp.mean(jnp.abs(logits[:, 0] - batch["mos"]))
  step = functools.partial(trainer.train_step, model=model, tx=tx, loss_fn=loss_fn,
                           schedule=lambda _: 1e-3)
  lowered = jax.jit(step).lower(state, _batch(TRAIN_TOKENS), jax.random.key(0))
  return float(lowered.cost_analysis()["flops"])


def forward_flops(num_classes: int, tokens: int) -> float:
  """XLA's FLOPs of the model on one image of `tokens` tokens (evaluation)."""
  model = _model(num_classes)
  params = jax.eval_shape(functools.partial(musiq.init_params, model.config), jax.random.key(0))
  batch = _batch(tokens)
  del batch["mos"]
  lowered = jax.jit(lambda p, b: model.apply({"params": p}, b)).lower(params, batch)
  return float(lowered.cost_analysis()["flops"])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tflops", type=float, default=989.0, help="accelerator peak, TFLOP/s")
  parser.add_argument("--utilisation", type=float, default=0.4, help="fraction of the peak")
  args = parser.parse_args(argv)
  rate = args.tflops * 1e12 * args.utilisation
  print(f"| run | train GFLOP / example | eval GFLOP / image | total PFLOP | hours at "
        f"{args.tflops:g} TFLOP/s x {args.utilisation:g} |")
  print("|---|---:|---:|---:|---:|")
  for name, classes, images, epochs, test_images, native in RUNS:
    train = train_step_flops(classes)
    evaluation = forward_flops(classes, 49 + 144 + native)
    total = train * images * epochs + evaluation * test_images
    print(f"| {name} | {train / 1e9:.1f} | {evaluation / 1e9:.1f} | {total / 1e15:.1f} | "
          f"{total / rate / 3600:.2f} |", flush=True)
  return 0


if __name__ == "__main__":
  np.set_printoptions(precision=3)
  sys.exit(main())
