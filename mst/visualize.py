"""`mst-visualize`: where a MUSIQ model looks in each scale, and what its spatial embedding learned.

Attention rollout (Abnar & Zuidema 2020; the MUSIQ patent's figure 8): per layer, the head-averaged
attention A plus the residual, A' = 0.5 A + 0.5 I with rows renormalised, multiplied through the
layers, A'_L ... A'_1. The CLS token's row says how much each patch token feeds the score; it is
split by scale and drawn over the image at that scale. The HSE grid (the paper's figure 7) shows,
for each of the G x G positions, the cosine similarity of its learned embedding with all others.
The attention weights come from the encoder's `attention_weights` intermediates (sown only when the
`intermediates` collection is mutable, so scoring never materialises them).
"""

import argparse
import dataclasses
import math
import os
import sys
import time
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import matplotlib
from matplotlib import figure
import numpy as np
from PIL import Image
import tensorflow as tf

from mst import checkpoint
from mst import image_io
from mst import predict
from mst import preprocess
from mst.models import musiq

# The rollout holds a T x T matrix per layer: 14 layers x 4096^2 float32 is about 1 GB.
DEFAULT_MAX_TOKENS = 4096
PANEL_INCHES = 4.0  # the height of a panel
PANEL_WIDTHS = (2.8, 12.0)  # inches: room for the panel titles, and a cap for panoramas
DPI = 110
HSE_FILENAME = "hse_similarity.png"


# ---------------------------------------------------------------------------------------------
# Attention rollout.


def attention_weights(intermediates: dict, num_layers: int) -> list[jax.Array]:
  """The sown attention weights [B, heads, T, T] of every layer, first layer first."""
  blocks = intermediates["Transformer"]
  return [blocks[f"encoderblock_{i}"]["SelfAttention_0"]["attention_weights"][0]
          for i in range(num_layers)]


def residual_attention(weights: jax.Array) -> jax.Array:
  """A' = 0.5 * mean over heads + 0.5 * I, rows renormalised: [B, heads, T, T] -> [B, T, T]."""
  mixed = 0.5 * jnp.mean(weights.astype(jnp.float32), axis=1)
  diagonal = jnp.arange(mixed.shape[-1])
  mixed = mixed.at[:, diagonal, diagonal].add(0.5)
  return mixed / jnp.sum(mixed, axis=-1, keepdims=True)


def attention_rollout(attentions: Sequence[jax.Array]) -> jax.Array:
  """The full rollout A'_L ... A'_1 [B, T, T] of per-layer weights given first layer first."""
  rollout = residual_attention(attentions[0])
  for weights in attentions[1:]:
    rollout = jnp.einsum("bts,bsu->btu", residual_attention(weights), rollout)
  return rollout


def cls_rollout(attentions: Sequence[jax.Array]) -> jax.Array:
  """Row 0 (CLS) of `attention_rollout` [B, T], by vector-matrix products from the last layer
  down: O(L T^2) instead of the O(L T^3) of the full product."""
  batch, _, length, _ = attentions[0].shape
  row = jnp.zeros((batch, length), jnp.float32).at[:, 0].set(1.0)
  for weights in reversed(attentions):
    row = jnp.einsum("bt,bts->bs", row, residual_attention(weights))
  return row


