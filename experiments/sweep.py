"""Run the paper's ablations (experiments/sweeps) locally or on a TPU pod, and tabulate them.

    python experiments/sweep.py list
    python experiments/sweep.py run spatial_embedding --root /tmp/se [--config configs/ava.py]
        [--arg runlocal] [--set dataset.data_dir=/data/tfds ...] [--seeds 0,1,2] [--only none,fixed]
        [--dry-run]
    python experiments/sweep.py pod multiscale --tpu my-pod --zone us-central2-b
        --root gs://bucket/multiscale [--remote-dir mst] [--dry-run]
    python experiments/sweep.py collect --root /tmp/se --name spatial_embedding
    python experiments/sweep.py collect --root runs/paper --name main   # the main results table

Each run trains in its own workdir `ROOT/<run>` (`ROOT/<run>-seed<k>` with --seeds). Every run's
config is built and validated before the first one starts, so a typo'd key or a bad value fails
at once, naming the key.

`run` trains in this process, one run after another, through `mst.trainer.train_and_evaluate`
(what mst-train calls), rather than one `mst-train` subprocess per run: Python,
TensorFlow and JAX start once, and the many small programs JAX compiles for eager ops
(parameter init, checkpoint copies) are compiled once for the whole sweep (on CPU a second run
compiled 9 programs instead of 144). A run keeps no state of its own after it ends (its jitted
functions go with it), a failing run (a diverging learning rate, say) is reported and the sweep
goes on, and runs that already have their test metrics are skipped, so re-running a sweep
finishes what is left. What a subprocess would add, isolation from a crash that kills the
process, matters on a pod, where `pod` runs each run's mst-train command on every worker of a
TPU VM (gcloud ... ssh --worker=all), one run after another.
"""

import argparse
import dataclasses
import os
import pathlib
import shlex
import subprocess
import sys
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import ml_collections  # pylint: disable=g-import-not-at-top

from experiments import collect  # pylint: disable=g-import-not-at-top
from mst.config import overrides as overrides_lib  # pylint: disable=g-import-not-at-top
from experiments.sweeps import Run  # pylint: disable=g-import-not-at-top
from experiments.sweeps import SWEEPS  # pylint: disable=g-import-not-at-top
from mst.config import resolve  # pylint: disable=g-import-not-at-top


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
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from mst import sharding  # pylint: disable=g-import-not-at-top
  from mst.training import trainer  # pylint: disable=g-import-not-at-top

  if tf.config.list_physical_devices("GPU"):
    tf.config.set_visible_devices([], "GPU")  # TensorFlow only feeds data, as in mst-train
  sharding.initialize_distributed()
  failed = []
  for i, item in enumerate(planned, 1):
    workdir = os.path.join(root, item.name)
    if os.path.exists(os.path.join(workdir, f"{item.config.dataset.test_split}_metrics.json")):
      print(f"[{i}/{len(planned)}] {item.name}: finished before, skipped", flush=True)
      continue
    print(f"[{i}/{len(planned)}] {item.name}: {item.overrides}", flush=True)
    try:
      trainer.train_and_evaluate(item.config, workdir)
    except Exception as e:  # pylint: disable=broad-except  # one bad setting must not end a sweep
      print(f"[{i}/{len(planned)}] {item.name} FAILED: {type(e).__name__}: {e}", flush=True)
      failed.append(item.name)
  return failed


def pod_command(item: Planned, *, config_spec: str, root: str, tpu: str, zone: str,
                project: str = "", remote_dir: str = "") -> list[str]:
  """The gcloud argv that runs `item` with mst-train on every worker of TPU VM `tpu`.

  The `--command` value is one shell line for the workers' shell, each word quoted there.
  """
  words = [f"cd {shlex.quote(remote_dir)} &&"] if remote_dir else []
  words += ["mst-train", f"--config={shlex.quote(config_spec)}",
            f"--workdir={shlex.quote(overrides_lib.workdir_join(root, item.name))}"]
  words += overrides_lib.as_flags(item.overrides)
  argv = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu, f"--zone={zone}"]
  argv += [f"--project={project}"] if project else []
  return argv + ["--worker=all", f"--command={' '.join(words)}"]


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


def _add_run_args(parser: argparse.ArgumentParser) -> None:
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
  pod = commands.add_parser(
      "pod", help="run every run of a sweep on all workers of a TPU VM (or print the commands)",
      description="For each run: gcloud compute tpus tpu-vm ssh TPU --zone ZONE --worker=all "
      "--command='mst-train --config=... --workdir=ROOT/<run> --config.KEY=VALUE ...'.")
  _add_run_args(pod)
  pod.add_argument("--tpu", required=True, help="the TPU VM's name")
  pod.add_argument("--zone", required=True, help="its zone, e.g. us-central2-b")
  pod.add_argument("--project", default="", help="its GCP project (default: gcloud's)")
  pod.add_argument("--remote-dir", default="",
                   help="where the mst checkout is on the workers (cd there first; relative "
                   "paths start at the home directory); --config is relative to it")
  coll = commands.add_parser(
      "collect", help="tabulate the finished runs under a root (markdown)",
      description="Reads ROOT/*/config.json and *_metrics.json; one row per setting (seeds "
      "averaged: mean ± std), SRCC and PLCC per split, and with --name the sweep's row order, "
      "labels and the paper's numbers.")
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
  print(collect.report(args.root, sweep.setting, runs))


def main(argv: Sequence[str] | None = None) -> int:
  args = make_parser().parse_args(argv)
  if args.command == "list":
    _list()
    return 0
  if args.command == "collect":
    _collect(args)
    return 0
  config_path = args.config or SWEEPS[args.name].config
  try:
    planned = plan(args.name, config_path, args.arg, args.set, args.seeds, args.only)
  except (KeyError, TypeError, ValueError) as e:  # a bad key or value: nothing has started
    print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
    return 2
  if args.command == "pod":
    spec = config_path + (f":{args.arg}" if args.arg else "")
    commands = [pod_command(item, config_spec=spec, root=args.root, tpu=args.tpu,
                            zone=args.zone, project=args.project, remote_dir=args.remote_dir)
                for item in planned]
    failed = []
    for item, command in zip(planned, commands):
      print(display(command), flush=True)
      if not args.dry_run and subprocess.run(command, check=False).returncode:
        failed.append(item.name)
  elif args.dry_run:
    for item in planned:
      print(f"{overrides_lib.workdir_join(args.root, item.name)}: {item.overrides}")
    return 0
  else:
    failed = run_locally(planned, args.root)
    runs = list({item.run.name: item.run for item in planned}.values())
    print(collect.report(args.root, SWEEPS[args.name].setting, runs))
  if failed:
    print(f"{len(failed)} of {len(planned)} runs failed: {', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
