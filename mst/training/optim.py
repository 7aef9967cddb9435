"""The optimizer and learning-rate schedule of `config.optim` (typed: `OptimConfig`), as optax
transformations.

The update of one call is: clip the gradient's global norm -> sgd / adam / adamw with the
schedule -> per-parameter learning-rate multipliers; with `grad_accum_steps` = k > 1 the whole
chain is wrapped in `optax.MultiSteps`, which averages k calls' gradients and updates on every k-th
call (parameters stay put in between). So k batches of `train.batch_size` make one update of an
effective batch of k * batch_size.

Steps: `total_steps` and `warmup_steps` count training steps (calls to `update`). With k > 1 an
update at calls u*k .. u*k+k-1 uses the schedule's value at step u*k, and `make_schedule` returns
that same step-quantised value, so what a trainer logs is what was applied.

Weight decay (adamw: decoupled, scaled by the learning rate as in optax and the original ViT
code; sgd: L2 added to the gradient) applies to kernels only: parameters named `kernel`. That
excludes biases (the attention's are 2-D), LayerNorm / GroupNorm scales, and the spatial, scale
and CLS embedding tables, as is common practice for Transformers.
"""

import dataclasses
import re
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import optax

Params = Any
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "linear", "constant")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """`config.optim`, checked: the optimizer and schedule names, adam without weight decay, and
  the learning-rate multiplier patterns (ranges are checked where the config is resolved). No
  defaults: mst.config.defaults holds them."""
  name: str
  learning_rate: float
  momentum: float
  nesterov: bool
  b1: float
  b2: float
  weight_decay: float
  schedule: str
  warmup_steps: int
  end_learning_rate_factor: float
  grad_clip_norm: float
  grad_accum_steps: int
  lr_multipliers: tuple[tuple[str, float], ...]

  def __post_init__(self):
    if self.name not in OPTIMIZERS:
      raise ValueError(f"optim.name={self.name!r} is not one of {OPTIMIZERS}")
    if self.schedule not in SCHEDULES:
      raise ValueError(f"optim.schedule={self.schedule!r} is not one of {SCHEDULES}")
    if self.name == "adam" and self.weight_decay:
      raise ValueError("optim.name='adam' has no weight decay: use 'adamw'")
    parsed = parse_lr_multipliers(self.lr_multipliers)
    object.__setattr__(self, "lr_multipliers",
                       tuple((pattern.pattern, value) for pattern, value in parsed))


