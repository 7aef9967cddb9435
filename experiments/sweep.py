"""Run the paper's ablations (experiments/sweeps) locally or on a TPU pod, and tabulate them.

    python experiments/sweep.py list
    python experiments/sweep.py run spatial_embedding --root /tmp/se [--config configs/ava.py]
        [--arg runlocal] [--set dataset.data_dir=/data/tfds ...] [--seeds 0,1,2] [--only none,fixed]
        [--dry-run]
    python experiments/sweep.py setup --tpu my-pod --zone us-central2-b [--dry-run]
    python experiments/sweep.py pod multiscale --tpu my-pod --zone us-central2-b
        --root gs://bucket/multiscale [--dry-run]
    python experiments/sweep.py status multiscale --root gs://bucket/multiscale
    python experiments/sweep.py slurm patch_size --root /shared/runs/patch_size
        [--ntasks-per-run 8] [--sbatch=--gpus-per-node=8 ...] [--max-parallel 4] [--dry-run]
    python experiments/sweep.py collect --root /tmp/se --name spatial_embedding
    python experiments/sweep.py collect --root runs/paper --name main   # the main results table
    python experiments/sweep.py evaluate --root /tmp/se --datasets koniq10k:test,livec,kadid10k
    python experiments/sweep.py run splits --arg kadid10k --root runs/kadid   # 10 seeded splits

Each run trains in its own workdir `ROOT/<run>` (`ROOT/<run>-seed<k>` with --seeds). Every run's
config is built and validated before the first one starts, so a typo'd key or a bad value fails
at once, naming the key. Starting a sweep again (`run` or `pod`) skips the finished runs (their
test metrics exist) and resumes the others from their latest checkpoints; `status` shows where each
run is.

`run` trains in this process, one run after another, through `mst.trainer.train_and_evaluate`
(what mst-train calls), rather than one `mst-train` subprocess per run: Python,
TensorFlow and JAX start once, and the many small programs JAX compiles for eager ops
(parameter init, checkpoint copies) are compiled once for the whole sweep (on CPU a second run
compiled 9 programs instead of 144). A run keeps no state of its own after it ends (its jitted
functions go with it), a failing run (a diverging learning rate, say) is reported and the sweep
goes on. What a subprocess would add, isolation from a crash that kills the process, matters on a
pod: `setup` installs this checkout on every worker of a TPU VM, and `pod` starts the unfinished
runs there, detached, one after another (see experiments/pod.py). On a SLURM cluster, `slurm`
submits the unfinished runs as one job array, an array task per run (see experiments/slurm.py).
"""

import argparse
import dataclasses
import importlib.metadata
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
REPO = pathlib.Path(__file__).resolve().parents[1]  # the checkout `setup` ships
sys.path.insert(0, str(REPO))

from mst.runtime import host_memory  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":  # `run` trains in this process: mst-train's malloc settings, set
  host_memory.keep_freed_memory()  # before TensorFlow and JAX are imported and start threads

import ml_collections  # pylint: disable=g-import-not-at-top

from experiments import collect  # pylint: disable=g-import-not-at-top
from experiments import pod as pod_lib  # pylint: disable=g-import-not-at-top
from experiments import progress  # pylint: disable=g-import-not-at-top
from experiments import slurm as slurm_lib  # pylint: disable=g-import-not-at-top
from mst.configure import overrides as overrides_lib  # pylint: disable=g-import-not-at-top
from experiments.sweeps import Run  # pylint: disable=g-import-not-at-top
from experiments.sweeps import SWEEPS  # pylint: disable=g-import-not-at-top
from mst import errors  # pylint: disable=g-import-not-at-top
from mst.config import defaults  # pylint: disable=g-import-not-at-top
from mst.configure import resolve  # pylint: disable=g-import-not-at-top


@dataclasses.dataclass(frozen=True)
class Planned:
  """One run of a sweep, ready to start: its workdir name, the sweep's run, all its overrides
  (--set values, the run's, the seed) and the config they make."""
  name: str
  run: Run
  overrides: overrides_lib.Overrides
  config: ml_collections.ConfigDict


