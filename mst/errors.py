"""The errors mst raises on purpose, by what the user should do next; each kind is one exit status
of every console script (`mst.cli.exits.run` maps them, once):

  0   done
  1   RunFailed: the work failed (a run that cannot go on, a checkpoint that cannot be saved, the
      host ran out of memory): fix what the message names, then rerun
  2   BadInput: a bad command line, config, file or dataset (argparse uses 2 for usage errors too)
  75  Preempted (EX_TEMPFAIL): a checkpoint was saved; the same command resumes

Every error class of the library derives from one of these, and from the built-in exception it
also is (a bad value is still a ValueError, a missing file a FileNotFoundError), so callers that
catch the built-in ones keep working. The message names the file, key or value and the fix.
"""

OK, FAILED, USAGE, PREEMPTED = 0, 1, 2, 75


class Error(Exception):
  """Any error mst raises on purpose; `status` is the exit status it ends a console script with."""
  status = FAILED


class BadInput(Error, ValueError):
  """What the user gave cannot work: fix it and rerun."""
  status = USAGE


class RunFailed(Error, RuntimeError):
  """The work failed for a reason the message names; rerunning after fixing it goes on."""
  status = FAILED


class Preempted(Error):
  """The run was asked to stop and saved a checkpoint; the same command resumes from it."""
  status = PREEMPTED
