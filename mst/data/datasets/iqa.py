"""What the builders of the IQA papers' evaluation sets (`livec`, `kadid10k`, `tid2013`, `live`,
`csiq`) share: their splits, the seeded split by reference image, the `split_seed` config and
readers for their label files that fail naming the file and what is wrong with it.

Splits: `full` holds every rated image (the cross-dataset protocol: train elsewhere, test on all
of it); `train` and `test` are a seeded 80/20 split of the same images (`common.seeded_split` of
the reference ids for the synthetic sets, so no reference's content is in both, and of the image
names for LIVE Challenge), for training a checkpoint on the set itself. `full` stores the images
a second time: `train+test` is the same examples, in another order.
"""

import dataclasses
import io
import math
import re
import zlib

import numpy as np
import tensorflow_datasets as tfds

from mst.data.datasets import common

SPLITS = ("full", "train", "test")
FRACTIONS = (("train", 0.8), ("test", 0.2))
_SEED_CONFIG = re.compile(r"seed_(\d+)")
MAX_MAT_ELEMENTS = 10_000_000  # per .mat variable read: the sets' have ~1,000


@dataclasses.dataclass(eq=False)
class SplitConfig(tfds.core.BuilderConfig):
  """`split_seed`: the seed of the 80/20 train/test split; the name is `seed_<split_seed>`."""
  name: str = ""
  split_seed: int = 0

  def __post_init__(self):
    self.name = self.name or f"seed_{self.split_seed}"
    if not self.description:
      self.description = (f"train/test: a seeded 80/20 split, numpy RandomState({self.split_seed}) "
                          "permutation of the sorted reference ids (image names without one).")


class IqaBuilder(common.ImageQualityBuilder):
  """Base of the five builders: subclasses read every rated image (`_read_rated`); the base
  splits them. Entries carry `labels["reference"]` where the set has reference images."""
  SPLITS = SPLITS
  BUILDER_CONFIGS = [SplitConfig(split_seed=0)]
  DEFAULT_CONFIG_NAME = "seed_0"

  def _read_rated(self, manual_dir: str) -> tuple[object, list[common.Entry]]:
    """Returns (an image source with `read(path) -> bytes`, every rated image's entry)."""
    raise NotImplementedError

  def _read_entries(self, manual_dir):
    source, entries = self._read_rated(manual_dir)
    if not entries:
      raise ValueError(f"{self.name}: the label files list no rated image")
    by = "reference" if "reference" in entries[0].labels else "name"
    group = [e.labels[by] if by == "reference" else e.name for e in entries]
    split_of = common.seeded_split(group, FRACTIONS, self.builder_config.split_seed)
    splits = {"full": entries, "train": [], "test": []}
    for entry, key in zip(entries, group):
      splits[split_of[key]].append(entry)
    self.info.metadata["split_rule"] = (
        f"train/test: seeded 80/20 split of the {len(set(group))} distinct {by}s, "
        f"RandomState({self.builder_config.split_seed}) permutation (common.seeded_split)")
    return source, splits

  @classmethod
  def config_from_kwargs(cls, config=None, split_seed=None):
    """The config for `mst.data.datasets.build`: `split_seed`, or a config (`seed_<n>` names the
    seed too)."""
    if isinstance(config, str):
      match = _SEED_CONFIG.fullmatch(config)
      if match is None:
        raise ValueError(f"{cls.name}: unknown config {config!r}; the configs are seed_<n> "
                         "(the train/test split's seed), e.g. seed_0")
      config = cls._seed_config(int(match.group(1)))
    if split_seed is None:
      return config
    if config is not None and config.split_seed != split_seed:
      raise ValueError(f"{cls.name}: split_seed={split_seed} contradicts config {config.name}")
    return cls._seed_config(int(split_seed))

  @classmethod
  def _seed_config(cls, seed: int) -> SplitConfig:
    """The config of `seed`: the class's own where it has one (tfds refuses a copy of it)."""
    return next((c for c in cls.BUILDER_CONFIGS if c.split_seed == seed),
                None) or SplitConfig(split_seed=seed)

  def _label_file(self, source, path: str) -> tuple[bytes, str]:
    """(the bytes of the download's label file `path`, where it is); fails fast with the download
    instructions when it is absent."""
    try:
      return source.read(path), source.location(path)
    except FileNotFoundError:
      raise FileNotFoundError(f"{source.location(path)} not found: is the download complete?\n"
                              f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}") from None
    except common.UnreadableFile as e:  # too large (a bomb), not a regular file, corrupt
      raise common.LabelFileError(str(e)) from None

  def _text_lines(self, source, path: str) -> tuple[list[tuple[int, str]], str]:
    """((1-based line, stripped text) of each non-empty line of a text label file, where it is)."""
    data, where = self._label_file(source, path)
    text = common.read_text(where, data)
    lines = [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1)]
    return [(i, line) for i, line in lines if line], where

  def _mat(self, source, path: str, keys: tuple[str, ...]) -> tuple[dict[str, np.ndarray], str]:
    """(the variables `keys` of the MATLAB file `path`, where it is); a LabelFileError naming the
    file when it is unreadable, lacks one or one has over MAX_MAT_ELEMENTS (checked unread)."""
    import scipy.io  # pylint: disable=g-import-not-at-top  # only the .mat sets need it
    data, where = self._label_file(source, path)
    try:
      shapes = {name: shape for name, shape, _ in scipy.io.whosmat(io.BytesIO(data))}
      missing = [k for k in keys if k not in shapes]
      if missing:
        raise common.LabelFileError(f"{where}: no variable(s) {missing}; the file holds "
                                    f"{sorted(shapes)}")
      large = [k for k in keys if math.prod(shapes[k]) > MAX_MAT_ELEMENTS]
      if large:  # a compressed variable could inflate to GBs: checked before loading
        raise common.LabelFileError(
            f"{where}: {large[0]} has shape {' x '.join(map(str, shapes[large[0]]))}, over "
            f"{MAX_MAT_ELEMENTS} elements; not read")
      mat = scipy.io.loadmat(io.BytesIO(data), variable_names=keys)
    except common.LabelFileError:
      raise
    except (ValueError, TypeError, OSError, NotImplementedError, EOFError, zlib.error,
            scipy.io.matlab.MatReadError) as e:
      raise common.LabelFileError(f"{where}: not a readable MATLAB .mat file ({e})") from None
    return {k: mat[k] for k in keys}, where