def _base_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 over `warmup_steps`, then cosine / linear / constant to the end."""
  peak = float(cfg.learning_rate)
  warmup = int(cfg.warmup_steps)
  if warmup < 0 or (warmup and warmup >= total_steps):
    raise ValueError(f"optim.warmup_steps={warmup} must be in [0, total steps = {total_steps})")
  decay_steps = max(total_steps - warmup, 1)
  end = peak * float(cfg.end_learning_rate_factor)
  if cfg.schedule == "cosine":
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.end_learning_rate_factor)
  elif cfg.schedule == "linear":
    decay = optax.linear_schedule(peak, end, decay_steps)
  else:
    decay = optax.constant_schedule(peak)
  if not warmup:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
  """The learning rate at each training step (0-based) of a `total_steps` run.

  With grad_accum_steps = k the value is constant over each window of k steps: the value the
  update that closes the window applies.
  """
  base = _base_schedule(cfg, total_steps)
  k = int(cfg.grad_accum_steps)
  if k == 1:
    return base
  return lambda step: base((jnp.asarray(step) // k) * k)


def path_name(path: tuple) -> str:
  """'/'-joined names of a pytree path: ('Transformer', 'cls') -> 'Transformer/cls'."""
  parts = []
  for key in path:
    for attribute in ("key", "name", "idx"):
      if hasattr(key, attribute):
        parts.append(str(getattr(key, attribute)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def parse_lr_multipliers(spec: Mapping[str, float] | Iterable[tuple[str, float]]
                         ) -> list[tuple[re.Pattern, float]]:
  """(compiled regex, multiplier) pairs from a mapping or a sequence of pairs, in order."""
  pairs = list(spec.items()) if hasattr(spec, "items") else list(spec)
  parsed = []
  for pair in pairs:
    if len(pair) != 2 or not isinstance(pair[0], str):
      raise ValueError(f"optim.lr_multipliers entries are (regex, multiplier) pairs, got {pair!r}")
    try:
      pattern = re.compile(pair[0])
    except re.error as e:
      raise ValueError(f"optim.lr_multipliers: bad regex {pair[0]!r}: {e}") from None
    parsed.append((pattern, float(pair[1])))
  return parsed


def lr_multiplier_tree(params: Params, spec) -> Params:
  """A float per parameter: the multiplier of the first pattern that matches (`re.search`) its
  '/'-joined path, else 1. A pattern that matches no parameter at all raises ValueError (a typo
  would otherwise leave every learning rate unchanged without a word)."""
  parsed = parse_lr_multipliers(spec)
  used = [False] * len(parsed)

  def multiplier(path, _):
    name = path_name(path)
    matches = [i for i, (pattern, _) in enumerate(parsed) if pattern.search(name)]
    for i in matches:
      used[i] = True
    return parsed[matches[0]][1] if matches else 1.0

  tree = jax.tree_util.tree_map_with_path(multiplier, params)
  unused = [parsed[i][0].pattern for i in range(len(parsed)) if not used[i]]
  if unused:
    names = [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    raise ValueError(f"optim.lr_multipliers patterns {unused} match no parameter; all patterns: "
                     f"{[p.pattern for p, _ in parsed]}; parameters look like {names[:5]}")
  return tree


def scale_by_lr_multipliers(spec) -> optax.GradientTransformation:
  """Multiplies each parameter's update by its multiplier (see `lr_multiplier_tree`).

  Scaling the final update is exactly scaling that parameter's learning rate (for adamw the
  decoupled decay too). The patterns are checked when the state is initialised.
  """
  if not parse_lr_multipliers(spec):
    return optax.identity()

  def init_fn(params):
    lr_multiplier_tree(params, spec)
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    tree = lr_multiplier_tree(updates, spec)
    return jax.tree.map(lambda u, m: u if m == 1.0 else u * jnp.asarray(m, u.dtype),
                        updates, tree), state

  return optax.GradientTransformation(init_fn, update_fn)


def decay_mask(params: Params) -> Params:
  """True for the parameters weight decay applies to: those named `kernel`."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: path_name(path).rsplit("/", 1)[-1] == "kernel", params)


def _optimizer(cfg: OptimConfig, learning_rate: optax.Schedule
               ) -> optax.GradientTransformation:
  """sgd (momentum, nesterov, L2 on kernels), adam, or adamw (decoupled decay on kernels)."""
  weight_decay = float(cfg.weight_decay)
  if cfg.name == "sgd":
    parts = []
    if weight_decay:
      parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
    parts.append(optax.sgd(learning_rate, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
    return optax.chain(*parts)
  if cfg.name == "adam":
    return optax.adam(learning_rate, b1=cfg.b1, b2=cfg.b2)
  return optax.adamw(learning_rate, b1=cfg.b1, b2=cfg.b2, weight_decay=weight_decay,
                     mask=decay_mask)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
  """The full update of `config.optim` for a run of `total_steps` training steps."""
  k = int(cfg.grad_accum_steps)
  base = _base_schedule(cfg, total_steps)
  # Under MultiSteps the inner count advances once per k steps: update u uses step u * k.
  learning_rate = base if k == 1 else (lambda count: base(count * k))
  parts = []
  if cfg.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(float(cfg.grad_clip_norm)))
  parts.append(_optimizer(cfg, learning_rate))
  parts.append(scale_by_lr_multipliers(cfg.lr_multipliers))
  tx = optax.chain(*parts)
  if k > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=k).gradient_transformation()
  return tx
