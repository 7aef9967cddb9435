"""mst on a real one-node SLURM cluster (support/slurm_cluster.py, started once for this file):
`srun`'s tasks join one run with no JAX_* variable; the sbatch template of docs/training.md
("SLURM"), run as written, saves a checkpoint on SIGTERM, exits 75, requeues itself and resumes to
exactly the uninterrupted parameters, and is not requeued after a `scancel`; `sweep.py slurm`
submits a sweep as one job array whose runs finish, `collect` into a table and score with
`srun mst-eval`, and whose preempted task requeues itself alone.

Skipped, saying why, only where SLURM's packages are missing (.ci/run installs them) or the
cluster does not start."""

import json
import os
import re
import shlex
import subprocess
import sys
import time

import numpy as np
import pytest

import mst.data.datasets
from experiments import slurm
from experiments import sweep
from mst import errors
from mst.cli import train as train_cli
from support import REPO
from support import slurm_cluster
from support.configs import FAST_ENCODER
from support.images import write_csv_dataset
from support.runs import logged_scalars
from support.runs import workdir_params

TRAINING_MD = REPO / "docs" / "training.md"
TEMPLATE_MARKER = "<!-- sbatch template:"
GPU_LINE = "#SBATCH --gpus-per-node=8\n"
# The template's resources, for this machine: one node, a task per CPU.
CPU_RESOURCES = ("--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1")
# Every wait for SLURM is bounded: a job that hangs fails the test with the logs, never the suite.
JOB_SECONDS = 420


def sbatch_template() -> str:
  """The ```bash block after the template's marker in docs/training.md."""
  after = TRAINING_MD.read_text().split(TEMPLATE_MARKER, 1)[1]
  return re.search(r"```bash\n(.*?)```", after, re.S).group(1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
  try:
    started = slurm_cluster.Cluster(tmp_path_factory.mktemp("slurm")).start()
  except slurm_cluster.Unavailable as e:
    pytest.skip(f"no SLURM cluster: {e}")
  yield started
  started.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  """What the template calls /shared: storage every node (here, the one) sees."""
  return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="module")
def env(cluster, shared):
  """The environment sbatch and srun export to the tasks: one CPU device per task, no JAX_*
  variable of the tests' own, and the compilation cache on the shared storage, as the template
  has it (every run here loads the programs an earlier one compiled)."""
  clean = {key: value for key, value in cluster.env().items() if not key.startswith("JAX_")}
  return {**clean, "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
          "MST_CACHE_DIR": str(shared / "mst-cache")}


@pytest.fixture(scope="module")
def data(shared):
  """The 20-image CSV dataset (12 train, 8 validation), prepared once before the runs."""
  csv_path = write_csv_dataset(shared / "images", count=20, seed=1,
                               splits=("train",) * 12 + ("validation",) * 8, sizes=(40, 90))
  data_dir = shared / "tensorflow_datasets"
  mst.data.datasets.build("custom", str(data_dir), csv=str(csv_path))
  return {"csv": str(csv_path), "data_dir": str(data_dir)}


@pytest.fixture(scope="module")
def flags(data):
  """mst-train's flags, without --workdir: 4 steps, no evaluation."""
  return [f"--config={REPO / 'configs' / 'custom.py'}:runlocal",
          f"--config.dataset.csv={data['csv']}", f"--config.dataset.data_dir={data['data_dir']}",
          "--config.dataset.eval_split=", "--config.dataset.test_split=",
          "--config.train.num_steps=4", f"--config.model.patch_encoder={FAST_ENCODER}"]


def _run(command, env, cwd, timeout=JOB_SECONDS, status=0):
  done = subprocess.run(command, env=env, cwd=cwd, text=True, capture_output=True,
                        timeout=timeout, check=False)
  output = done.stdout + done.stderr
  assert done.returncode == status, f"{shlex.join(map(str, command))}: {output[-4000:]}"
  return output


def _wait_for_job(cluster, job_id, log=None):
  """Waits until the job (every task of an array) has left the queue."""
  deadline = time.monotonic() + JOB_SECONDS
  while job_id in {entry.split("_")[0] for entry in _queue(cluster)}:
    if time.monotonic() > deadline:
      tail = log.read_text()[-4000:] if log and log.exists() else ""
      raise AssertionError(f"job {job_id} still queued after {JOB_SECONDS} s:\n{tail}")
    time.sleep(1)


