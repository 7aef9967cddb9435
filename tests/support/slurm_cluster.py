"""A one-node SLURM cluster in a temporary folder, for tests: its own munged, slurmctld and slurmd,
run as this user (jobs run as this user too), on free ports, with every file (munge key and
socket, state, spool, logs, pid files) under the folder.

    with slurm_cluster.Cluster(folder) as cluster:   # started; stopped on leaving
      subprocess.run(["srun", "-n", "2", "hostname"], env=cluster.env())

The daemons run in the foreground as children of this process, so stopping them is a signal to
each one's own pid (jobs still queued or running are cancelled first), and they get SIGTERM if
this process dies without stopping them. `Cluster.start` raises `Unavailable`, saying why with
the logs' last lines, where the packages are missing (.ci/run installs them: `apt-get install
slurm-wlm munge`) or the cluster does not come up.
"""

from __future__ import annotations

import ctypes
import os
import pathlib
import pwd
import random
import shutil
import signal
import socket
import subprocess
import time

from support.runs import free_port


COMMANDS = ("munged", "slurmctld", "slurmd", "srun", "sbatch", "sinfo", "squeue", "scancel",
            "scontrol")
PACKAGES = "slurm-wlm munge"
PARTITION = "debug"
# How long a requeued job waits before it may start again: the lifetime of a job step's
# credential (AuthInfo's cred_expire, 120 s by default; SLURM's floor is 5 s).
CRED_EXPIRE_SECONDS = 5


class Unavailable(RuntimeError):
  """SLURM cannot run here: the packages are missing or the cluster did not start."""


def missing_commands() -> list[str]:
  return [name for name in COMMANDS if not shutil.which(name)]


def _terminate_with_parent() -> None:
  """prctl(PR_SET_PDEATHSIG, SIGTERM) in the child, before it executes the daemon."""
  ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _tail(path: pathlib.Path, lines: int = 15) -> str:
  try:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
  except OSError:
    return "(no log)"