def plan(sweep_name: str, config_path: str, arg: str | None = None, sets: Sequence[str] = (),
         seeds: Sequence[int] = (), only: Sequence[str] = ()) -> list[Planned]:
  """Every run of the sweep (or those named in `only`) on the config with `--set` values (and
  seeds), built and validated.

  Raises KeyError/TypeError/ValueError naming the key before anything runs: an unknown key, a
  value of the wrong type, a `--set` key the sweep itself sets, or a config that cannot run.
  """
  base = overrides_lib.load_config(config_path, arg)
  shared = dict(overrides_lib.parse_assignment(base, text) for text in sets)
  if seeds and "seed" in shared:
    raise ValueError("give the seed with --seeds or --set seed=..., not both")
  runs = SWEEPS[sweep_name].runs(overrides_lib.apply_overrides(base, shared))
  unknown = sorted(set(only) - {run.name for run in runs})
  if unknown:
    raise ValueError(f"--only {', '.join(unknown)}: not a run of {sweep_name} "
                     f"({', '.join(run.name for run in runs)})")
  planned = []
  for run in (run for run in runs if not only or run.name in only):
    clash = sorted(set(run.overrides) & set(shared))
    if clash:
      raise ValueError(f"--set {', '.join(clash)}: the sweep sets it in run {run.name!r}")
    for seed in seeds or (None,):
      values = {**shared, **run.overrides, **({} if seed is None else {"seed": seed})}
      config = overrides_lib.apply_overrides(base, values)
      try:
        resolve.validate(config)
      except ValueError as e:
        raise ValueError(f"run {run.name!r}: {e}") from e
      name = run.name if seed is None else f"{run.name}-seed{seed}"
      planned.append(Planned(name, run, values, config))
  return planned


def run_locally(planned: Sequence[Planned], root: str) -> list[str]:
  """Trains the runs one after another in `root/<name>`; returns the names of those that
  failed (their errors are printed, the others still run)."""
  import jax  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from mst.runtime import sharding  # pylint: disable=g-import-not-at-top
  from mst.training import trainer  # pylint: disable=g-import-not-at-top

  if tf.config.list_physical_devices("GPU"):
    tf.config.set_visible_devices([], "GPU")  # TensorFlow only feeds data, as in mst-train
  sharding.initialize_distributed()
  failed = []
  for i, item in enumerate(planned, 1):
    workdir = os.path.join(root, item.name)
    state = progress.read(item.name, workdir, item.config)
    if state.finished:
      print(f"[{i}/{len(planned)}] {item.name}: finished before, skipped", flush=True)
      continue
    resuming = f" (resuming: {state.describe()})" if state.state == "started" else ""
    print(f"[{i}/{len(planned)}] {item.name}: {item.overrides}{resuming}", flush=True)
    try:
      trainer.train_and_evaluate(resolve.run(item.config, jax.device_count()), workdir)
    except Exception as e:  # pylint: disable=broad-except  # one bad setting must not end a sweep
      print(f"[{i}/{len(planned)}] {item.name} FAILED: {type(e).__name__}: {e}", flush=True)
      failed.append(item.name)
  return failed


def remote_run(item: Planned, *, config_spec: str, root: str) -> pod_lib.RemoteRun:
  """`item` as the workers run it: mst-train's words, each quoted for their shell, with
  `config_spec` (FILE[:ARG]) relative to the installed checkout."""
  workdir = overrides_lib.workdir_join(root, item.name)
  args = [f"--config={shlex.quote(config_spec)}", f"--workdir={shlex.quote(workdir)}"]
  return pod_lib.RemoteRun(item.name, workdir, args + overrides_lib.as_flags(item.overrides))


def read_progress(planned: Sequence[Planned], root: str) -> list[progress.Progress]:
  return [progress.read(item.name, overrides_lib.workdir_join(root, item.name), item.config)
          for item in planned]


