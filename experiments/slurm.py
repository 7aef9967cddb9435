"""The batch script that runs a sweep on a SLURM cluster as one job array; `sweep.py slurm` writes
it and submits it with `sbatch`.

One array task per unfinished run (`#SBATCH --array=0-<N-1>`), each an allocation of
`ntasks_per_run` tasks: `srun mst-train ...` starts one process per task, and JAX reads SLURM's
variables to join them into one run (no JAX_* variable to set). Each task is an attempt of the
template in docs/training.md ("SLURM"): `--requeue` and `--signal=B:TERM@120` make a task that
reaches its time limit or is preempted save a checkpoint, exit 75 and requeue itself; the next
attempt resumes from the checkpoint. SLURM needs no copy of the code: the nodes see this checkout
and the environment `sbatch` exports (mst-train on PATH, MST_CACHE_DIR), as on most clusters'
shared file systems.

Each attempt's output goes to `<log dir>/<sweep>-<array job>_<task>.log` (appended to by every
attempt); when mst-train ends, the script appends its exit status and copies the file to
`<workdir>/logs/host-<batch host>.log`, where `sweep.py status` reads it, as for a TPU pod.
"""

import dataclasses
import shlex
from collections.abc import Sequence

from experiments import pod as pod_lib

PREEMPTED = 75  # mst-train's exit status after saving a checkpoint on SIGTERM (EX_TEMPFAIL)

# The attempt, as in docs/training.md's template (tests/system/slurm_test.py checks they agree).
ATTEMPT = """\
# srun in the background, so that this shell can pass SIGTERM on while it runs: to every task
# of the job's steps (a SIGTERM to srun itself would cancel the step before the tasks save).
srun mst-train "$@" &
srun_pid=$!
trap 'scancel --signal=TERM "$SLURM_JOB_ID"' TERM
wait "$srun_pid"; status=$?  # returns early when the trap has run, so wait again
while kill -0 "$srun_pid" 2>/dev/null; do wait "$srun_pid"; status=$?; done
"""
REQUEUE = f"""\
# 75: preempted, every task saved the checkpoint of one step. Back to the queue (the same job
# id; the next attempt resumes from it), unless the job was cancelled (scancel: COMPLETING).
if [ "$status" -eq {PREEMPTED} ] && [ "$(squeue -h -j "$SLURM_JOB_ID" -o %T)" = RUNNING ]; then
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
"""
# The task's log into `$workdir/logs/host-<hostname>.log` (a folder, or a gs:// URL with gcloud),
# where `sweep.py status` reads the last exit status; a failed copy is reported, not fatal.
COPY_LOG = ('case "$workdir" in *://*) gcloud storage cp --quiet "$log" '
            '"$workdir/logs/host-$(hostname).log";; *) mkdir -p "$workdir/logs" && '
            'cp "$log" "$workdir/logs/host-$(hostname).log";; esac || '
            'echo "could not copy $log to $workdir/logs" >&2')


@dataclasses.dataclass(frozen=True)
class ArrayJob:
  """A sweep's array job: its name, the runs (one array task each), the tasks (processes) per
  run, how many runs may run at once (0: as many as fit), the folder of the logs and extra
  `#SBATCH` options (`--partition=gpu`, `--gpus-per-node=8`, ...)."""
  sweep: str
  runs: Sequence[pod_lib.RemoteRun]
  ntasks_per_run: int = 1
  max_parallel: int = 0
  log_dir: str = "."
  sbatch: Sequence[str] = ()

  def log(self) -> str:
    """SLURM's `--output` pattern: one log per array task, every attempt appended."""
    return f"{self.log_dir.rstrip('/')}/{self.sweep}-%A_%a.log"


def array_script(job: ArrayJob) -> str:
  """The batch script: `#SBATCH` options, the run of each array task, then the attempt."""
  if not job.runs:
    raise ValueError("no runs to submit")
  if job.ntasks_per_run < 1 or job.max_parallel < 0:
    raise ValueError(f"--ntasks-per-run {job.ntasks_per_run} and --max-parallel "
                     f"{job.max_parallel}: give at least 1 task per run, and 0 or more runs")
  if any(c.isspace() for c in job.log_dir):
    raise ValueError(f"--log-dir {job.log_dir!r}: an #SBATCH --output line cannot hold a path "
                     "with spaces; choose a folder without them")
  limit = f"%{job.max_parallel}" if job.max_parallel else ""
  options = [f"--job-name=mst-{job.sweep}", f"--array=0-{len(job.runs) - 1}{limit}",
             f"--ntasks={job.ntasks_per_run}", "--requeue", "--signal=B:TERM@120",
             "--open-mode=append", f"--output={job.log()}", *job.sbatch]
  bad = [option for option in options if not option.startswith("-") or "\n" in option]
  if bad:
    raise ValueError(f"--sbatch {bad[0]!r}: give each sbatch option as one word starting with "
                     "'-', e.g. --sbatch=--partition=gpu")
  lines = ["#!/bin/bash",
           f"# sweep {job.sweep}: {len(job.runs)} runs as array tasks, {job.ntasks_per_run} "
           "mst-train task(s) each (experiments/sweep.py slurm)"]
  lines += [f"#SBATCH {option}" for option in options]
  lines.append('case "$SLURM_ARRAY_TASK_ID" in')
  for index, run in enumerate(job.runs):
    lines.append(f"  {index}) workdir={shlex.quote(run.workdir)}; set -- {' '.join(run.args)} ;;")
  lines += ['  *) echo "no run $SLURM_ARRAY_TASK_ID in this sweep" >&2; exit 2 ;;', "esac",
            'echo "run $workdir: attempt $((${SLURM_RESTART_COUNT:-0} + 1)) on '
            '$SLURM_JOB_NODELIST"']
  lines += ATTEMPT.splitlines()
  lines += ['echo "exit status $status"',
            f"log={shlex.quote(job.log_dir.rstrip('/'))}/{shlex.quote(job.sweep)}"
            "-${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}.log",
            COPY_LOG]
  lines += REQUEUE.splitlines()
  return "\n".join(lines) + "\n"


def submit_command(script: str) -> list[str]:
  """sbatch argv submitting `script`; with --parsable it prints `<job id>[;<cluster>]`."""
  return ["sbatch", "--parsable", script]