def _queue(cluster):
  done = subprocess.run(["squeue", "-h", "-o", "%A %i"], env=cluster.env(), text=True,
                        capture_output=True, check=True)
  return [word for line in done.stdout.splitlines() for word in line.split()]


def _job(cluster, job_id) -> str:
  return subprocess.run(["scontrol", "show", "job", "-o", job_id], env=cluster.env(), text=True,
                        capture_output=True, check=False).stdout


@pytest.fixture(scope="module")
def srun_run(cluster, env, flags, shared):
  """`srun --ntasks=2 mst-train ...`: the workdir and output of an uninterrupted 2-task run."""
  workdir = shared / "runs" / "srun"
  output = _run(["srun", "--ntasks=2", "--cpus-per-task=1", "mst-train", f"--workdir={workdir}",
                 *flags], env, shared)
  return workdir, output


@pytest.mark.slow
@pytest.mark.xdist_group("slurm")
def test_srun_tasks_join_one_run_of_two_processes(srun_run):
  """That such a run trains like one process of all the devices is multihost_test's; here, that
  srun's tasks find each other with no JAX_* variable and write one workdir."""
  workdir, output = srun_run
  assert "Process 0 of 2" in output and "Process 1 of 2" in output, output[-3000:]
  assert sorted(logged_scalars(workdir)) == [1, 2, 3, 4]
  params = workdir_params(workdir)
  assert params and all(np.isfinite(value).all() for value in params.values())


# mst-train that pauses on step 1 of a job's first attempt: it leaves `paused.<task>` and waits
# for the test's `go`, then 3 s more for the SIGTERM to travel (scancel -> the batch shell's trap
# -> scancel -> both tasks), so the signal lands mid-run and not before training starts.
PAUSED_MST_TRAIN = """#!{python}
import os, sys, time
from mst.cli import train
from mst.training import preemption
folder, reached = {folder!r}, preemption.PreemptionWatch.reached
def paused(self, step):
  if step == 1 and os.environ.get("SLURM_RESTART_COUNT", "0") == "0":
    open(os.path.join(folder, "paused." + os.environ["SLURM_PROCID"]), "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(folder, "go")) and time.monotonic() < deadline:
      time.sleep(0.1)
    time.sleep(3)
  return reached(self, step)
preemption.PreemptionWatch.reached = paused
sys.exit(train.main())
"""


def _wait_for_files(paths, log, seconds=JOB_SECONDS):
  deadline = time.monotonic() + seconds
  while not all(path.exists() for path in paths):
    if time.monotonic() > deadline:
      raise AssertionError(f"no {[str(p) for p in paths]} after {seconds} s:\n"
                           + (log.read_text()[-4000:] if log.exists() else "(no log)"))
    time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.xdist_group("slurm")
def test_the_documented_sbatch_template_saves_exits_75_requeues_and_resumes_exactly(
    cluster, env, flags, shared, srun_run, tmp_path):
  template = sbatch_template()
  assert template.count(GPU_LINE) == 1 and "/shared/" in template
  script = tmp_path / "train.sbatch"
  script.write_text(template.replace(GPU_LINE, "").replace("/shared/", f"{shared}/"))
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "mst-train").write_text(PAUSED_MST_TRAIN.format(python=sys.executable,
                                                             folder=str(tmp_path)))
  (bin_dir / "mst-train").chmod(0o755)
  workdir = tmp_path / "preempted"
  job_env = {**env, "PATH": f"{bin_dir}:{env['PATH']}"}
  job_id = _run(["sbatch", "--parsable", *CPU_RESOURCES, str(script), f"--workdir={workdir}",
                 *flags], job_env, tmp_path).strip().split(";")[0]
  log = tmp_path / f"mst-{job_id}.log"
  _wait_for_files([tmp_path / "paused.0", tmp_path / "paused.1"], log)
  # What --signal=B:TERM@120 does 120 s before the time limit: SIGTERM to the batch shell.
  _run(["scancel", "--signal=TERM", "--batch", job_id], env, tmp_path)
  (tmp_path / "go").touch()
  _wait_for_job(cluster, job_id, log)

  output = log.read_text()
  attempts = re.split(r"^attempt \d+ of job", output, flags=re.M)[1:]
  assert len(attempts) == 2, output[-4000:]
  assert f"exit status {errors.PREEMPTED}" in attempts[0], attempts[0][-4000:]
  steps = re.findall(r"preempted: saved the checkpoint of step (\d+)", attempts[0])
  assert len(steps) == 2 and steps[0] == steps[1], attempts[0][-4000:]  # both tasks, one step
  assert int(steps[0]) < 4
  assert attempts[1].count(f"Resuming from step {steps[0]}") == 2, attempts[1][-4000:]
  assert "exit status 0" in attempts[1], attempts[1][-4000:]
  record = _job(cluster, job_id)
  assert "JobState=COMPLETED" in record and "Restarts=1" in record, record

  expected, got = workdir_params(srun_run[0]), workdir_params(workdir)
  assert sorted(expected) == sorted(got)
  for name, value in expected.items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)