def scale_grids(cls_row: np.ndarray, scale_idx: np.ndarray, mask: np.ndarray,
                grid_shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
  """Splits the CLS row of the patch tokens (CLS itself dropped) into one (count_h, count_w) grid
  per scale, real tokens in raster order. Patches cut from the sequence (l > 0) are NaN."""
  grids = []
  for scale, (count_h, count_w) in enumerate(grid_shapes):
    values = cls_row[mask & (scale_idx == scale)]
    if values.size > count_h * count_w:
      raise ValueError(f"scale {scale} has {values.size} tokens, more than its "
                       f"{count_h}x{count_w} patch grid")
    grid = np.full(count_h * count_w, np.nan, np.float32)
    grid[:values.size] = values
    grids.append(grid.reshape(count_h, count_w))
  return grids


@dataclasses.dataclass
class ScaleMap:
  """One panel: the image at one scale and the rollout share of each of its patches."""
  label: str  # "224 px", "native 1024x768"
  image: np.ndarray  # (h, w, 3) uint8, the image at this scale
  attention: np.ndarray  # (count_h, count_w): share of the CLS row per patch, NaN where cut
  pad_top: int  # TF 'SAME' padding of the patch grid, in pixels
  pad_left: int

  @property
  def share(self) -> float:
    return float(np.nansum(self.attention))


def _scale_sizes(height: int, width: int, pp_config: preprocess.MultiScaleConfig
                 ) -> list[tuple[str, int, int]]:
  """(label, h, w) of every scale in sequence order: resized copies ascending, then native."""
  sizes = []
  for length in pp_config.longer_side_lengths:
    rh, rw = preprocess.resized_size(tf.constant(height), tf.constant(width), length)
    sizes.append((f"{length} px", int(rh), int(rw)))
  if pp_config.max_seq_len_from_original_res != 0:
    sizes.append((f"native {width}x{height}", height, width))
  return sizes


class Visualizer:
  """Rollout maps of images under fixed params; compiles once per sequence-length bucket."""

  def __init__(self, params, model_config: musiq.ModelConfig,
               pp_config: preprocess.MultiScaleConfig, score_scale: float = 1.0,
               max_tokens: int = DEFAULT_MAX_TOKENS):
    predict.check_compatible(model_config, pp_config)
    self.params = jax.device_put(params)
    self.model_config, self.pp_config = model_config, pp_config
    self.score_scale, self.max_tokens = score_scale, max_tokens
    model = musiq.Musiq(model_config)

    def forward(params, batch):
      logits, state = model.apply({"params": params}, batch, mutable=["intermediates"])
      weights = attention_weights(state["intermediates"], model_config.num_layers)
      return logits, cls_rollout(weights)

    self._forward = jax.jit(forward)

  def rollout(self, features: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(logits [C], CLS rollout row [N] of the patch tokens) of one preprocessed image."""
    batch = {key: value[None] for key, value in features.items()}
    logits, row = self._forward(self.params, batch)
    return np.asarray(logits[0]), np.asarray(row[0, 1:])

  def attention_maps(self, image: np.ndarray, name: str = "image"
                     ) -> tuple[list[ScaleMap], np.ndarray]:
    """The per-scale maps and the logits of a decoded (H, W, 3) uint8 image (`name` for errors).

    Raises:
      image_io.ImageError: the image makes more than `max_tokens` tokens.
    """
    height, width = image.shape[:2]
    features = predict.bucketed_features(image, self.pp_config, self.max_tokens, name)
    logits, row = self.rollout(features)
    p = self.pp_config.patch_size
    sizes = _scale_sizes(height, width, self.pp_config)
    shapes = [(math.ceil(h / p), math.ceil(w / p)) for _, h, w in sizes]
    grids = scale_grids(row, features["scale_idx"], features["mask"], shapes)
    maps = []
    for (label, h, w), (count_h, count_w), grid in zip(sizes, shapes, grids):
      scaled = image if (h, w) == (height, width) else np.asarray(
          Image.fromarray(image).resize((w, h), Image.Resampling.LANCZOS))
      maps.append(ScaleMap(label, scaled, grid, (count_h * p - h) // 2, (count_w * p - w) // 2))
    return maps, logits

  def describe(self, logits: np.ndarray) -> str:
    """The prediction in words, for a figure title."""
    head = self.model_config.head
    if head == "classification":
      probability = float(np.max(jax.nn.softmax(logits)))
      return f"class {int(np.argmax(logits))} (p = {probability:.2f})"
    score = float(musiq.scores(jnp.asarray(logits[None]), head)[0]) * self.score_scale
    if head == "distribution":
      return f"predicted score {score:.2f} (1-{logits.shape[-1]})"
    return f"predicted score {score:.3g}"


def draw_attention(maps: Sequence[ScaleMap], patch_size: int, title: str, path: str) -> None:
  """One panel per scale, side by side: the image with each patch's rollout share over it."""
  # Placed in inches: the layout engines misplace a two-line suptitle over fixed-aspect panels.
  # Panels of extreme aspect ratios keep a readable cell; the image is centred in it.
  gap, side, top, bottom, bar = 0.3, 0.2, 1.15, 0.95, 0.14
  widths = [float(np.clip(PANEL_INCHES * m.image.shape[1] / m.image.shape[0], *PANEL_WIDTHS))
            for m in maps]
  fig_w = sum(widths) + gap * (len(maps) - 1) + 2 * side
  fig_h = PANEL_INCHES + top + bottom
  fig = figure.Figure(figsize=(fig_w, fig_h), dpi=DPI)
  left = side
  for m, width in zip(maps, widths):
    ax = fig.add_axes((left / fig_w, bottom / fig_h, width / fig_w, PANEL_INCHES / fig_h))
    cax = fig.add_axes(((left + 0.1 * width) / fig_w, (bottom - 0.25 - bar) / fig_h,
                        0.8 * width / fig_w, bar / fig_h))
    left += width + gap
    h, w = m.image.shape[:2]
    count_h, count_w = m.attention.shape
    ax.imshow(m.image, extent=(0, w, h, 0), interpolation="antialiased")
    # Each patch covers its P x P block of the padded grid, shifted by the 'SAME' padding.
    extent = (-m.pad_left, count_w * patch_size - m.pad_left,
              count_h * patch_size - m.pad_top, -m.pad_top)
    heat = ax.imshow(np.ma.masked_invalid(m.attention * 100), extent=extent, cmap="inferno",
                     alpha=0.55, interpolation="nearest", vmin=0)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{m.label}\n{m.share:.0%} of the CLS attention, {count_h}x{count_w} patches",
                 fontsize=10)
    colorbar = fig.colorbar(heat, cax=cax, orientation="horizontal")
    colorbar.set_label("% of the CLS attention per patch", fontsize=8)
    colorbar.ax.tick_params(labelsize=8)
  kept = 1.0 - sum(m.share for m in maps)  # the rollout row sums to one; the rest stays on CLS
  fig.suptitle(f"{title}\nattention rollout from the CLS token, which keeps {kept:.0%} itself",
               y=1 - 0.1 / fig_h, va="top", fontsize=12)
  fig.savefig(path)


# ---------------------------------------------------------------------------------------------
# The hash-based spatial embedding.


def hse_table(params: dict) -> np.ndarray | None:
  """The learned (G*G, D) HSE table, or None for models without one."""
  try:
    return np.asarray(params["Transformer"]["posembed_input"]["pos_embedding"])[0]
  except KeyError:
    return None


def hse_similarity(table: np.ndarray, grid_size: int) -> np.ndarray:
  """Cosine similarities [G, G, G, G]: [i, j] is the map of position (i, j) against all."""
  table = np.asarray(table, np.float64)
  unit = table / np.maximum(np.linalg.norm(table, axis=-1, keepdims=True), 1e-12)
  return (unit @ unit.T).reshape((grid_size,) * 4).astype(np.float32)


def hse_mosaic(similarity: np.ndarray, gap: int = 1) -> np.ndarray:
  """The G x G maps tiled into one image, position (i, j)'s map at tile (i, j); NaN gaps."""
  grid = similarity.shape[0]
  tile = grid + gap
  mosaic = np.full((grid * tile - gap,) * 2, np.nan, np.float32)
  for i in range(grid):
    for j in range(grid):
      mosaic[i * tile:i * tile + grid, j * tile:j * tile + grid] = similarity[i, j]
  return mosaic


def draw_hse(similarity: np.ndarray, path: str) -> None:
  grid = similarity.shape[0]
  fig = figure.Figure(figsize=(7.5, 7), dpi=DPI, layout="constrained")
  ax = fig.subplots()
  cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.3")  # dark gaps between the tiles
  image = ax.imshow(np.ma.masked_invalid(hse_mosaic(similarity)), cmap=cmap, vmin=-1, vmax=1,
                    interpolation="nearest")
  centres = np.arange(grid) * (grid + 1) + (grid - 1) / 2
  ax.set_xticks(centres, [str(j) for j in range(grid)])
  ax.set_yticks(centres, [str(i) for i in range(grid)])
  ax.tick_params(length=0)
  ax.set_xlabel("grid column j")
  ax.set_ylabel("grid row i")
  ax.set_title(f"HSE cosine similarity, {grid}x{grid} grid\n"
               "tile (i, j): position (i, j)'s embedding against every position")
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="cosine similarity")
  fig.savefig(path)


