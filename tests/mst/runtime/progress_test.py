"""Progress lines (in place on a terminal, periodic in a log file) and quiet library logs."""

import io
import logging as python_logging

from absl import logging

from mst.cli import flags
from mst.runtime import progress


class Terminal(io.StringIO):
  def isatty(self):
    return True


class Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def _run(stream, steps=10, seconds_per_step=5.0, **kwargs):
  clock = Clock()
  bar = progress.Progress("predict", steps, "images", stream=stream, clock=clock, **kwargs)
  for _ in range(steps):
    clock.now += seconds_per_step
    bar.update(failed=1)
  bar.close()
  return stream.getvalue()


def test_log_file_gets_a_plain_line_every_30_seconds_with_rate_and_eta():
  lines = _run(io.StringIO()).splitlines()
  assert "\r" not in "".join(lines)
  assert lines[0] == "predict: 6/10 images (60%), 0.2 images/s, ETA 0:20, failed 1"
  assert len(lines) == 2  # at 30 s, then the final line
  assert lines[-1] == "predict: 10/10 images (100%), 0.2 images/s, failed 1, took 0:50"


def test_terminal_rewrites_one_line_and_ends_it():
  text = _run(Terminal(), steps=3)
  assert text.count("\r") == 4 and text.count("\n") == 1 and text.endswith("took 0:15\n")
  assert "\rpredict: 1/3 images (33%), 0.2 images/s, ETA 0:10, failed 1" in text


def test_resumed_counts_and_unknown_totals_and_quiet():
  clock = Clock()
  stream = io.StringIO()
  bar = progress.Progress("train", 100, "steps", stream=stream, clock=clock, initial=50,
                          every_s=0)
  clock.now = 10
  bar.update(5)
  assert stream.getvalue() == "train: 55/100 steps (55%), 0.5 steps/s, ETA 1:30\n"
  unknown = progress.Progress("predict", None, stream=io.StringIO(), clock=Clock(), every_s=0)
  assert unknown.line() == "predict: 0 images, 0 images/s"
  assert _run(io.StringIO(), enabled=False) == ""
  assert progress.duration(3725) == "1:02:05"


def _log_lines(verbosity):
  """What absl logging prints for INFO and WARNING records from a tfds file and an mst file."""
  flags.setup_logging(verbosity)
  handler = logging.get_absl_handler().python_handler
  stream, handler.stream = handler.stream, io.StringIO()
  logger = logging.get_absl_logger()
  for level in (python_logging.INFO, python_logging.WARNING):
    for path in ("/site-packages/tensorflow_datasets/core/reader.py", "/src/mst/x.py"):
      if logger.isEnabledFor(level):
        logger.handle(python_logging.LogRecord("absl", level, path, 1, "%s", (path,), None))
  stream, handler.stream = handler.stream, stream
  return stream.getvalue().splitlines()


def _count(lines, name):
  return sum(name in line for line in lines)


def test_library_lines_are_hidden_by_default_and_verbosity_restores_them():
  try:
    quiet = _log_lines("warning")
    assert _count(quiet, "reader.py") == 0 and _count(quiet, "mst/x.py") == 1  # its warning
    info = _log_lines("info")
    assert _count(info, "reader.py") == 1 and _count(info, "mst/x.py") == 2
    assert _count(_log_lines("debug"), "reader.py") == 2
  finally:
    flags.setup_logging("warning")
