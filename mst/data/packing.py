"""Training batches without padding work, laid out on the host in numpy (the model side is
`mst.models.packing`).

A padded training batch [B, N] (resized copies padded to m_k tokens, the native image to l) is
rearranged per device shard (B / shards consecutive images) in one of two ways:

- Padded, with `real_patch_idx` [shards, K]: each shard's real patches first (then some padded
  ones), so the model's patch encoder runs on K patches per shard instead of all of them. K is the
  most real patches of any shard rounded up to an eighth of a shard's positions, so a run compiles
  at most 8 shapes.
- Packed (`config.data.packing`): each shard's images are packed first-fit decreasing into R rows
  of `row_length` tokens; an image takes 1 + its real patches (its CLS slot, then its patches of
  every scale) and is never split across rows. `segment_ids` [rows, T] number the images of a row
  from 1 (0 = empty), `cls_idx` [shards, B / shards] give each image's CLS slot in its shard's
  flattened rows. A shard holds at most B / shards images, which bounds the images per row. R is
  the most rows any shard needs, so shapes vary only with R (a few values per run).

Every step still takes the same B images as the padded path, so the data stream, resumption and
the loss (a mean over the B images) are unchanged. On several hosts, each computes its local
counts and `agree` (the element-wise maximum over hosts) makes K and R the same everywhere.
"""

from typing import Callable, Sequence

import numpy as np

from mst.data import multiscale

PATCH_BUDGET_STEPS = 8
ROW_LENGTH_MULTIPLE = 8
SIZE_SAMPLE = 1024  # training images whose sizes choose the packed row length
TARGET_FILL = 0.96
Batch = dict[str, np.ndarray]
Agree = Callable[[tuple[int, ...]], tuple[int, ...]]
TOKEN_KEYS = ("patches", "spatial_idx", "scale_idx", "mask")


def _same_everywhere(values: tuple[int, ...]) -> tuple[int, ...]:
  """The single-host `agree`."""
  return values


def pack_rows(tokens: Sequence[int], row_length: int) -> list[list[int]]:
  """First-fit decreasing: the image indices in each row, no row longer than `row_length`."""
  rows, free = [], []
  for image in sorted(range(len(tokens)), key=lambda i: (-tokens[i], i)):
    need = int(tokens[image])
    if need > row_length:
      raise ValueError(f"an image of {need} tokens does not fit a packed row of {row_length}")
    for row, space in enumerate(free):
      if need <= space:
        rows[row].append(image)
        free[row] -= need
        break
    else:
      rows.append([image])
      free.append(row_length - need)
  return rows