def display(argv: Sequence[str]) -> str:
  """`argv` as one line to paste into a POSIX shell; a word that needs quoting is wrapped in
  double quotes when that is exact (no $, `, \\, " or !), which keeps the single quotes inside
  `--command=` readable, else in shlex's single quotes."""
  words = []
  for word in argv:
    if shlex.quote(word) == word or any(c in word for c in '"$`\\!'):
      words.append(shlex.quote(word))
    else:
      key, sep, value = word.partition("=")
      words.append(f'{key}{sep}"{value}"' if sep and shlex.quote(key) == key else f'"{word}"')
  return " ".join(words)


def _seeds(text: str) -> list[int]:
  return [int(part) for part in text.split(",") if part.strip()]


def _names(text: str) -> list[str]:
  return [part.strip() for part in text.split(",") if part.strip()]


def _add_pod_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--tpu", required=True, help="the TPU VM's name")
  parser.add_argument("--zone", required=True, help="its zone, e.g. us-central2-b")
  parser.add_argument("--project", default="", help="its GCP project (default: gcloud's)")
  parser.add_argument("--remote-dir", default="mst",
                      help="the installed checkout on the workers, relative to the home "
                      "directory (default: mst)")


def _add_run_args(parser: argparse.ArgumentParser, dry_run: bool = True) -> None:
  parser.add_argument("name", choices=sorted(SWEEPS), help="the sweep")
  parser.add_argument("--config", help="config file (default: the one the sweep was made for)")
  parser.add_argument("--arg", default=None,
                      help="the config's variant, as after ':' in --config=FILE:ARG (runlocal)")
  parser.add_argument("--root", required=True, help="each run's workdir is ROOT/<run>")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override for every run, e.g. dataset.data_dir=/data (repeatable); "
                      "values are Python literals ('(384, 224)', 0.1, False) or strings")
  parser.add_argument("--seeds", type=_seeds, default=[],
                      help="comma-separated seeds: each run once per seed, ROOT/<run>-seed<k>")
  parser.add_argument("--only", type=_names, default=[],
                      help="comma-separated run names: run just these (see `list`)")
  if dry_run:
    parser.add_argument("--dry-run", action="store_true", help="print the runs, start nothing")


