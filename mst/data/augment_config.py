"""What training-time augmentation a run uses (`Augment`), typed and checked, in a module without
TensorFlow: the config's defaults take theirs from it, and a host that scores a workdir without
TensorFlow reads the config (mst.data.augmentation applies it, with TensorFlow ops).
"""

import dataclasses

# The largest RandAugment magnitude M, on its 0-30 scale (mst.data.randaugment).
MAX_MAGNITUDE = 30.0


@dataclasses.dataclass(frozen=True)
class Augment:
  """Training-time augmentation. Fine-tuning uses the flip alone (the paper's setting);
  pre-training adds the crop, RandAugment and mixup.

  Mixup turns the labels into soft targets: the batch carries `dist` (from a class `label`, one-hot
  over `num_classes` of `train_dataset`), so the loss must train on "dist", not "label".
  """
  flip_prob: float = 0.5
  crop: bool = False  # random crop without resizing (pre-training)
  crop_area: tuple[float, float] = (0.08, 1.0)  # fraction of the image area a crop keeps
  crop_aspect: tuple[float, float] = (0.75, 1.333)  # aspect ratio range of a crop
  randaugment_layers: int = 0  # ops per image; 0 = off
  randaugment_magnitude: float = 0  # M on RandAugment's 0-30 scale (mst.data.randaugment)
  mixup_alpha: float = 0.0  # lambda ~ Beta(alpha, alpha) per batch; 0 = off

  def __post_init__(self):
    if not 0.0 <= self.flip_prob <= 1.0:
      raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
    if not 0.0 < self.crop_area[0] <= self.crop_area[1] <= 1.0:
      raise ValueError(f"crop_area must be 0 < low <= high <= 1, got {self.crop_area}")
    if int(self.randaugment_layers) != self.randaugment_layers or self.randaugment_layers < 0:
      raise ValueError(f"randaugment_layers must be an integer >= 0, got "
                       f"{self.randaugment_layers}")
    if not 0.0 <= self.randaugment_magnitude <= MAX_MAGNITUDE:
      raise ValueError(f"randaugment_magnitude must be in [0, {MAX_MAGNITUDE}], got "
                       f"{self.randaugment_magnitude}")
    if not self.mixup_alpha >= 0.0:
      raise ValueError(f"mixup_alpha must be >= 0 (0 = off), got {self.mixup_alpha}")
