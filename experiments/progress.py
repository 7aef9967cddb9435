"""How far each run of a sweep has got, read from its workdir alone (a folder or gs:// URL), so it
works from any machine while the runs go on elsewhere:

- finished: `<test_split>_metrics.json` is there (mst-train writes it last);
- the step: the newest `checkpoints/<step>` folder (orbax's unfinished `*-tmp-*` folders do not
  count), out of `train.num_steps` when the config fixes it;
- the exit status of each host's last attempt: the last line of `logs/host-*.log`, which
  `sweep.py pod` copies into the workdir when mst-train ends.
"""

import dataclasses
import re

import ml_collections

EXIT_LINE = re.compile(r"exit status (\d+)\s*$")


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  # slow: only when reading
  return tf.io.gfile


def _join(root: str, name: str) -> str:
  return f"{root.rstrip('/')}/{name}"


def _listdir(path: str) -> list[str]:
  gfile = _gfile()
  return [name.rstrip("/") for name in gfile.listdir(path)] if gfile.isdir(path) else []


@dataclasses.dataclass(frozen=True)
class Progress:
  """One run's state: "finished", "started" (a workdir, not finished) or "not started"."""
  name: str
  state: str
  step: int | None = None  # the latest checkpoint's
  total: int | None = None  # train.num_steps, when the config fixes it
  exits: tuple[str, ...] = ()  # "host: status" of the last attempt, from the copied logs

  @property
  def finished(self) -> bool:
    return self.state == "finished"

  def describe(self) -> str:
    if self.state != "started":
      return self.state
    text = "no checkpoint yet" if self.step is None else f"step {self.step}"
    if self.step is not None and self.total:
      text += f" of {self.total}"
    return text + (f"; last exit: {', '.join(self.exits)}" if self.exits else "")


def finished_file(config: ml_collections.ConfigDict) -> str:
  """The file whose presence means the run is done."""
  return f"{config.dataset.test_split or 'test'}_metrics.json"


def read(name: str, workdir: str, config: ml_collections.ConfigDict) -> Progress:
  """The progress of the run in `workdir` that trains `config`; OSError if it cannot be read
  (no credentials or network for a gs:// URL)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return _read(name, workdir, config)
  except tf.errors.OpError as e:
    raise OSError(f"cannot read {workdir}: {e.message.splitlines()[0]}") from None


def _read(name: str, workdir: str, config: ml_collections.ConfigDict) -> Progress:
  gfile = _gfile()
  if gfile.exists(_join(workdir, finished_file(config))):
    return Progress(name, "finished")
  if not gfile.exists(workdir):
    return Progress(name, "not started")
  steps = [int(entry) for entry in _listdir(_join(workdir, "checkpoints")) if entry.isdigit()]
  exits = []
  logs = _join(workdir, "logs")
  for entry in sorted(_listdir(logs)):
    if entry.startswith("host-") and entry.endswith(".log"):
      with gfile.GFile(_join(logs, entry)) as f:
        last = EXIT_LINE.search(f.read()[-200:])
      exits.append(f"{entry[5:-4]}: {last.group(1) if last else 'running or killed'}")
  total = int(config.train.num_steps) if config.train.num_steps > 0 else None
  return Progress(name, "started", max(steps, default=None), total, tuple(exits))


def table(progress: list[Progress]) -> str:
  """One line per run, then a count of the finished ones."""
  width = max([len(p.name) for p in progress] + [3])
  lines = [f"{p.name:<{width}}  {p.describe()}" for p in progress]
  done = sum(p.finished for p in progress)
  return "\n".join(lines + [f"{done} of {len(progress)} runs finished"])