def make_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True)
  commands.add_parser("list", help="the sweeps, their configs and runs")
  run = commands.add_parser(
      "run", help="train every run of a sweep here, one after another (in this process)",
      description="Trains each run in ROOT/<run> with mst.trainer.train_and_evaluate, skips runs "
      "that already have test metrics, goes on after a failed run, then prints the table.")
  _add_run_args(run)
  setup = commands.add_parser(
      "setup", help="install this checkout's mst on every worker of a TPU VM",
      description="git archive of this checkout (with uncommitted changes to tracked files) -> "
      "gcloud ... scp --worker=all -> unpack to ~/mst-<release>, pip install it into the venv "
      "~/mst-venv (made when missing), point ~/REMOTE_DIR at it. Run it again after changing the "
      "code or configs.")
  _add_pod_args(setup)
  setup.add_argument("--pip-extra", action="append", metavar="SPEC",
                     help="also pip-install this (repeatable; default: jax[tpu] at this "
                     "machine's jax version; '' for nothing)")
  setup.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  pod = commands.add_parser(
      "pod", help="start a sweep's unfinished runs on all workers of a TPU VM, detached",
      description="One gcloud compute tpus tpu-vm ssh --worker=all that starts, on each worker, "
      "a detached shell training the unfinished runs one after another (mst-train in "
      "~/REMOTE_DIR, installed by `setup`), and returns; logs: ~/mst-logs/<sweep>/ on the "
      "workers, copied to ROOT/<run>/logs/ when a run ends. Finished runs are skipped, started "
      "ones resume. A run that fails on one worker is stopped on every worker (see "
      "experiments/pod_worker.py), and all of them start the next run together.")
  _add_run_args(pod)
  _add_pod_args(pod)
  pod.add_argument("--on-failure", choices=pod_lib.ON_FAILURE, default="continue",
                   help="after a run failed on any worker (every worker stops it): go on with "
                   "the next run on every worker (continue, the default) or end the sweep on "
                   "every worker (stop)")
  slurm = commands.add_parser(
      "slurm", help="submit a sweep's unfinished runs to SLURM as one job array",
      description="Writes a batch script with one array task per unfinished run (each "
      "`srun mst-train ...` on --ntasks-per-run tasks; JAX joins them from SLURM's variables) "
      "and submits it with one sbatch, which prints the job id. A task preempted or at its time "
      "limit saves a checkpoint, exits 75 and requeues itself; the next attempt resumes. The "
      "nodes must see this checkout and the environment sbatch exports (mst-train on PATH; set "
      "MST_CACHE_DIR to shared storage). Logs: LOG_DIR/<sweep>-<job>_<task>.log, copied to "
      "ROOT/<run>/logs/ when a run ends. Finished runs are skipped, started ones resume.")
  _add_run_args(slurm)
  slurm.add_argument("--ntasks-per-run", type=int, default=1, metavar="N",
                     help="mst-train processes per run, e.g. one per GPU (default 1)")
  slurm.add_argument("--max-parallel", type=int, default=0, metavar="K",
                     help="at most K runs at once (sbatch --array=...%%K; default: no limit)")
  slurm.add_argument("--log-dir", default=None,
                     help="the tasks' logs, on storage the nodes share (default "
                     "~/mst-logs/<sweep>)")
  slurm.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                     help="another #SBATCH option, e.g. --sbatch=--partition=gpu "
                     "--sbatch=--gpus-per-node=8 --sbatch=--time=24:00:00 (repeatable)")
  status = commands.add_parser(
      "status", help="each run's progress, read from its workdir",
      description="finished, the latest checkpoint step (of train.num_steps), and the exit "
      "status of each host's last attempt, for every run of the sweep under ROOT.")
  _add_run_args(status, dry_run=False)
  coll = commands.add_parser(
      "collect", help="tabulate the finished runs under a root (markdown)",
      description="Reads ROOT/*/config.json and *_metrics.json; one row per setting (seeds "
      "averaged: mean ± std), SRCC and PLCC per split, and with --name the sweep's row order, "
      "labels and the paper's numbers.")
  evaluate = commands.add_parser(
      "evaluate", help="score every finished run under a root on several datasets",
      description="mst-eval --runs <every finished workdir under ROOT> --datasets LIST: one "
      "table (rows the runs, columns the datasets; SRCC, PLCC, KRCC with bootstrap intervals) "
      "as cross_dataset.md and .json, report.html, and each run's predictions per dataset.")
  evaluate.add_argument("--root", required=True, help="the sweep's root (a folder or gs:// URL)")
  evaluate.add_argument("--datasets", required=True, metavar="NAME[:SPLIT],...",
                        help="e.g. koniq10k:test,livec:full,kadid10k (see mst-eval --help)")
  evaluate.add_argument("--data-dir", default=defaults.get_config().dataset.data_dir,
                        help="where the prepared datasets are (default %(default)s)")
  evaluate.add_argument("--manual-dir", help="one subfolder per dataset's original download, "
                        "for those not prepared yet")
  evaluate.add_argument("--output-dir", help="default: ROOT/cross_dataset")
  coll.add_argument("--root", required=True, help="the sweep's root (a folder or gs:// URL)")
  coll.add_argument("--name", choices=sorted(SWEEPS) + ["main"],
                    help="the sweep that made the runs; 'main': workdirs koniq, spaq, ava, "
                    "paq2piq (-seed<k>) beside the paper's main results")
  coll.add_argument("--config", help="with --name: the config the sweep ran on (lr_batch's "
                    "run names depend on it; default: the sweep's)")
  coll.add_argument("--arg", default=None, help="with --config: its variant")
  return parser


def _list() -> None:
  for name, sweep in SWEEPS.items():
    runs = sweep.runs(overrides_lib.load_config(sweep.config))
    print(f"{name} ({sweep.config}): {sweep.description}")
    for run in runs:
      print(f"  {run.name}: {run.overrides}")


