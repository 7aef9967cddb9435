"""One run per workdir: a lock file that names its owner, and start-up checks that the workdir can
be written.

Each process of a run holds `<workdir>/mst-train-<process index>.lock` (JSON: pid, host, start
time), created atomically and removed when the run ends, however it ends short of SIGKILL. A
second run finds the lock and refuses, naming the owner. A lock left by a killed run is stale and
taken over: on this host, when its pid is gone or is this process's own (a restarted container
reuses pids); from another host, whose processes cannot be seen, when its heartbeat (the file's
modification time, refreshed every minute by the owner) is older than `STALE_AFTER_S`.

Per-process files let every host of a pod decide for itself: process i of a second run meets
process i of the first, which is usually on the same host. Workdirs in cloud storage (gs://) are
not locked: their file systems have no atomic create.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time

from absl import logging

from mst import errors

HEARTBEAT_S = 60
STALE_AFTER_S = 10 * 60


class WorkdirError(errors.RunFailed):
  """The workdir cannot be used: another run owns it, or it cannot be written."""


def lock_path(workdir: str, process_index: int) -> str:
  return os.path.join(workdir, f"mst-train-{process_index}.lock")


def check_writable(workdir: str, flag: str = "--workdir") -> None:
  """Creates `workdir` and writes a file in it, so an unwritable path fails at start-up rather
  than at the first save; `flag` names the path in the message."""
  probe = os.path.join(workdir, f".mst-write-test-{socket.gethostname()}-{os.getpid()}")
  try:
    if "://" in workdir:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top  (cloud storage only)
      tf.io.gfile.makedirs(workdir)
      with tf.io.gfile.GFile(probe, "w") as f:
        f.write("")
      tf.io.gfile.remove(probe)
    else:
      os.makedirs(workdir, exist_ok=True)
      with open(probe, "w"):
        pass
      os.remove(probe)
  except Exception as e:  # pylint: disable=broad-except  (OSError, or tf.errors.* for gs://)
    raise WorkdirError(f"cannot write to {flag} {workdir}: {e}. Choose a directory this user "
                       "can create and write.") from None


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # someone else's live process
  return True


def _describe(owner: dict) -> str:
  return (f"mst-train pid {owner.get('pid')} on host {owner.get('host')}, started "
          f"{owner.get('started')}")


def _stale(path: str, owner: dict) -> bool:
  """Whether the run that wrote `owner` is gone (see the module docstring)."""
  if owner.get("host") == socket.gethostname():
    pid = owner.get("pid")
    # Our own pid: an earlier incarnation of this process (a restarted container reuses pids).
    return not isinstance(pid, int) or pid == os.getpid() or not _pid_alive(pid)
  try:
    age = time.time() - os.path.getmtime(path)
  except FileNotFoundError:
    return True
  return age > STALE_AFTER_S


def _read_owner(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}  # half-written by a run killed while taking the lock: nobody owns it


class WorkdirLock:
  """The lock of one process of a run; a context manager that releases it on exit."""

  def __init__(self, workdir: str, process_index: int = 0):
    self.path = lock_path(workdir, process_index)
    self.workdir = workdir
    self._stop = threading.Event()
    self._heartbeat = None

  def acquire(self) -> "WorkdirLock":
    owner = {"pid": os.getpid(), "host": socket.gethostname(),
             "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    for _ in range(2):  # a second try after removing a stale lock
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        other = _read_owner(self.path)
        if other and not _stale(self.path, other):
          raise WorkdirError(
              f"--workdir {self.workdir} is in use by {_describe(other)} (lock file "
              f"{self.path}). Wait for that run to end, stop it, or use another --workdir; if "
              "it is no longer running, delete the lock file.") from None
        logging.warning("Taking over %s left by %s, which is no longer running", self.path,
                        _describe(other) if other else "an unknown run")
        try:
          os.remove(self.path)
        except FileNotFoundError:
          pass
        continue
      except OSError as e:
        raise WorkdirError(f"cannot write to --workdir {self.workdir}: {e}") from None
      with os.fdopen(fd, "w") as f:
        json.dump(owner, f)
      self._heartbeat = threading.Thread(target=self._beat, daemon=True, name="workdir-lock")
      self._heartbeat.start()
      return self
    raise WorkdirError(f"could not take the lock {self.path}: another run keeps creating it")

  def _beat(self):
    while not self._stop.wait(HEARTBEAT_S):
      try:
        os.utime(self.path)
      except OSError:
        return

  def release(self) -> None:
    self._stop.set()
    try:
      os.remove(self.path)
    except FileNotFoundError:
      pass

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def lock(workdir: str, process_index: int = 0):
  """A context manager holding the workdir for this process: checks the workdir can be written,
  then takes its lock (a no-op for cloud storage workdirs)."""
  check_writable(workdir)
  if "://" in workdir:
    return contextlib.nullcontext()
  return WorkdirLock(workdir, process_index)