# Stands in for mst-train: leaves started.<task>, then on SIGTERM exits 75, as a preempted
# mst-train does once its checkpoint is saved.
FAKE_MST_TRAIN = """#!/bin/bash
trap 'echo "task $SLURM_PROCID: SIGTERM"; exit 75' TERM
touch "{folder}/started.$SLURM_PROCID"
for _ in $(seq 600); do sleep 0.1; done
"""


@pytest.mark.slow
@pytest.mark.xdist_group("slurm")
def test_scancel_of_a_template_job_cancels_it_for_good_though_its_tasks_exit_75(
    cluster, env, shared, tmp_path):
  script = tmp_path / "train.sbatch"
  script.write_text(sbatch_template().replace(GPU_LINE, "").replace("/shared/", f"{shared}/"))
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "mst-train").write_text(FAKE_MST_TRAIN.format(folder=tmp_path))
  (bin_dir / "mst-train").chmod(0o755)
  job_env = {**env, "PATH": f"{bin_dir}:{env['PATH']}"}
  job_id = _run(["sbatch", "--parsable", *CPU_RESOURCES, str(script)], job_env,
                tmp_path).strip().split(";")[0]
  log = tmp_path / f"mst-{job_id}.log"
  _wait_for_files([tmp_path / "started.0", tmp_path / "started.1"], log)
  _run(["scancel", job_id], env, tmp_path)
  _wait_for_job(cluster, job_id, log)
  output = log.read_text()
  assert output.count("attempt 1 of job") == 1 and "attempt 2" not in output, output
  assert "task 0: SIGTERM" in output and "task 1: SIGTERM" in output, output
  assert f"exit status {errors.PREEMPTED}" in output, output
  record = _job(cluster, job_id)
  assert "JobState=CANCELLED" in record and "Restarts=0" in record, record


# Stands in for mst-train in a sweep: leaves started.<run>.<attempt>; a first attempt waits
# (at most 60 s) for SIGTERM, on which it exits 75, or for go.<run>; then it finishes the run.
FAKE_SWEEP_MST_TRAIN = """#!/bin/bash
for word in "$@"; do case "$word" in --workdir=*) workdir="${{word#--workdir=}}";; esac; done
run=$(basename "$workdir")
trap 'exit 75' TERM
touch "{folder}/started.$run.${{SLURM_RESTART_COUNT:-0}}"
if [ "${{SLURM_RESTART_COUNT:-0}}" = 0 ]; then
  for _ in $(seq 600); do [ -e "{folder}/go.$run" ] && break; sleep 0.1; done
fi
mkdir -p "$workdir" && echo '{{"srcc": 0.5}}' > "$workdir/test_metrics.json"
"""


