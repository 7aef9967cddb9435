"""Progress of a long step (dataset preparation, training, evaluation, prediction) on stderr.

One line with the count, the rate and the time left: on a terminal it is rewritten in place
(`\\r`) a few times a second; in a log file (stderr not a terminal) a plain line is written every
`every_s` seconds, so the file stays readable. The last line always says how long the step took.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

TERMINAL_EVERY_S = 0.2
LOG_EVERY_S = 30.0


def duration(seconds: float) -> str:
  """`75` -> `1:15`, `3725` -> `1:02:05`."""
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class Progress:
  """Counts done items of a step and reports them with rate and ETA.

  Args:
    what: the step, first on the line (`predict`, `eval test`, `train`).
    total: the number of items, if known (else no percentage and no ETA).
    unit: what is counted (`images`, `steps`, `examples`).
    stream: where lines go (stderr).
    enabled: False prints nothing (`--quiet`).
    every_s: seconds between lines (default: 0.2 on a terminal, 30 in a log file).
    initial: items done before this run (a resumed training run); not counted in the rate.
    clock: seconds since some start; replaceable in tests.
  """

  def __init__(self, what: str, total: int | None = None, unit: str = "images", *,
               stream: TextIO | None = None, enabled: bool = True, every_s: float | None = None,
               initial: int = 0, clock: Callable[[], float] = time.perf_counter):
    self.what, self.total, self.unit, self.enabled = what, total, unit, enabled
    self.stream = stream or sys.stderr
    self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())
    self.every_s = every_s if every_s is not None else (
        TERMINAL_EVERY_S if self.terminal else LOG_EVERY_S)
    self.clock = clock
    self.start = self.last = clock()
    self.done = self.initial = initial
    self.notes: dict[str, object] = {}
    self._width = 0  # of the line on screen, so a shorter one covers it

  def update(self, count: int = 1, **notes) -> None:
    """`count` more items done; `notes` (failed=2, loss=0.31) are shown after the rate."""
    self.done += count
    self.notes.update(notes)
    now = self.clock()
    if self.enabled and now - self.last >= self.every_s:
      self.last = now
      self._write(self.line(now))

  def line(self, now: float | None = None) -> str:
    """`predict: 120/1000 images (12%), 4.1 images/s, ETA 3:34, failed 2`."""
    elapsed = (self.clock() if now is None else now) - self.start
    rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
    parts = [f"{self.what}: {self.done}/{self.total} {self.unit}" if self.total else
             f"{self.what}: {self.done} {self.unit}"]
    if self.total:
      parts[0] += f" ({100 * self.done / self.total:.0f}%)"
    parts.append(f"{rate:.3g} {self.unit}/s")
    if self.total and rate > 0 and self.done < self.total:
      parts.append(f"ETA {duration(max(self.total - self.done, 0) / rate)}")
    parts += [f"{key} {_short(value)}" for key, value in self.notes.items()]
    return ", ".join(parts)

  def close(self, summary: str = "") -> None:
    """The final line: the count, the time taken, and `summary` if given."""
    if not self.enabled:
      return
    elapsed = self.clock() - self.start
    line = self.line() + f", took {duration(elapsed)}"
    self._write(line + (f"; {summary}" if summary else ""), final=True)

  def _write(self, line: str, final: bool = False) -> None:
    if self.terminal:
      padding = " " * max(self._width - len(line), 0)
      self.stream.write("\r" + line + padding + ("\n" if final else ""))
      self._width = 0 if final else len(line)
    else:
      self.stream.write(line + "\n")
    self.stream.flush()


def _short(value: object) -> str:
  return f"{value:.4g}" if isinstance(value, float) else str(value)