def image_tokens(height: int, width: int, pp: multiscale.MultiScaleConfig) -> int:
  """Tokens a height x width image takes in a packed row: its CLS slot and its real patches."""
  count = lambda h, w: -(-h // pp.patch_size) * -(-w // pp.patch_size)
  total = 1
  for length in pp.longer_side_lengths:
    ratio = length / max(height, width)
    total += count(max(round(height * ratio), 1), max(round(width * ratio), 1))
  native = pp.max_seq_len_from_original_res
  if native:
    total += min(native, count(height, width)) if native > 0 else count(height, width)
  return total


def fill(tokens: Sequence[int], group_size: int, row_length: int) -> float:
  """Useful fraction of the rows when groups of `group_size` images are packed."""
  groups = [tokens[i:i + group_size] for i in range(0, len(tokens), group_size)]
  rows = sum(len(pack_rows(group, row_length)) for group in groups)
  return sum(tokens) / (rows * row_length)


def choose_row_length(tokens: Sequence[int], group_size: int, shortest: int) -> int:
  """The shortest row (a multiple of 8, >= `shortest`, the longest image) whose packing of
  `tokens` in groups of `group_size` is >= 96% useful; else, up to 4x `shortest`, the shortest
  within 1% of the best fill.

  Longer rows pack better but cost more attention per token, hence the shortest good one.
  """
  start = -(-shortest // ROW_LENGTH_MULTIPLE) * ROW_LENGTH_MULTIPLE
  lengths = range(start, 4 * start + 1, ROW_LENGTH_MULTIPLE)
  fills = {}
  for length in lengths:
    fills[length] = fill(tokens, group_size, length)
    if fills[length] >= TARGET_FILL:
      return length
  best = max(fills.values())
  return min(length for length in lengths if fills[length] >= best - 0.01)


def patch_budget(most_real: int, shard_positions: int) -> int:
  """Patches each shard encodes: `most_real` rounded up to an eighth of `shard_positions`."""
  step = -(-shard_positions // PATCH_BUDGET_STEPS)
  return min(shard_positions, max(step, -(-most_real // step) * step))


def real_patch_index(mask: np.ndarray, shards: int, budget: int) -> np.ndarray:
  """[shards, budget] positions in each shard's flattened tokens: the real ones first."""
  per_shard = mask.reshape(shards, -1)
  order = np.argsort(~per_shard, axis=1, kind="stable")
  return order[:, :budget].astype(np.int32)


def _most_real(mask: np.ndarray, shards: int) -> int:
  return int(mask.reshape(shards, -1).sum(axis=1).max())


def padded_layout(batch: Batch, shards: int, agree: Agree = _same_everywhere) -> Batch:
  """The padded batch plus `real_patch_idx`, so only (about) its real patches are encoded."""
  mask = batch["mask"]
  (most,) = agree((_most_real(mask, shards),))
  budget = patch_budget(most, mask.size // shards)
  return {**batch, "real_patch_idx": real_patch_index(mask, shards, budget)}


def packed_layout(batch: Batch, shards: int, row_length: int,
                  agree: Agree = _same_everywhere) -> Batch:
  """The batch's images packed into rows of `row_length` tokens, per shard (see the module)."""
  mask = batch["mask"]
  per_shard = mask.shape[0] // shards
  tokens = mask.sum(axis=1) + 1
  layouts = [pack_rows(tokens[s * per_shard:(s + 1) * per_shard], row_length)
             for s in range(shards)]
  rows, most = agree((max(len(layout) for layout in layouts), _most_real(mask, shards)))
  out = {key: np.zeros((shards * rows, row_length) + batch[key].shape[2:], batch[key].dtype)
         for key in TOKEN_KEYS}
  segment_ids = np.zeros((shards * rows, row_length), np.int32)
  cls_idx = np.zeros((shards, per_shard), np.int32)
  for shard, layout in enumerate(layouts):
    for row, members in enumerate(layout):
      at, position = shard * rows + row, 0
      for segment, image in enumerate(members, 1):
        source = shard * per_shard + image
        real = np.flatnonzero(mask[source])
        cls_idx[shard, image] = row * row_length + position
        segment_ids[at, position:position + 1 + real.size] = segment
        for key in TOKEN_KEYS:
          out[key][at, position + 1:position + 1 + real.size] = batch[key][source, real]
        position += 1 + real.size
  budget = patch_budget(most, rows * row_length)
  labels = {key: value for key, value in batch.items() if key not in TOKEN_KEYS}
  return {**labels, **out, "segment_ids": segment_ids, "cls_idx": cls_idx,
          "real_patch_idx": real_patch_index(out["mask"], shards, budget)}


def real_counts(batch: Batch) -> tuple[int, int]:
  """(images, real patch tokens) of a train batch in either layout: one image per `cls_idx` slot
  packed, per row padded; the tokens are the mask's (no padding, no CLS)."""
  images = batch["cls_idx"].size if "cls_idx" in batch else batch["mask"].shape[0]
  return int(images), int(batch["mask"].sum())


def useful_fraction(batch: Batch) -> float:
  """Real tokens (patches and one CLS per image) over all token positions of a train batch."""
  images = batch["cls_idx"].size if "cls_idx" in batch else batch["mask"].shape[0]
  positions = batch["mask"].size + (0 if "cls_idx" in batch else images)
  return (int(batch["mask"].sum()) + images) / positions
