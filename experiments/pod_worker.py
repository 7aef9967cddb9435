"""One run of a `sweep.py pod` sequence on one worker of a Cloud TPU VM, in step with the others.

    python3 -m experiments.pod_worker --sweep S --run NAME --workdir W --launch ID \\
        [--on-failure continue|stop] -- mst-train <args>

The run script (experiments/pod.py) starts it on every worker for each run, in `~/mst`. A
multi-host run fails as one: when one worker's mst-train fails, the others would hang in a
collective or fail later, after JAX's timeouts, and a worker that failed fast would start the next
run while the others are still in this one. So each worker

1. starts the command as its child (output as this process's: the run's log) and, while it runs,
   reads the other workers' exit markers in `<workdir>/logs/launch-<ID>/` (a folder or gs:// URL)
   every --poll seconds; once one says a non-zero status, it stops the child with SIGTERM (mst-train
   saves a checkpoint and exits 75), and SIGKILL after --grace seconds (a process stuck in a
   collective may never reach a step boundary);
2. writes its own marker `<hostname>.exit`: the child's exit status (JSON, with the time it ended);
3. waits until every worker's marker is there (at most --barrier-timeout seconds), and
4. decides the run's verdict from all the markers, the same on every worker: 0 if every worker's
   run ended with 0, else 1, printing which worker failed first and how. The script then goes on
   to the next run, or with --on-failure stop ends the sweep; so every worker starts the next run,
   or stops, only after all of them ended this one.

The log's last line is `exit status N`, N being this worker's mst-train status (what `sweep.py
status` shows per host). The number of workers comes from MST_POD_WORKERS, else from the Cloud TPU
metadata server; this worker's name from MST_POD_WORKER, else its hostname. `sweep.py pod` makes a
new launch ID for every launch, so a relaunched run never reads an earlier launch's markers.
"""

import argparse
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from collections.abc import Sequence

from etils import epath

WORKERS_ENV = "MST_POD_WORKERS"  # the number of workers (tests; else the metadata server's)
WORKER_ENV = "MST_POD_WORKER"  # this worker's name (tests; else the hostname)
METADATA_URL = ("http://metadata.google.internal/computeMetadata/v1/instance/attributes/"
                "worker-network-endpoints")
MARKER_SUFFIX = ".exit"
RUN_FAILED = 1  # the exit status when the run failed on any worker, or the workers lost step


class PodError(Exception):
  """Why this worker cannot take its part in the run (the message says what to do)."""


@dataclasses.dataclass(frozen=True)
class Marker:
  """A worker's end of the run: its command's exit status, when it ended (seconds since the
  epoch) and the worker whose failure made this one stop its command (empty if none did)."""
  worker: str
  status: int
  ended: float
  stopped_for: str = ""