def mat_vector(where: str, key: str, array: np.ndarray, length: int | None = None) -> np.ndarray:
  """`array` (1 x N or N x 1, N = `length` if given) flattened; an error naming the file and the
  shape otherwise."""
  n = length if length is not None else array.size
  if array.ndim != 2 or sorted(array.shape) != sorted((1, n)) or not n:
    raise ValueError(f"{where}: {key} has shape {' x '.join(map(str, array.shape))}; expected "
                     f"1 x {length or 'N'} (or {length or 'N'} x 1)")
  return array.reshape(-1)


def mat_numbers(where: str, key: str, array: np.ndarray, length: int | None = None) -> np.ndarray:
  """A numeric 1 x N (or N x 1) variable as N float64s; a LabelFileError listing each entry that
  is NaN, infinite or beyond float32 (the labels' storage) by its 1-based index and value."""
  values = mat_vector(where, key, array, length)
  if values.dtype.kind not in "biuf":
    raise ValueError(f"{where}: {key} is not numeric (it holds {values.dtype})")
  values = values.astype(np.float64)
  with np.errstate(invalid="ignore"):
    bad = np.flatnonzero(~(np.abs(values) <= common.FLOAT32_MAX))  # NaN, inf, beyond float32
  if bad.size:
    problems = [(f"{key} entry {i + 1}",
                 f"{float(values[i])!r} {common.label_problem(values[i])[1]}") for i in bad]
    raise common.LabelFileError.of_rows(
        f"{where}: {bad.size} value(s) of {key} that are not finite float32 numbers:", where,
        problems)
  return values


def mat_strings(where: str, key: str, array: np.ndarray, length: int | None = None) -> list[str]:
  """A 1 x N (or N x 1) cell array of strings as N str."""
  out = []
  for i, cell in enumerate(mat_vector(where, key, array, length)):
    value = np.asarray(cell).reshape(-1)
    if value.size != 1 or not isinstance(value[0], str):
      raise ValueError(f"{where}: {key} entry {i + 1} is not a string: {cell!r}")
    out.append(value[0].strip())
  return out



def reference_feature(doc: str) -> tfds.features.Text:
  """The `reference` feature: the id of the reference image a distorted image was made from."""
  return tfds.features.Text(doc=f"The reference image's id: {doc}")


def numbered_distortions(references: str, types: int, levels: int) -> dict:
  """The `reference`, `distortion` (1-`types`) and `level` (1-`levels`) features of the sets whose
  file names number them (KADID-10k's `I01_03_02.png`, TID2013's `i01_03_2.bmp`)."""
  return {
      "reference": reference_feature(references),
      "distortion": tfds.features.Scalar(np.int32, doc=f"Distortion type, 1-{types}."),
      "level": tfds.features.Scalar(np.int32, doc=f"Distortion level, 1 (mild) to {levels}."),
  }