@pytest.mark.slow
@pytest.mark.xdist_group("slurm")
def test_a_preempted_array_task_requeues_itself_alone_and_its_run_finishes(
    cluster, env, tmp_path, capsys, monkeypatch):
  root, logs, bin_dir = tmp_path / "sweep", tmp_path / "logs", tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "mst-train").write_text(FAKE_SWEEP_MST_TRAIN.format(folder=tmp_path))
  (bin_dir / "mst-train").chmod(0o755)
  for key, value in {**env, "PATH": f"{bin_dir}:{env['PATH']}"}.items():
    monkeypatch.setenv(key, value)
  args = ["scale_embedding", "--config", "configs/custom.py", "--arg", "runlocal", "--root",
          str(root), "--set", "dataset.csv=unused.csv"]
  assert sweep.main(["slurm", *args, "--log-dir", str(logs)]) == 0
  (job_id,) = re.findall(r"^submitted job (\d+):", capsys.readouterr().out, re.M)
  _wait_for_files([tmp_path / "started.sce.0", tmp_path / "started.no_sce.0"],
                  logs / f"scale_embedding-{job_id}_0.log")
  tasks = dict(line.split() for line in subprocess.run(  # array task -> its own job id
      ["squeue", "-h", "-o", "%i %A"], env=cluster.env(), text=True, capture_output=True,
      check=True).stdout.splitlines())
  _run(["scancel", "--signal=TERM", "--batch", tasks[f"{job_id}_0"]], env, tmp_path)
  (tmp_path / "go.no_sce").touch()
  _wait_for_job(cluster, job_id, logs / f"scale_embedding-{job_id}_0.log")

  preempted = (root / "sce" / "logs" / f"host-{cluster.node}.log").read_text()
  assert re.findall(r"attempt \d|exit status \d+", preempted) == [
      "attempt 1", "exit status 75", "attempt 2", "exit status 0"], preempted
  assert "attempt 2" not in (logs / f"scale_embedding-{job_id}_1.log").read_text()
  assert not (tmp_path / "started.no_sce.1").exists()
  assert "Restarts=1" in _job(cluster, tasks[f"{job_id}_0"])
  assert sweep.main(["status", *args]) == 0
  assert capsys.readouterr().out.splitlines() == [
      "sce     finished", "no_sce  finished", "2 of 2 runs finished"]


def _sweep_args(root, data):
  """A 2-run sweep (scale embedding on / off) of 2 steps of the smallest model, evaluated on
  the validation images at the end (so `collect` has metrics)."""
  return ["scale_embedding", "--config", "configs/custom.py", "--arg", "runlocal", "--root",
          str(root), "--set", f"dataset.csv={data['csv']}",
          "--set", f"dataset.data_dir={data['data_dir']}", "--set", "train.num_steps=2",
          "--set", "model.patch_encoder=linear", "--set", "model.num_layers=1",
          "--set", "dataset.eval_split=", "--set", "dataset.test_split=validation"]