def note(message: str) -> None:
  """A line of this process in the run's log (its stderr)."""
  print(f"pod_worker: {message}", file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------- the pod

def worker_name() -> str:
  """This worker's name in the markers: MST_POD_WORKER, else the hostname."""
  return os.environ.get(WORKER_ENV) or socket.gethostname()


def worker_count(timeout: float = 5.0, tries: int = 3) -> int:
  """The pod's number of workers: MST_POD_WORKERS, else the length of the Cloud TPU metadata
  server's comma-separated list of worker endpoints."""
  if os.environ.get(WORKERS_ENV):
    try:
      count = int(os.environ[WORKERS_ENV])
    except ValueError:
      count = 0
    if count < 1:
      raise PodError(f"{WORKERS_ENV}={os.environ[WORKERS_ENV]!r}: give the number of workers")
    return count
  request = urllib.request.Request(METADATA_URL, headers={"Metadata-Flavor": "Google"})
  for attempt in range(tries):
    try:
      with urllib.request.urlopen(request, timeout=timeout) as response:
        endpoints = response.read().decode()
      break
    except OSError as e:  # URLError and timeouts among them
      if attempt + 1 == tries:
        raise PodError(f"cannot read the number of workers from the Cloud TPU metadata server "
                       f"({METADATA_URL}): {e}. Outside a Cloud TPU VM, set {WORKERS_ENV} (and "
                       f"{WORKER_ENV}, each worker's name)") from None
      time.sleep(1.0)
  count = len([entry for entry in endpoints.split(",") if entry.strip()])
  if count < 1:
    raise PodError(f"the metadata server lists no workers ({METADATA_URL}: {endpoints!r})")
  return count


def likely_names(me: str, count: int) -> list[str] | None:
  """Every worker's name, where this worker's ends in its index (Cloud TPU VM hostnames end in
  `-w-<worker>`): the same stem with 0 .. count-1; None when the names cannot be guessed."""
  match = re.fullmatch(r"(.*?)(\d+)", me)
  if not match or int(match.group(2)) >= count:
    return None
  return [f"{match.group(1)}{index}" for index in range(count)]


# ---------------------------------------------------------------------------- the markers

def marker_folder(workdir: str, launch: str) -> epath.Path:
  """Where the workers of launch `launch` leave their markers for the run in `workdir`."""
  return epath.Path(workdir) / "logs" / f"launch-{launch}"


def write_marker(folder: epath.Path, marker: Marker) -> None:
  """Writes `marker` whole: under a temporary name first, then renamed (a reader never sees a
  half-written one)."""
  folder.mkdir(parents=True, exist_ok=True)
  partial = folder / f".{marker.worker}{MARKER_SUFFIX}.partial"
  partial.write_text(json.dumps(dataclasses.asdict(marker)) + "\n")
  partial.rename(folder / f"{marker.worker}{MARKER_SUFFIX}")


def read_markers(folder: epath.Path, known: dict[str, Marker] | None = None
                 ) -> dict[str, Marker]:
  """The markers written so far, by worker name; those in `known` are not read again (a marker
  never changes, and on cloud storage each read is a request)."""
  markers = dict(known or {})
  if not folder.exists():
    return markers
  for path in folder.iterdir():
    worker = path.name.removesuffix(MARKER_SUFFIX)
    if worker == path.name or worker.startswith(".") or worker in markers:
      continue
    try:
      markers[worker] = Marker(**json.loads(path.read_text()))
    except (ValueError, TypeError):  # not written by pod_worker: not a marker
      continue
  return markers


def first_failure(markers: Iterable[Marker]) -> Marker | None:
  """The failure that came first: a worker that failed by itself before one stopped for it, then
  the earliest; the same on every worker that reads the same markers."""
  failed = [marker for marker in markers if marker.status]
  return min(failed, key=lambda m: (bool(m.stopped_for), m.ended, m.worker), default=None)


# ------------------------------------------------------------------------------- the run

def _exit_status(returncode: int) -> int:
  """Popen's returncode as a shell says it: 128 + N for a process killed by signal N."""
  return 128 - returncode if returncode < 0 else returncode


def run_command(command: Sequence[str], folder: epath.Path, me: str, *, poll: float,
                grace: float) -> tuple[int, str]:
  """Runs `command` until it ends; stops it (SIGTERM, then SIGKILL `grace` seconds later) once
  another worker's marker says its run failed. (exit status, the worker it was stopped for)."""
  try:
    child = subprocess.Popen(list(command))
  except OSError as e:
    note(f"cannot start {command[0]}: {e}")
    return 127, ""
  # A SIGTERM to this process (a preemption, a kill) is the child's to act on: passed on.
  previous = signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
  stopped_for, kill_at = "", None
  try:
    while True:
      try:
        return _exit_status(child.wait(timeout=poll)), stopped_for
      except subprocess.TimeoutExpired:
        pass
      if not stopped_for:
        stopped_for, kill_at = _stop_if_failed(child, folder, me, command[0], grace)
      elif kill_at is not None and time.monotonic() > kill_at:
        note(f"{command[0]} is still running {grace:g} s after SIGTERM: SIGKILL")
        child.kill()
        kill_at = None
  finally:
    signal.signal(signal.SIGTERM, previous)


def _stop_if_failed(child: subprocess.Popen, folder: epath.Path, me: str, name: str,
                    grace: float) -> tuple[str, float | None]:
  """Sends the child SIGTERM if another worker's run failed: (that worker, when to SIGKILL)."""
  try:
    markers = read_markers(folder)
  except OSError as e:  # a storage hiccup: read again at the next poll
    note(f"cannot read the markers in {folder}: {e}")
    return "", None
  failed = first_failure(marker for worker, marker in markers.items() if worker != me)
  if failed is None:
    return "", None
  note(f"{failed.worker} ended the run with exit status {failed.status}: stopping {name} "
       f"(SIGTERM; SIGKILL in {grace:g} s)")
  child.send_signal(signal.SIGTERM)
  return failed.worker, time.monotonic() + grace


def wait_for_all(folder: epath.Path, me: str, count: int, *, timeout: float,
                 poll: float) -> dict[str, Marker]:
  """Every worker's marker, once all `count` are there; PodError after `timeout` seconds."""
  deadline, markers = time.monotonic() + timeout, {}
  while True:
    try:
      markers = read_markers(folder, markers)
    except OSError as e:  # a storage hiccup: read again at the next poll, until the deadline
      note(f"cannot read the markers in {folder}: {e}")
    if len(markers) >= count:
      return markers
    if time.monotonic() >= deadline:
      raise PodError(f"after {timeout:g} s, {_missing(markers, me, count)} wrote no exit marker "
                     f"in {folder}: each has either not ended this run or never started it "
                     "(see its ~/mst-logs/); this worker takes the run as failed")
    time.sleep(poll)


def _missing(markers: dict[str, Marker], me: str, count: int) -> str:
  """The workers without a marker, by name where the names can be told."""
  names = likely_names(me, count)
  if names is not None and set(markers) <= set(names):
    missing = [name for name in names if name not in markers]
    return f"{len(missing)} of {count} workers ({', '.join(missing)})"
  return (f"{count - len(markers)} of {count} workers (all but "
          f"{', '.join(sorted(markers)) or 'none'})")


def verdict(markers: dict[str, Marker], run: str) -> tuple[int, str]:
  """The run's exit status (0: it ended with 0 on every worker, else RUN_FAILED) and, when it
  failed, the line saying how; the same on every worker."""
  first = first_failure(markers.values())
  if first is None:
    return 0, ""
  others = sorted((m for m in markers.values() if m.status and m != first),
                  key=lambda m: m.worker)
  text = f"run {run} failed: {first.worker} first, with exit status {first.status}"
  stopped = [f"{m.worker} ({m.status})" for m in others if m.stopped_for]
  failed = [f"{m.worker} ({m.status})" for m in others if not m.stopped_for]
  text += f"; also failed: {', '.join(failed)}" if failed else ""
  text += f"; stopped for it: {', '.join(stopped)}" if stopped else ""
  return RUN_FAILED, text


# ------------------------------------------------------------------------------- the CLI

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python3 -m experiments.pod_worker", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sweep", required=True, help="the sweep's name (for the messages)")
  parser.add_argument("--run", required=True, help="the run's name (for the messages)")
  parser.add_argument("--workdir", required=True, help="the run's workdir (a folder or gs:// URL)")
  parser.add_argument("--launch", required=True,
                      help="this launch's ID: the markers are in WORKDIR/logs/launch-ID/")
  parser.add_argument("--on-failure", choices=["continue", "stop"], default="continue",
                      help="what the run script does after a failed run (for the messages)")
  parser.add_argument("--poll", type=float, default=1.0, metavar="SECONDS",
                      help="how often to read the other workers' markers (default %(default)s)")
  parser.add_argument("--grace", type=float, default=60.0, metavar="SECONDS",
                      help="SIGKILL a command this long after its SIGTERM (default %(default)s)")
  parser.add_argument("--barrier-timeout", type=float, default=1800.0, metavar="SECONDS",
                      help="how long to wait for every worker's marker after this worker's run "
                      "ended (default %(default)s)")
  parser.add_argument("command", nargs=argparse.REMAINDER,
                      help="after --: the command to run, e.g. mst-train --config=...")
  args = parser.parse_args(argv)
  if args.command[:1] == ["--"]:
    args.command = args.command[1:]
  if not args.command:
    parser.error("no command: give it after --, e.g. -- mst-train --config=...")
  return args


def _count_or_tell_the_others(folder: epath.Path, me: str) -> int:
  """worker_count(); where that fails, this worker's marker says status 1 first, so that the
  other workers stop their run instead of waiting for this one."""
  try:
    return worker_count()
  except PodError:
    write_marker(folder, Marker(me, 1, time.time()))
    raise


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  me, folder = worker_name(), marker_folder(args.workdir, args.launch)
  status = 1  # the log's last line where the command could not run
  try:
    count = _count_or_tell_the_others(folder, me)
    status, stopped_for = run_command(args.command, folder, me, poll=args.poll, grace=args.grace)
    write_marker(folder, Marker(me, status, time.time(), stopped_for))
    markers = wait_for_all(folder, me, count, timeout=args.barrier_timeout, poll=args.poll)
    code, text = verdict(markers, args.run)
  except (PodError, OSError) as e:
    code, text = RUN_FAILED, f"run {args.run} on {me}: {e}"
  if code:
    goes_on = ("the sweep stops (--on-failure stop)" if args.on_failure == "stop" else
               "the sweep goes on with its next run, if any")
    note(f"sweep {args.sweep}, {text}; {goes_on}")
  print(f"exit status {status}", flush=True)
  return code


if __name__ == "__main__":
  sys.exit(main())