class Cluster:
  """One node (this host, its CPUs) in one partition, `debug`, that every job may share."""

  def __init__(self, root, cpus: int | None = None):
    self.root = pathlib.Path(root)
    self.conf = self.root / "slurm.conf"
    self.cpus = cpus or os.cpu_count() or 1
    self.node = socket.gethostname().split(".")[0]
    self._daemons: dict[str, subprocess.Popen] = {}

  def env(self, **changes: str) -> dict[str, str]:
    """This process's environment without its SLURM_* variables, pointed at this cluster, with
    `changes`: what the SLURM commands (and, exported by them, the jobs) run with."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    return {**env, "SLURM_CONF": str(self.conf), **changes}

  def _log(self, name: str) -> pathlib.Path:
    return self.root / "log" / f"{name}.log"

  def _logs(self) -> str:
    return "\n".join(f"--- {name}.log:\n{_tail(self._log(name))}"
                     for name in ("munged", "slurmctld", "slurmd"))

  def _write_files(self) -> None:
    munge = self.root / "munge"
    for folder in ("munge", "state", "spool", "log"):
      (self.root / folder).mkdir(parents=True, exist_ok=True)
    munge.chmod(0o711)
    key = os.open(munge / "munge.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(key, "wb") as f:
      f.write(os.urandom(128))  # munge's key: 1024 random bits, readable by munged alone
    paths = {name: self.root / path for name, path in (
        ("StateSaveLocation", "state"), ("SlurmdSpoolDir", "spool"),
        ("SlurmctldPidFile", "slurmctld.pid"), ("SlurmdPidFile", "slurmd.pid"),
        ("SlurmctldLogFile", "log/slurmctld.log"), ("SlurmdLogFile", "log/slurmd.log"))}
    user = pwd.getpwuid(os.getuid()).pw_name  # root: jobs may run as anyone; else as this user
    lines = [
        "ClusterName=mst",
        # JAX's coordinator port is 61440 + job id mod 4096: ids unlike another test cluster's
        # on this machine keep two sessions' jobs off each other's ports.
        f"FirstJobId={random.randrange(1, 1 << 20)}",
        f"SlurmctldHost={self.node}(127.0.0.1)",
        f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge / 'socket'},cred_expire={CRED_EXPIRE_SECONDS}",
        f"SlurmUser={user}",
        f"SlurmdUser={user}",
        "MpiDefault=none",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "ReturnToService=2",
        # A requeued job becomes eligible CRED_EXPIRE_SECONDS + 1 after; the schedulers that
        # start it run every second or two (the backfill one every 30 s by default; the main
        # one, which alone starts a requeued array task whose array is otherwise done, every 60).
        "SchedulerParameters=bf_interval=1,sched_interval=2",
        "JobRequeue=1",
        # Steps of a cancelled job get 5 s between SIGTERM and SIGKILL (30 s by default).
        "KillWait=5",
        *[f"{name}={path}" for name, path in paths.items()],
        f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=20000 "
        "State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP "
        "OverSubscribe=YES",
    ]
    self.conf.write_text("\n".join(lines) + "\n")

  def _daemon(self, name: str, *args: str) -> None:
    """Starts `name` in the foreground (-F / -D), as a child of this process that gets SIGTERM
    when this process ends (Linux's parent-death signal), so a killed test run leaves none."""
    with open(self._log(f"{name}.out"), "ab") as out:
      self._daemons[name] = subprocess.Popen(
          [name, *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
          env=self.env(), preexec_fn=_terminate_with_parent)

  def _wait(self, what: str, ready, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
      for name, process in self._daemons.items():
        if process.poll() is not None:
          raise Unavailable(f"{name} exited with status {process.returncode} while waiting for "
                            f"{what}:\n{_tail(self._log(f'{name}.out'))}\n{self._logs()}")
      if time.monotonic() > deadline:
        raise Unavailable(f"no {what} after {seconds:.0f} s:\n{self._logs()}")
      time.sleep(0.2)

  def _node_state(self) -> str:
    done = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env(), text=True,
                          capture_output=True, check=False)
    return done.stdout.strip()

  def start(self) -> "Cluster":
    """Writes the key and slurm.conf, starts the daemons and waits until the node is idle."""
    missing = missing_commands()
    if missing:
      raise Unavailable(f"{', '.join(missing)} not found on PATH: .ci/run installs them "
                        f"(apt-get install {PACKAGES})")
    self._write_files()
    munge = self.root / "munge"
    # --force: munged refuses a socket under folders that not everyone may enter, as pytest's
    # temporary ones (0700); here only this user's jobs use it.
    self._daemon("munged", "-F", "--force", f"--socket={munge / 'socket'}",
                 f"--key-file={munge / 'munge.key'}", f"--pid-file={munge / 'munged.pid'}",
                 f"--seed-file={munge / 'munged.seed'}", f"--log-file={self._log('munged')}")
    try:
      self._wait("munge socket", (munge / "socket").exists, 20)
      self._daemon("slurmctld", "-D")
      self._daemon("slurmd", "-D")
      self._wait("idle node (sinfo)", lambda: self._node_state() == "idle", 60)
    except BaseException:
      self.stop()
      raise
    return self

  def jobs(self) -> list[str]:
    """The ids of the jobs queued or running."""
    done = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.env(), text=True,
                          capture_output=True, check=False)
    return done.stdout.split()

  def stop(self) -> None:
    """Cancels every job, waits (at most 20 s) for their steps to end, then stops the daemons:
    SIGTERM to each one's pid, SIGKILL 10 s later."""
    if self._daemons.get("slurmctld") and self._daemons["slurmctld"].poll() is None:
      jobs = self.jobs()
      if jobs:
        subprocess.run(["scancel", *jobs], env=self.env(), check=False, capture_output=True)
      deadline = time.monotonic() + 20
      while (self.jobs() or self._steps()) and time.monotonic() < deadline:
        time.sleep(0.5)
    for name in ("slurmd", "slurmctld", "munged"):
      process = self._daemons.pop(name, None)
      if process is None or process.poll() is not None:
        continue
      process.terminate()
      try:
        process.wait(timeout=10)
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

  def _steps(self) -> list[str]:
    """The job steps still running: each slurmstepd's socket in the spool folder."""
    spool = self.root / "spool"
    return [entry.name for entry in spool.iterdir() if entry.is_socket()] if spool.exists() else []

  def __enter__(self) -> "Cluster":
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()
