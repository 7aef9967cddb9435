"""Cross-checks mst's Flax MUSIQ against the independent PyTorch network in experiments/.

Both networks get the same random parameters in the official flat layout and the same batch (with
padded tokens holding arbitrary pixels); their logits must agree to TOLERANCE. A second test shows
the batch and parameters are chosen so that each easy-to-get-wrong fact of the official network (TF
'SAME' padding split, GroupNorm and LayerNorm epsilons, (row, column, channel) flatten order, key
masking, tanh-GELU) moves the logits by more than that tolerance, so the cross-check would see it.
"""

import jax
import numpy as np
import pytest

from mst.models import musiq
from support import NO_TORCH

torch = pytest.importorskip("torch", reason=NO_TORCH)
from experiments import torch_musiq  # noqa: E402  (needs torch, checked just above)

# PyTorch's logits are compared with the optimised programs users run (conftest.py).
pytestmark = pytest.mark.usefixtures("optimized_programs")
TOLERANCE = 1e-4
SMALL = {"num_layers": 2, "hidden": 64, "heads": 4, "mlp": 128, "grid": 5, "num_scales": 2,
         "patch_size": 32}
BATCH, LENGTH = 2, 8


def _flat_params(num_classes: int) -> dict[str, np.ndarray]:
  """Random official-layout parameters of the small model.

  gn_root's scale and bias are shrunk so the bottleneck unit's GroupNorms see small variances, which
  makes their epsilon (1e-4) visible in the logits.
  """
  flat = torch_musiq.random_flat_params(**SMALL, num_classes=num_classes, seed=1)
  flat["gn_root/scale"] *= 0.01
  flat["gn_root/bias"] *= 0.01
  return flat


def _batch() -> dict[str, np.ndarray]:
  """Random tokens; one low-contrast token per image (so gn_root's epsilon 1e-6 matters) and three
  padded tokens in the second image that keep arbitrary pixels and indices (so masking matters)."""
  rng = np.random.default_rng(0)
  patches = rng.uniform(-1.0, 1.0, (BATCH, LENGTH, SMALL["patch_size"] ** 2 * 3))
  patches[:, 1] *= 1e-3
  mask = np.ones((BATCH, LENGTH), bool)
  mask[1, -3:] = False
  return {"patches": patches.astype(np.float32),
          "spatial_idx": rng.integers(0, SMALL["grid"] ** 2, (BATCH, LENGTH)).astype(np.int32),
          "scale_idx": rng.integers(0, SMALL["num_scales"], (BATCH, LENGTH)).astype(np.int32),
          "mask": mask}


def _torch_logits(flat: dict[str, np.ndarray], batch: dict[str, np.ndarray]) -> np.ndarray:
  model = torch_musiq.TorchMusiq.from_flat_params(flat)
  inputs = [torch.from_numpy(batch[k]) for k in ("patches", "spatial_idx", "scale_idx", "mask")]
  with torch.inference_mode():
    return model(*inputs).numpy()


def _model_config(num_classes: int) -> musiq.ModelConfig:
  return musiq.ModelConfig(
      patch_size=SMALL["patch_size"], hidden_size=SMALL["hidden"], num_layers=SMALL["num_layers"],
      num_heads=SMALL["heads"], mlp_dim=SMALL["mlp"], grid_size=SMALL["grid"],
      num_scales=SMALL["num_scales"], num_classes=num_classes,
      head="score" if num_classes == 1 else "distribution")


def _shapes(tree: dict) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return {jax.tree_util.keystr(path): tuple(np.shape(leaf)) for path, leaf in leaves}


def _flax_logits(num_classes: int, flat: dict[str, np.ndarray],
                 batch: dict[str, np.ndarray]) -> np.ndarray:
  """The Flax model's logits with `flat` loaded through the official names."""
  model = musiq.Musiq(_model_config(num_classes))
  params = torch_musiq.nest_flat_params(flat)
  expected = _shapes(jax.eval_shape(model.init, jax.random.key(0), batch)["params"])
  assert _shapes(params) == expected, "Flax parameter names or shapes differ from the official ones"
  return np.asarray(jax.jit(model.apply)({"params": params}, batch))


