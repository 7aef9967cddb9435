"""Writing scoring results as JSON lines or CSV, to stdout or atomically to a file.

A file is written under a temporary name beside it and renamed into place only once every line
is written, so a run that is killed never leaves a half-written file under the name asked for.
Every line goes through `mst.runtime.safe_output`: CSV cells a spreadsheet would run as formulas
are neutralised, file names that are not UTF-8 are escaped, and NaN is written as JSON null.
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from typing import Iterator, TextIO

from mst.runtime import safe_output

FORMATS = ("jsonl", "csv")


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[TextIO]:
  """A text file open for writing that appears at `path` only when the block ends normally.

  On an exception the partial file is deleted and `path` is left as it was.
  """
  path = os.path.abspath(os.path.expanduser(path))
  folder, name = os.path.split(path)
  fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=folder)
  try:
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(temp, 0o644)
    os.replace(temp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(temp)
    raise


def csv_columns(head: str, num_classes: int) -> list[str]:
  """The CSV header of a head's results: `image`, what the head predicts, `error`."""
  if head == "classification":
    return ["image", "class", "probability", "error"]
  if head == "distribution":
    return ["image", "score"] + [f"p{i}" for i in range(1, num_classes + 1)] + ["error"]
  return ["image", "score", "error"]


class ResultWriter:
  """Writes result dicts (`image` plus `score`... or `error`) in one of `FORMATS`."""

  def __init__(self, stream: TextIO, kind: str, columns: list[str]):
    if kind not in FORMATS:
      raise ValueError(f"unknown format {kind!r}; one of {', '.join(FORMATS)}")
    self.stream, self.kind, self.columns = stream, kind, columns
    self._csv = None
    if kind == "csv":
      self._csv = csv.DictWriter(stream, columns, lineterminator="\n")
      self._csv.writeheader()

  def write(self, result: dict) -> None:
    if self._csv is None:
      self.stream.write(safe_output.json_dumps(result) + "\n")
    else:
      row = dict(result)
      for i, p in enumerate(row.pop("distribution", ())):
        row[f"p{i + 1}"] = p
      self._csv.writerow({key: safe_output.csv_cell(value) for key, value in row.items()})
    self.stream.flush()