# ---------------------------------------------------------------------------------------------
# The command line.

DESCRIPTION = f"""\
Draw what a MUSIQ checkpoint attends to. For each image, writes <stem>_attention.png to the output
folder: the attention rollout from the CLS token (heads averaged, multiplied through the layers
with the residual) over the image at each scale, one panel per scale, with the predicted score.
Once per run, writes {HSE_FILENAME}: the cosine similarity of the learned hash-based spatial
embedding between every pair of grid positions (models without HSE have none).
Folders are searched recursively for .jpg .jpeg .png .bmp .webp files. Progress and errors go to
stderr, the written file names to stdout. The exit status is 1 if any image failed, 2 for a bad
checkpoint or option."""

EPILOG = """\
examples:
  mst-visualize --checkpoint koniq_ckpt.npz photo.jpg
  mst-visualize --checkpoint workdir/ --output-dir figures/ photos/"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="mst-visualize", description=DESCRIPTION, epilog=EPILOG,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("paths", nargs="+", metavar="IMAGE", help="image files and folders")
  parser.add_argument("--checkpoint", required=True, metavar="PATH",
                      help="an official MUSIQ .npz file or an mst-train workdir (as mst-predict)")
  parser.add_argument("--output-dir", default=".", metavar="DIR",
                      help="where the PNG files go (created if missing; default: here)")
  parser.add_argument("--longer-side-lengths", type=predict.parse_lengths, default=None,
                      metavar="L1,L2",
                      help="longer sides of the resized scales (default: as mst-predict)")
  parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                      help="refuse images that make more tokens than this (the rollout holds "
                           "layers x tokens^2 floats; default %(default)s)")
  parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
  args = parser.parse_args(argv)
  if args.max_tokens < 1:
    parser.error("--max-tokens must be positive")
  return args


def _output_name(path: str, taken: set[str]) -> str:
  """<stem>_attention.png, with _2, _3 ... for a stem already used in this run."""
  stem = os.path.splitext(os.path.basename(path))[0]
  name, count = f"{stem}_attention.png", 1
  while name in taken:
    count += 1
    name = f"{stem}_{count}_attention.png"
  taken.add(name)
  return name


def _log(args: argparse.Namespace, message: str) -> None:
  if not args.quiet:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    loaded = checkpoint.load_for_inference(args.checkpoint,
                                           longer_side_lengths=args.longer_side_lengths)
    visualizer = Visualizer(loaded.params, loaded.model_config, loaded.pp_config,
                            loaded.score_scale, args.max_tokens)
    os.makedirs(args.output_dir, exist_ok=True)
  except (checkpoint.CheckpointError, ValueError, OSError) as e:
    print(f"mst-visualize: {e}", file=sys.stderr)
    return 2
  table = hse_table(loaded.params)
  if table is not None:
    out = os.path.join(args.output_dir, HSE_FILENAME)
    draw_hse(hse_similarity(table, loaded.model_config.grid_size), out)
    print(out, flush=True)
  else:
    _log(args, f"no {HSE_FILENAME}: the model has no hash-based spatial embedding")
  paths, failed = [], False
  for path in args.paths:
    found = image_io.find_images(path)
    if not found:
      print(f"mst-visualize: {path}: no image files in this folder", file=sys.stderr)
      failed = True
    paths.extend(found)
  taken: set[str] = set()
  for index, path in enumerate(paths, 1):
    start = time.perf_counter()
    try:
      maps, logits = visualizer.attention_maps(image_io.read_image(path), path)
    except image_io.ImageError as e:
      print(f"mst-visualize: {e}", file=sys.stderr, flush=True)
      failed = True
      continue
    prediction = visualizer.describe(logits)
    out = os.path.join(args.output_dir, _output_name(path, taken))
    draw_attention(maps, visualizer.pp_config.patch_size,
                   f"{os.path.basename(path)}: {prediction}", out)
    print(out, flush=True)
    _log(args, f"[{index}/{len(paths)}] {path}: {prediction} -> {out} "
               f"({time.perf_counter() - start:.1f} s)")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