def _collect(args) -> None:
  if not args.name:
    print(collect.report(args.root))
    return
  if args.name == "main":
    print(collect.report(args.root, "Dataset", collect.MAIN_TABLE))
    return
  sweep = SWEEPS[args.name]
  runs = sweep.runs(overrides_lib.load_config(args.config or sweep.config, args.arg))
  print(collect.report(args.root, sweep.setting, runs, median=sweep.median))


def _evaluate(args) -> int:
  """`evaluate`: mst-eval's cross-dataset evaluation of the finished runs under the root."""
  import jax  # pylint: disable=g-import-not-at-top  (only to evaluate)
  from mst.evaluation import cross_dataset  # pylint: disable=g-import-not-at-top
  from mst.evaluation import runs  # pylint: disable=g-import-not-at-top
  finished, unfinished = collect.find_runs(args.root)
  if not finished:
    print(f"error: no finished run under {args.root}", file=sys.stderr)
    return 2
  if unfinished:
    print(f"not finished, left out: {', '.join(unfinished)}")
  output_dir = args.output_dir or overrides_lib.workdir_join(args.root, "cross_dataset")
  try:
    targets = cross_dataset.parse_targets(args.datasets)
    results = runs.across(
        [overrides_lib.workdir_join(args.root, item.name) for item in finished], targets,
        runs.settings(jax.device_count()), output_dir=output_dir, data_dir=args.data_dir,
        manual_dir=args.manual_dir or "", runs=True, say=print)
  except errors.Error as e:
    print(f"error: {e}", file=sys.stderr)
    return e.status
  print("\n" + cross_dataset.table(results, [target.label for target in targets]))
  print(f"\nwritten to {output_dir}: cross_dataset.md, cross_dataset.json, report.html")
  return 0


def _run_all(commands: Sequence[list[str]], dry_run: bool) -> int:
  """Prints each command and runs it (unless `dry_run`); the first failure's exit status."""
  for command in commands:
    print(display(command), flush=True)
    if not dry_run:
      status = subprocess.run(command, check=False).returncode
      if status:
        return status
  return 0


def _setup(args) -> int:
  name, commit = pod_lib.release(str(REPO))
  archive = os.path.join(tempfile.gettempdir(), f"mst-{name}.tar.gz")
  extra = args.pip_extra
  if extra is None:
    extra = [f"jax[tpu]=={importlib.metadata.version('jax')}"]  # the jax mst is tested with
  target = pod_lib.Pod(args.tpu, args.zone, args.project)
  commands = [pod_lib.archive_command(str(REPO), name, commit, archive)]
  commands += pod_lib.setup_commands(target, archive, name, remote_dir=args.remote_dir,
                                     pip_extra=[spec for spec in extra if spec])
  return 1 if _run_all(commands, args.dry_run) else 0


def _unfinished(planned: Sequence[Planned], root: str, spec: str) -> list[pod_lib.RemoteRun]:
  """The runs to start (each printed with its progress): those without their test metrics."""
  try:
    states = read_progress(planned, root)
  except OSError as e:  # e.g. a gs:// root without credentials here: the workers may have them
    print(f"warning: {e}; starting every run (a finished one only evaluates again)",
          file=sys.stderr)
    states = [progress.Progress(item.name, "unknown") for item in planned]
  todo = []
  for item, state in zip(planned, states):
    print(f"{item.name}: {state.describe()}" + (", skipped" if state.finished else ""))
    if not state.finished:
      todo.append(remote_run(item, config_spec=spec, root=root))
  return todo


def _pod(args, planned: Sequence[Planned], config_path: str) -> int:
  spec = pod_lib.shipped_path(str(REPO), str(overrides_lib.resolve_config_path(config_path)))
  spec += f":{args.arg}" if args.arg else ""
  todo = _unfinished(planned, args.root, spec)
  if not todo:
    print(f"all {len(planned)} runs are finished")
    return 0
  script = os.path.join(tempfile.gettempdir(), f"mst-sweep-{args.name}.sh")
  text = pod_lib.run_script(args.name, todo, pod_lib.new_launch_id(), args.on_failure)
  with open(script, "w") as f:
    f.write(text)
  print(f"{script}, which every worker runs:\n{text}")
  target = pod_lib.Pod(args.tpu, args.zone, args.project)
  status = _run_all(pod_lib.launch_commands(target, args.name, script, args.remote_dir),
                    args.dry_run)
  if status == pod_lib.BUSY_STATUS:
    print("a worker is still running a sweep: see `status`, or wait", file=sys.stderr)
  return 1 if status else 0


