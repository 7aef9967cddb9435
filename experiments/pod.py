"""The commands that run a sweep on every worker of a Cloud TPU VM; `sweep.py setup` and `sweep.py
pod` print or run them.

Setup installs one mst release on every worker: `git archive` of this checkout (HEAD, or with
uncommitted changes to tracked files the commit `git stash create` makes of them, which touches
neither the work tree nor the index) is copied to each worker with `gcloud ... scp --worker=all`,
unpacked to `~/mst-<release>`, pip-installed into the venv `~/mst-venv` (created when missing:
images that follow PEP 668 refuse a pip install into the system's Python) and `~/mst` is pointed
at it. An archive rather than `pip install git+<remote>@<sha>`: it needs no pushed commit and no
git credentials on the workers, it carries uncommitted edits, and it ships `configs/` beside the
package, so a run's `--config=configs/X.py` resolves in the same tree on every worker. (pip still
fetches the dependencies from PyPI.)

A sweep starts detached: one ssh per launch starts, on each worker under `setsid nohup`, a shell
that trains the runs one after another (every worker runs the same sequence, as a multi-host run
needs) and returns at once, so a dropped ssh session kills nothing. `flock` on
`~/.mst-sweep.lock` keeps a second sweep off a worker that is running one. Each run's output goes
to `~/mst-logs/<sweep>/<run>.log` on the worker, a local file because the workdir is usually a
gs:// URL that cannot be appended to; when the run ends, its last line says the exit status and
the file is copied to `<workdir>/logs/host-<hostname>.log`.

Each run goes through experiments/pod_worker.py on every worker, so that the pod fails as one:
when the run fails on one worker, every worker stops it, waits until all of them have ended it and
reads the same verdict; then every worker goes on to the next run, or (`--on-failure stop`) every
worker ends the sweep. Its markers are in `<workdir>/logs/launch-<ID>/`, a new ID per launch.
"""

import dataclasses
import os
import secrets
import shlex
import subprocess
import time
from collections.abc import Sequence

LOCK = "~/.mst-sweep.lock"
LOG_DIR = "$HOME/mst-logs"
BUSY_STATUS = 75  # the launch's exit status when a worker is already running a sweep
VENV = "mst-venv"  # setup's virtual environment, in the workers' home directories
WORKER = "experiments/pod_worker.py"  # runs each run in step with the other workers
ON_FAILURE = ("continue", "stop")  # what every worker does after a run failed on any worker


@dataclasses.dataclass(frozen=True)
class Pod:
  """A Cloud TPU VM: its name, zone and (empty for gcloud's default) project."""
  tpu: str
  zone: str
  project: str = ""

  def _where(self) -> list[str]:
    return [f"--zone={self.zone}"] + ([f"--project={self.project}"] if self.project else [])

  def ssh(self, command: str) -> list[str]:
    """gcloud argv running the shell line `command` on every worker (in the home directory)."""
    return (["gcloud", "compute", "tpus", "tpu-vm", "ssh", self.tpu] + self._where() +
            ["--worker=all", f"--command={command}"])

  def scp(self, local: str, remote: str) -> list[str]:
    """gcloud argv copying the local file `local` to `remote` on every worker."""
    return (["gcloud", "compute", "tpus", "tpu-vm", "scp", local, f"{self.tpu}:{remote}"] +
            self._where() + ["--worker=all"])


# ------------------------------------------------------------------------------------- setup

def _git(repo: str, *args: str) -> str:
  done = subprocess.run(["git", "-C", repo, *args], check=False, capture_output=True, text=True)
  if done.returncode:
    raise ValueError(f"git {' '.join(args)} in {repo} failed (setup and pod ship a git "
                     f"checkout): {done.stderr.strip()}")
  return done.stdout.strip()


def release(repo: str) -> tuple[str, str]:
  """(release name, the commit to archive): HEAD's 12-digit hash, with `-dirty-<8 digits>` of
  the `git stash create` commit when tracked files have uncommitted changes."""
  head = _git(repo, "rev-parse", "--short=12", "HEAD")
  changes = _git(repo, "stash", "create")
  return (f"{head}-dirty-{changes[:8]}", changes) if changes else (head, head)


def shipped_path(repo: str, path: str) -> str:
  """`path` (a config file) relative to the checkout, as the workers will find it; ValueError if
  the archive would not carry it (outside the checkout, or not tracked by git)."""
  relative = os.path.relpath(os.path.realpath(path), os.path.realpath(repo))
  if relative.startswith(os.pardir):
    raise ValueError(f"--config {path} is outside the checkout {repo}: setup ships only the "
                     "checkout, so put the file under configs/ and run setup again")
  if not _git(repo, "ls-files", "--", relative):
    raise ValueError(f"--config {path} is not tracked by git, so setup does not ship it: "
                     f"`git add {relative}` and run setup again")
  return relative


def archive_command(repo: str, name: str, commit: str, out: str) -> list[str]:
  """The local git argv writing the release's `.tar.gz`, files under `mst-<name>/`."""
  return ["git", "-C", repo, "archive", "--format=tar.gz", f"--prefix=mst-{name}/", "-o", out,
          commit]


def _make_venv() -> str:
  """Shell line creating `~/mst-venv` unless it has its pip: `python3 -m venv`, and where that
  fails (an image without python3-venv or ensurepip) again after installing python3-venv."""
  return (f"[ -x {VENV}/bin/pip ] || python3 -m venv {VENV} || "
          f"{{ sudo -n apt-get update -qq && sudo -n apt-get install -y -qq python3-venv && "
          f"python3 -m venv {VENV}; }} || {{ echo \"$(hostname): cannot create ~/{VENV} with "
          "python3 -m venv, even after apt-get install python3-venv: install python3-venv (or "
          f'python3.X-venv) on the image and run setup again" >&2; exit 1; }}')