@pytest.mark.slow
@pytest.mark.xdist_group("slurm")
def test_a_sweep_is_one_job_array_whose_runs_finish_collect_and_evaluate_with_srun(
    cluster, env, data, shared, tmp_path, capsys, monkeypatch):
  root, logs = tmp_path / "sweep", tmp_path / "logs"
  for key, value in env.items():  # sweep.py's sbatch exports this process's environment
    monkeypatch.setenv(key, value)
  assert sweep.main(["slurm", *_sweep_args(root, data), "--log-dir", str(logs)]) == 0
  out = capsys.readouterr().out
  (job_id,) = re.findall(r"^submitted job (\d+): 2 runs as array tasks 0-1;", out, re.M)
  _wait_for_job(cluster, job_id, logs / f"scale_embedding-{job_id}_0.log")

  for task, name in enumerate(("sce", "no_sce")):
    log = (logs / f"scale_embedding-{job_id}_{task}.log").read_text()
    assert f"run {root / name}: attempt 1" in log and "exit status 0" in log, log[-4000:]
    copied = (root / name / "logs" / f"host-{cluster.node}.log").read_text()
    assert copied.endswith("exit status 0\n") and copied in log, copied[-4000:]
    assert {"srcc", "plcc"} <= set(json.loads((root / name / "validation_metrics.json")
                                              .read_text()))
  assert sweep.main(["status", *_sweep_args(root, data)]) == 0
  assert capsys.readouterr().out.splitlines()[-1] == "2 of 2 runs finished"
  assert sweep.main(["collect", "--root", str(root), "--name", "scale_embedding"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert [line.split(" | ")[:2] for line in lines[2:]] == [["| with SCE", "1"],
                                                           ["| without SCE", "1"]], lines
  # Submitted again, there is nothing left to run.
  assert sweep.main(["slurm", *_sweep_args(root, data), "--log-dir", str(logs)]) == 0
  assert capsys.readouterr().out.endswith("all 2 runs are finished\n")

  # docs/training.md's evaluation of a sweep's runs: one srun of one task.
  eval_dir = tmp_path / "eval"
  output = _run(["srun", "--ntasks=1", "--time=5", "mst-eval",
                 f"--config={REPO / 'configs' / 'custom.py'}:runlocal",
                 f"--config.dataset.csv={data['csv']}",
                 f"--config.dataset.data_dir={data['data_dir']}", "--split=validation",
                 "--runs", str(root / "sce"), str(root / "no_sce"),
                 f"--output-dir={eval_dir}"], env, shared)
  assert "2 runs, mean ± std" in output, output[-3000:]
  summary = json.loads((eval_dir / "runs_metrics.json").read_text())
  assert summary, output[-3000:]
  for name in ("sce", "no_sce"):  # the parameters the run chose score the same again
    trained = json.loads((root / name / "validation_metrics.json").read_text())
    scored = json.loads((root / name / "eval_validation" / "metrics.json").read_text())
    assert scored["srcc"] == pytest.approx(trained["srcc"], abs=1e-6), (name, scored, trained)


@pytest.mark.experiments
def test_slurm_dry_run_prints_one_array_script_with_the_documented_attempt(tmp_path, capsys,
                                                                           monkeypatch):
  root = tmp_path / "runs"
  args = ["slurm", "scale_embedding", "--config", "configs/custom.py", "--root", str(root),
          "--seeds", "0,1", "--set", "dataset.data_dir=/data/my tfds",
          "--ntasks-per-run", "2", "--max-parallel", "1", "--log-dir", str(tmp_path / "logs"),
          "--sbatch=--partition=gpu", "--sbatch=--gpus-per-node=2", "--dry-run"]
  os.makedirs(root / "sce-seed1")
  (root / "sce-seed1" / "test_metrics.json").write_text("{}")  # finished: left out
  assert sweep.main(args) == 0
  out = capsys.readouterr().out
  assert out.startswith("sce-seed0: not started\nsce-seed1: finished, skipped\n"
                        "no_sce-seed0: not started\nno_sce-seed1: not started\n"
                        "the batch script (array tasks 0-2: sce-seed0, no_sce-seed0, "
                        "no_sce-seed1):\n#!/bin/bash\n")
  script = out.split("):\n", 1)[1]
  assert not (tmp_path / "logs").exists(), "a dry run writes nothing"
  config = REPO / "configs" / "custom.py"
  assert [line for line in script.splitlines() if line.startswith("#SBATCH")] == [
      "#SBATCH --job-name=mst-scale_embedding", "#SBATCH --array=0-2%1", "#SBATCH --ntasks=2",
      "#SBATCH --requeue", "#SBATCH --signal=B:TERM@120", "#SBATCH --open-mode=append",
      f"#SBATCH --output={tmp_path}/logs/scale_embedding-%A_%a.log",
      "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2"]
  runs = re.findall(r"^  (\d)\) workdir=(\S+); set -- (.*) ;;$", script, re.M)
  assert [(index, workdir) for index, workdir, _ in runs] == [
      ("0", f"{root}/sce-seed0"), ("1", f"{root}/no_sce-seed0"), ("2", f"{root}/no_sce-seed1")]
  # What each array task's mst-train parses is the planned config.
  planned = {item.name: item for item in sweep.plan(
      "scale_embedding", "configs/custom.py", sets=["dataset.data_dir=/data/my tfds"],
      seeds=[0, 1])}
  for (_, workdir, words), name in zip(runs, ("sce-seed0", "no_sce-seed0", "no_sce-seed1")):
    argv = shlex.split(words)
    assert argv[:2] == [f"--config={config}", f"--workdir={workdir}"]
    _, parsed = train_cli.parse_args(argv)
    assert parsed.to_dict() == planned[name].config.to_dict()
  # The attempt is docs/training.md's, word for word, and the script is valid bash.
  assert slurm.ATTEMPT in script and slurm.REQUEUE in script
  assert slurm.ATTEMPT in sbatch_template() and slurm.REQUEUE in sbatch_template()
  subprocess.run(["bash", "-n"], input=script, text=True, check=True)

  # Bad values stop before anything is written or submitted, naming the option.
  monkeypatch.chdir(tmp_path)
  for bad, message in ((["--ntasks-per-run", "0"], "--ntasks-per-run 0"),
                       (["--sbatch=partition=gpu"], "--sbatch 'partition=gpu'")):
    assert sweep.main([*args[:-1], *bad]) == 2
    assert message in capsys.readouterr().err