def _slurm(args, planned: Sequence[Planned], config_path: str) -> int:
  """`slurm`: one sbatch of a job array, an array task per unfinished run (see
  experiments/slurm.py); prints the script with --dry-run, else the job id."""
  spec = str(overrides_lib.resolve_config_path(config_path))  # the nodes share this checkout
  spec += f":{args.arg}" if args.arg else ""
  todo = _unfinished(planned, args.root, spec)
  if not todo:
    print(f"all {len(planned)} runs are finished")
    return 0
  log_dir = os.path.abspath(os.path.expanduser(args.log_dir or f"~/mst-logs/{args.name}"))
  job = slurm_lib.ArrayJob(args.name, todo, ntasks_per_run=args.ntasks_per_run,
                           max_parallel=args.max_parallel, log_dir=log_dir, sbatch=args.sbatch)
  text = slurm_lib.array_script(job)
  if args.dry_run:
    print(f"the batch script (array tasks 0-{len(todo) - 1}: "
          f"{', '.join(run.name for run in todo)}):\n{text}", end="")
    return 0
  os.makedirs(log_dir, exist_ok=True)  # sbatch does not make the --output folder
  script = os.path.join(log_dir, f"mst-sweep-{args.name}.sbatch")
  with open(script, "w") as f:
    f.write(text)
  print(display(slurm_lib.submit_command(script)), flush=True)
  try:
    done = subprocess.run(slurm_lib.submit_command(script), check=False, capture_output=True,
                          text=True)
  except FileNotFoundError:
    print(f"error: no sbatch here: run this on a SLURM login node, or give --dry-run to print "
          f"the script ({script})", file=sys.stderr)
    return 1
  if done.returncode:
    print(f"error: sbatch {script} failed (status {done.returncode}): {done.stderr.strip()}",
          file=sys.stderr)
    return 1
  job_id = done.stdout.strip().split(";")[0]
  print(f"submitted job {job_id}: {len(todo)} runs as array tasks 0-{len(todo) - 1}; "
        f"squeue -j {job_id}; logs {job.log().replace('%A', job_id).replace('%a', '<task>')}")
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  args = make_parser().parse_args(argv)
  if args.command == "list":
    _list()
    return 0
  if args.command == "collect":
    _collect(args)
    return 0
  if args.command == "evaluate":
    return _evaluate(args)
  if args.command == "setup":
    try:
      return _setup(args)
    except ValueError as e:  # not a git checkout
      print(f"error: {e}", file=sys.stderr)
      return 2
  config_path = args.config or SWEEPS[args.name].config
  try:
    planned = plan(args.name, config_path, args.arg, args.set, args.seeds, args.only)
    if args.command == "pod":
      return _pod(args, planned, config_path)
    if args.command == "slurm":
      return _slurm(args, planned, config_path)
  except (KeyError, TypeError, ValueError) as e:  # a bad key or value: nothing has started
    print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
    return 2
  if args.command == "status":
    try:
      print(progress.table(read_progress(planned, args.root)))
    except OSError as e:
      print(f"error: {e}", file=sys.stderr)
      return 1
    return 0
  if args.dry_run:
    for item in planned:
      print(f"{overrides_lib.workdir_join(args.root, item.name)}: {item.overrides}")
    return 0
  failed = run_locally(planned, args.root)
  runs = list({item.run.name: item.run for item in planned}.values())
  print(collect.report(args.root, SWEEPS[args.name].setting, runs,
                       median=SWEEPS[args.name].median))
  if failed:
    print(f"{len(failed)} of {len(planned)} runs failed: {', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