def setup_commands(pod: Pod, archive: str, name: str, *, remote_dir: str = "mst",
                   pip_extra: Sequence[str] = ()) -> list[list[str]]:
  """Copy the archive to every worker, then unpack (once per release), pip-install it with
  `pip_extra` (e.g. jax[tpu]==X) into the venv `~/mst-venv` and point `~/<remote_dir>` at it."""
  folder = f"mst-{name}"
  install = " ".join([f"{VENV}/bin/python", "-m", "pip", "install", "--quiet", f"./{folder}"] +
                     [shlex.quote(extra) for extra in pip_extra])
  script = (f"set -e; [ -d {folder} ] || tar -xzf {folder}.tar.gz; {_make_venv()}; {install}; "
            f"ln -sfn {folder} {shlex.quote(remote_dir)}; "
            f'echo "$(hostname): mst {name} installed in ~/{VENV}, ~/{remote_dir} -> {folder}"')
  return [pod.scp(archive, f"{folder}.tar.gz"), pod.ssh(script)]


# ------------------------------------------------------------------------------------ launch

@dataclasses.dataclass(frozen=True)
class RemoteRun:
  """One run as the workers start it: its name, workdir and mst-train's arguments (shell words,
  already quoted)."""
  name: str
  workdir: str
  args: Sequence[str]


def _copy_log(log: str, workdir: str) -> str:
  """Shell line copying the worker's `log` to `<workdir>/logs/host-<hostname>.log`."""
  logs = f"{workdir.rstrip('/')}/logs"
  target = shlex.quote(f"{logs}/host-") + "$(hostname).log"
  if "://" in workdir:
    return f"gcloud storage cp --quiet {log} {target}"
  return f"mkdir -p {shlex.quote(logs)} && cp {log} {target}"


def new_launch_id() -> str:
  """A launch's ID: the UTC time and a random suffix, so that no two launches share markers."""
  return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"


def run_script(sweep: str, runs: Sequence[RemoteRun], launch: str,
               on_failure: str = "continue") -> str:
  """The shell script every worker runs detached: the runs in order, each through pod_worker (in
  step with the other workers; the run's output, then its exit status, in its local log), the log
  copied into the workdir; with `on_failure` "stop", a run that failed on any worker ends it."""
  if on_failure not in ON_FAILURE:
    raise ValueError(f"on_failure {on_failure!r}: one of {', '.join(ON_FAILURE)}")
  lines = [f"# sweep {sweep}, launch {launch}: started by experiments/sweep.py pod on every worker",
           f'export PATH="$HOME/{VENV}/bin:$HOME/.local/bin:$PATH"  # setup\'s venv (python3, '
           "mst-train); ~/.local/bin: an older setup's"]
  for run in runs:
    log = f"{LOG_DIR}/{shlex.quote(f'{sweep}/{run.name}.log')}"
    worker = ["python3", "-m", "experiments.pod_worker", "--sweep", sweep, "--run", run.name,
              "--workdir", run.workdir, "--launch", launch, "--on-failure", on_failure]
    line = (f"{' '.join(shlex.quote(word) for word in worker)} -- mst-train {' '.join(run.args)} "
            f"> {log} 2>&1; verdict=$?; {_copy_log(log, run.workdir)}")
    if on_failure == "stop":
      stops = shlex.quote(f"{run.name} failed: the sweep stops (--on-failure stop)")
      line += f'; [ "$verdict" -eq 0 ] || {{ echo {stops}; exit "$verdict"; }}'
    lines.append(line)
  return "\n".join(lines) + "\n"


def launch_commands(pod: Pod, sweep: str, script: str, remote_dir: str = "mst"
                    ) -> list[list[str]]:
  """gcloud argvs that copy the local `script` (a `run_script`) to every worker and start it
  there detached, in `~/<remote_dir>` where setup installed mst and its configs; the ssh returns
  once it is started, with exit status BUSY_STATUS where a worker is already running a sweep.

  The launching shell takes the lock itself (on file descriptor 9) before it starts the sweep,
  which inherits that descriptor and so holds the lock until its last run ends: a second launch
  right after the first finds it taken, with no moment between the two when it is free.
  The script arrives under a new name and is moved into place, so a running sweep's script
  (which bash reads as it goes) is never overwritten."""
  uploaded = shlex.quote(f"mst-sweep-{sweep}.sh")
  logs = f"{LOG_DIR}/{shlex.quote(sweep)}"
  command = (f"mkdir -p {logs} && cd {shlex.quote(remote_dir)} || {{ echo \"$(hostname): no "
             f'~/{remote_dir}: run sweep.py setup first" >&2; exit 1; }}; '
             f"[ -f {WORKER} ] || {{ echo \"$(hostname): ~/{remote_dir} has no {WORKER} (set up "
             f'by an earlier version): run sweep.py setup again" >&2; exit 1; }}; '
             f"exec 9>>{LOCK}; "
             f'flock -n 9 || {{ echo "$(hostname): busy, a sweep holds {LOCK}" >&2; '
             f"exit {BUSY_STATUS}; }}; "
             f"mv ~/{uploaded} {logs}/runs.sh || exit 1; "
             f"setsid nohup bash {logs}/runs.sh > {logs}/sweep.log 2>&1 "
             f'< /dev/null & echo "$(hostname): started, log {logs}/sweep.log"')
  return [pod.scp(script, uploaded), pod.ssh(command)]
