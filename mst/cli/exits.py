"""One way out of every console script: `run` prints an error of mst's taxonomy (`mst.errors`) as
`mst-<name>: error: ...` and exits with its kind's status, 0, 1, 2 or 75 (each script's --help
lists them)."""

from __future__ import annotations

import atexit
from collections.abc import Callable, Iterator, Sequence
import contextlib
import gc
import sys

from mst import errors

OK, FAILED, USAGE, PREEMPTED = errors.OK, errors.FAILED, errors.USAGE, errors.PREEMPTED
_KINDS = {FAILED: errors.RunFailed, USAGE: errors.BadInput, PREEMPTED: errors.Preempted}


@contextlib.contextmanager
def exit_status(status: int, *builtin: type[BaseException]) -> Iterator[None]:
  """Turns the built-in exceptions `builtin` (an OSError, a ValueError of a library mst calls)
  raised inside the block into the kind of error that ends with `status`."""
  try:
    yield
  except builtin as e:
    if isinstance(e, errors.Error):
      raise
    raise _KINDS[status](str(e)) from e


def run(prog: str, body: Callable[[Sequence[str] | None], int],
        argv: Sequence[str] | None) -> int:
  """`body(argv)`'s status, or an mst error's: its message printed as `prog: error: message`
  (`prog: message` for a preemption, which is not an error). A MemoryError is one line and
  status 1 too: a traceback would say nothing more, and its frames may be what ran out."""
  _skip_the_last_collection()
  try:
    return body(argv)
  except errors.Error as e:
    kind = "" if e.status == PREEMPTED else "error: "
    print(f"{prog}: {kind}{e}", file=sys.stderr, flush=True)
    return e.status
  except MemoryError as e:
    print(f"{prog}: error: {out_of_memory(e)}", file=sys.stderr, flush=True)
    return FAILED


def out_of_memory(error: MemoryError) -> str:
  """One line for a MemoryError: numpy's says how much it asked for; a bare one says nothing."""
  detail = " ".join(str(error).split())
  return (f"out of memory{f' ({detail})' if detail else ''}: free some, or ask for less at once "
          "(e.g. a smaller batch size), then rerun")


def _skip_the_last_collection() -> None:
  """At exit, after the other exit handlers (they run last in, first out), moves every object
  out of the collector's reach: the interpreter's final collection would walk them all, 2 to 3
  s after a run with TensorFlow, JAX and flax loaded, to free memory the OS takes back anyway.
  Scripts close and flush what they write before they return; a library that calls a script's
  `main` keeps collecting as before until its own process exits."""
  if not getattr(_skip_the_last_collection, "registered", False):
    atexit.register(gc.freeze)
    _skip_the_last_collection.registered = True
