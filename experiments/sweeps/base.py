"""What a sweep is: named runs, each a flat dict of config overrides, and the study they form.

A sweep is a plain function `runs(config) -> list[Run]`; most ignore `config`, a grid relative to
the config's own values (`lr_batch`) reads it. `Sweep` adds what the table needs: the config the
study was made for, the row header, and the paper's numbers where it reports them.
"""

import dataclasses
from typing import Any, Callable

import ml_collections

Overrides = dict[str, Any]  # flat config keys ("model.spatial_embedding") -> values


@dataclasses.dataclass(frozen=True)
class Run:
  """One setting of a study.

  Attributes:
    name: a short name, also the run's workdir name under the sweep root (no '/' or spaces).
    overrides: flat config keys and their values for this setting.
    label: how the setting reads in the table (default: `name`), e.g. "(full, 384, 224)".
    paper: the paper's (SRCC, PLCC) for this setting, where it reports them.
  """
  name: str
  overrides: Overrides
  label: str = ""
  paper: tuple[float, float] | None = None

  def __post_init__(self):
    if not self.name or any(c in self.name for c in "/ \t\n") or self.name.startswith("."):
      raise ValueError(f"run name {self.name!r} must be a non-empty single path component")
    if not self.label:
      object.__setattr__(self, "label", self.name)


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A study: its runs, the config file it was made for, and the table's row header; `median`:
  the runs are repeats of one setting (seeded splits), summarised by their median and spread."""
  runs: Callable[[ml_collections.ConfigDict], list[Run]]
  config: str  # relative to the repository root, e.g. "configs/ava.py"
  setting: str  # the table's first column header, e.g. "Spatial embedding"
  description: str = ""
  median: bool = False