@pytest.mark.slow
@pytest.mark.parametrize("num_classes", [1, 10])
def test_flax_matches_torch_reference(num_classes):
  flat, batch = _flat_params(num_classes), _batch()
  torch_logits = _torch_logits(flat, batch)
  flax_logits = _flax_logits(num_classes, flat, batch)

  assert flax_logits.shape == (BATCH, num_classes)
  np.testing.assert_allclose(flax_logits, torch_logits, rtol=0, atol=TOLERANCE)
  head = "score" if num_classes == 1 else "distribution"
  np.testing.assert_allclose(
      np.asarray(musiq.scores(flax_logits, head)),
      torch_musiq.score(torch.from_numpy(torch_logits)).numpy(), rtol=0, atol=TOLERANCE)


def test_torch_score_is_the_expected_bin():
  logits = torch.tensor([[0.0, 0.0], [0.0, np.log(3.0)]])
  np.testing.assert_allclose(torch_musiq.score(logits).numpy(), [1.5, 1.75], rtol=1e-6)
  np.testing.assert_allclose(torch_musiq.score(torch.tensor([[2.5]])).numpy(), [2.5])


def test_same_padding_puts_the_odd_pixel_after():
  assert torch_musiq._same_pads(32, 7, 2) == (2, 3)  # conv_root
  assert torch_musiq._same_pads(16, 3, 2) == (0, 1)  # max-pool
  assert torch_musiq._same_pads(8, 3, 1) == (1, 1)  # conv2


def test_random_params_have_the_paper_models_size():
  flat = torch_musiq.random_flat_params()
  assert round(sum(v.size for v in flat.values()) / 1e6, 1) == 27.1


def _swap_same_split(monkeypatch, flat, batch):
  same_pads = torch_musiq._same_pads
  monkeypatch.setattr(torch_musiq, "_same_pads", lambda *args: same_pads(*args)[::-1])
  return flat, batch


def _channel_first_flatten(monkeypatch, flat, batch):
  """Equivalent to flattening the (8, 8, 256) feature map in (channel, row, column) order."""
  del monkeypatch
  kernel = flat["embedding/kernel"]
  size = SMALL["patch_size"] // 4
  reordered = kernel.reshape(size, size, -1, kernel.shape[-1]).transpose(2, 0, 1, 3)
  return {**flat, "embedding/kernel": reordered.reshape(kernel.shape)}, batch


def _no_key_mask(monkeypatch, flat, batch):
  del monkeypatch
  return flat, {**batch, "mask": np.ones_like(batch["mask"])}


def _exact_gelu(monkeypatch, flat, batch):
  gelu = torch.nn.functional.gelu
  monkeypatch.setattr(torch.nn.functional, "gelu", lambda x, approximate="none": gelu(x))
  return flat, batch


def _set(name, value):
  def mutate(monkeypatch, flat, batch):
    monkeypatch.setattr(torch_musiq, name, value)
    return flat, batch
  return mutate


MUTATIONS = {
    "gn_root_eps_1e-4": _set("_GN_ROOT_EPS", 1e-4),
    "gn_unit_eps_1e-6": _set("_GN_UNIT_EPS", 1e-6),
    "layer_norm_eps_1e-5": _set("_LN_EPS", 1e-5),
    "same_padding_odd_pixel_before": _swap_same_split,
    "channel_first_flatten": _channel_first_flatten,
    "padded_keys_not_masked": _no_key_mask,
    "exact_gelu": _exact_gelu,
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_cross_check_would_catch(mutation, monkeypatch):
  flat, batch = _flat_params(10), _batch()
  reference = _torch_logits(flat, batch)
  mutated = _torch_logits(*MUTATIONS[mutation](monkeypatch, flat, batch))
  assert np.abs(mutated - reference).max() > 2 * TOLERANCE
