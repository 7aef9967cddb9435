"""One way out of every console script: errors that carry their exit status, and the wrapper that
prints them as `mst-<name>: error: ...` and exits with it.

Exit statuses (each script's --help lists its own):
  0   done
  1   the work failed (a run that cannot go on, images that could not be read, the host ran out
      of memory): fix what the message names, then rerun
  2   bad command line, config or input (argparse uses 2 for usage errors too)
  75  preempted (EX_TEMPFAIL): a checkpoint was saved; the same command resumes
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import contextlib
import sys

OK, FAILED, USAGE, PREEMPTED = 0, 1, 2, 75


class CommandError(Exception):
  """Ends a console script with `status` after printing the message."""

  def __init__(self, message: str, status: int = FAILED):
    super().__init__(message)
    self.status = status


@contextlib.contextmanager
def exit_status(status: int, *errors: type[BaseException]) -> Iterator[None]:
  """Turns the library's `errors` raised inside the block into a CommandError with `status`."""
  try:
    yield
  except errors as e:
    raise CommandError(str(e), status) from e


def run(prog: str, body: Callable[[Sequence[str] | None], int],
        argv: Sequence[str] | None) -> int:
  """`body(argv)`'s status, or a CommandError's: its message printed as `prog: error: message`
  (`prog: message` for a preemption, which is not an error). A MemoryError is one line and
  status 1 too: a traceback would say nothing more, and its frames may be what ran out."""
  try:
    return body(argv)
  except CommandError as e:
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
