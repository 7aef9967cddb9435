"""experiments/sweep.py: every sweep builds valid configs, overrides fail loudly, pod commands are
exact and parse back to the same config, collect tabulates seeds as mean ± std, and a tiny sweep
trains end to end on CPU and collects into a table."""

import fcntl
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time

import pytest

from experiments import collect
from experiments import pod
from experiments import sweep
from experiments.sweeps import Run
from experiments.sweeps import SWEEPS
from mst.cli import train as train_cli
from mst.configure import overrides
from mst.configure import resolve
from mst.data import multiscale
from mst.models import musiq
from support import DATA
from support.downloads import livec_files
from support.downloads import write_zip
from support.pods import install_pod_worker

# Tests of experiments/ tooling: only the full suite runs them (pytest.ini).
pytestmark = pytest.mark.experiments


def _keys_of(config, key):
  for part in key.split("."):
    config = config[part]
  return config


@pytest.mark.parametrize("name", sorted(SWEEPS))
@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_every_sweep_builds_valid_configs_on_its_config(name, arg):
  planned = sweep.plan(name, SWEEPS[name].config, arg)
  names = [item.name for item in planned]
  assert len(names) >= 2 and len(set(names)) == len(names)
  for item in planned:
    for key, value in item.run.overrides.items():
      got = _keys_of(item.config, key)
      assert got == (tuple(value) if isinstance(value, list) else value), (item.name, key)
    assert isinstance(resolve.model_config(item.config), musiq.ModelConfig)
    for train in (True, False):
      assert isinstance(resolve.preprocess_config(item.config, train),
                        multiscale.MultiScaleConfig)
  # No two runs of a sweep train the same thing.
  configs = [json.dumps(item.config.to_dict(), sort_keys=True, default=str) for item in planned]
  assert len(set(configs)) == len(configs)


def test_sweeps_are_the_papers_ablations():
  ava = overrides.load_config("configs/ava.py")
  runs = {name: {run.name: run for run in SWEEPS[name].runs(ava)} for name in SWEEPS}
  assert list(runs["spatial_embedding"]) == ["none", "fixed", "hse_g5", "hse_g10", "hse_g15"]
  assert runs["spatial_embedding"]["hse_g10"].paper == (0.726, 0.738)
  assert runs["spatial_embedding"]["none"].paper == (0.704, 0.716)
  assert runs["scale_embedding"]["no_sce"].overrides == {"model.use_scale_embedding": False}
  assert list(runs["patch_encoder"]) == ["linear", "conv", "resnet"]
  assert [r.overrides["preprocess.patch_size"] for r in runs["patch_size"].values()] == [
      16, 32, 48, 64]
  assert runs["patch_size"]["p64"].paper == (0.705, 0.719)
  assert len(runs["lr_batch"]) == 9 and runs["lr_batch"]["lr0.12_b512"].overrides == {
      "optim.learning_rate": 0.12, "train.batch_size": 512}  # AVA's own setting is the centre


@pytest.mark.parametrize("run_name, labels, scales, tokens", [
    ("224", "(224)", 2, 49),  # no native scale: evaluation drops the native image too
    ("512_384_224", "(512, 384, 224)", 4, 49 + 144 + 256),
    ("full", "(full)", 1, 24 * 32),  # all native patches of a 768 x 1024 image
    ("full_384_224", "(full, 384, 224)", 3, 49 + 144 + 24 * 32),
])
def test_multiscale_compositions_keep_the_native_image_only_with_full(run_name, labels, scales,
                                                                      tokens):
  planned = {item.name: item for item in sweep.plan("multiscale", "configs/paq2piq.py")}
  config = planned[run_name].config
  assert planned[run_name].run.label == labels
  assert resolve.model_config(config).num_scales == scales
  assert resolve.preprocess_config(config, train=False).seq_len(768, 1024) == tokens
  train_native = resolve.preprocess_config(config, train=True).max_seq_len_from_original_res
  assert train_native == (512 if "full" in run_name else 0)
  assert len(planned) == 9


def test_bad_keys_and_values_fail_before_anything_runs():
  with pytest.raises(KeyError, match=r"model\.spatial_embeding \(did you mean "
                     r"model\.spatial_embedding\?\)"):
    sweep.plan("patch_size", "configs/ava.py", sets=["model.spatial_embeding=none"])
  with pytest.raises(TypeError, match="train.batch_size"):
    sweep.plan("patch_size", "configs/ava.py", sets=["train.batch_size=big"])
  with pytest.raises(ValueError, match="preprocess.patch_size: the sweep sets it"):
    sweep.plan("patch_size", "configs/ava.py", sets=["preprocess.patch_size=16"])
  with pytest.raises(ValueError, match="model.patch_encoder"):  # validated, not just typed
    sweep.plan("patch_size", "configs/ava.py", sets=["model.patch_encoder=vit"])
  base = overrides.load_config("configs/ava.py")
  with pytest.raises(TypeError, match="use_scale_embedding"):
    overrides.apply_overrides(base, {"model.use_scale_embedding": 0})
  with pytest.raises(KeyError, match="optim.nope"):
    overrides.apply_overrides(base, {"optim.nope": 1, "seed": 1})
  assert sweep.main(["run", "patch_size", "--root", "/nonexistent", "--set", "x.y=1"]) == 2
  with pytest.raises(ValueError, match="--only p24: not a run of patch_size"):
    sweep.plan("patch_size", "configs/ava.py", only=["p16", "p24"])
  assert [item.name for item in sweep.plan("patch_size", "configs/ava.py", only=["p64"])] == [
      "p64"]
  no_tokens = overrides.apply_overrides(base, {"preprocess.longer_side_lengths": (),
                                               "preprocess.max_seq_len": 0})
  with pytest.raises(ValueError, match="no tokens are left"):
    resolve.validate(no_tokens)


def test_set_values_parse_with_the_keys_types():
  base = overrides.load_config("configs/custom.py")
  parse = lambda text: overrides.parse_assignment(base, text)
  assert parse("preprocess.longer_side_lengths=(384, 224)") == (
      "preprocess.longer_side_lengths", (384, 224))
  assert parse("model.spatial_embedding=none") == ("model.spatial_embedding", "none")
  assert parse("model.use_scale_embedding=false") == ("model.use_scale_embedding", False)
  assert parse("optim.learning_rate=1e-3") == ("optim.learning_rate", 1e-3)
  assert parse("dataset.csv=123") == ("dataset.csv", "123")  # a string key keeps the text


def test_pod_runs_are_exact_and_parse_back_to_the_planned_config(monkeypatch):
  planned = {item.name: item for item in sweep.plan(
      "multiscale", "configs/paq2piq.py", sets=["dataset.data_dir=gs://b/my tfds"],
      seeds=[3])}
  item = planned["384_224-seed3"]
  run = sweep.remote_run(item, config_spec="configs/paq2piq.py", root="gs://b/ms/")
  words = ("--config=configs/paq2piq.py --workdir=gs://b/ms/384_224-seed3 "
           "--config.dataset.data_dir='gs://b/my tfds' "
           "--config.preprocess.longer_side_lengths='(384, 224)' "
           "--config.preprocess.max_seq_len=0 --config.seed=3")
  assert (run.name, run.workdir, " ".join(run.args)) == (
      "384_224-seed3", "gs://b/ms/384_224-seed3", words)
  local = sweep.remote_run(planned["full-seed3"], config_spec="configs/paq2piq.py:runlocal",
                           root="/nfs/ms")
  log = "$HOME/mst-logs/multiscale/384_224-seed3.log"
  local_log = "$HOME/mst-logs/multiscale/full-seed3.log"
  header = [
      "# sweep multiscale, launch L1: started by experiments/sweep.py pod on every worker",
      'export PATH="$HOME/mst-venv/bin:$HOME/.local/bin:$PATH"  # setup\'s venv (python3, '
      "mst-train); ~/.local/bin: an older setup's"]
  worker = "python3 -m experiments.pod_worker --sweep multiscale --run"
  assert pod.run_script("multiscale", [run, local], "L1").splitlines() == header + [
      f"{worker} 384_224-seed3 --workdir gs://b/ms/384_224-seed3 --launch L1 --on-failure "
      f"continue -- mst-train {words} > {log} 2>&1; verdict=$?; "
      f"gcloud storage cp --quiet {log} gs://b/ms/384_224-seed3/logs/host-$(hostname).log",
      f"{worker} full-seed3 --workdir /nfs/ms/full-seed3 --launch L1 --on-failure continue -- "
      "mst-train --config=configs/paq2piq.py:runlocal --workdir=/nfs/ms/full-seed3 "
      "--config.dataset.data_dir='gs://b/my tfds' --config.preprocess.longer_side_lengths='()' "
      f"--config.seed=3 > {local_log} 2>&1; verdict=$?; "
      f"mkdir -p /nfs/ms/full-seed3/logs && cp {local_log} "
      "/nfs/ms/full-seed3/logs/host-$(hostname).log"]
  # With --on-failure stop, a run that failed on any worker ends the sweep on every worker.
  stop = pod.run_script("multiscale", [local], "L2", on_failure="stop").splitlines()[-1]
  assert stop.startswith(f"{worker} full-seed3 --workdir /nfs/ms/full-seed3 --launch L2 "
                         "--on-failure stop -- mst-train --config=configs/paq2piq.py:runlocal ")
  assert stop.endswith(
      "/nfs/ms/full-seed3/logs/host-$(hostname).log; [ \"$verdict\" -eq 0 ] || "
      "{ echo 'full-seed3 failed: the sweep stops (--on-failure stop)'; exit \"$verdict\"; }")
  with pytest.raises(ValueError, match="on_failure 'halt': one of continue, stop"):
    pod.run_script("multiscale", [local], "L3", on_failure="halt")

  # What mst-train on a worker parses from the script is exactly the planned config.
  monkeypatch.chdir(overrides.REPO_ROOT)
  for item in (planned["384_224-seed3"], planned["full-seed3"]):
    args = sweep.remote_run(item, config_spec="configs/paq2piq.py", root="gs://b").args
    _, config = train_cli.parse_args(shlex.split(" ".join(args)))
    assert config.to_dict() == item.config.to_dict()


def test_pod_launch_and_setup_commands_are_exact():
  target = pod.Pod("pod-1", "us-central2-b", "proj")
  scp, ssh = pod.launch_commands(target, "multiscale", "/tmp/runs.sh")
  assert scp == ["gcloud", "compute", "tpus", "tpu-vm", "scp", "/tmp/runs.sh",
                 "pod-1:mst-sweep-multiscale.sh", "--zone=us-central2-b", "--project=proj",
                 "--worker=all"]
  logs = "$HOME/mst-logs/multiscale"
  command = (
      f'mkdir -p {logs} && cd mst || {{ echo "$(hostname): no ~/mst: run sweep.py setup first" '
      ">&2; exit 1; }; [ -f experiments/pod_worker.py ] || { echo \"$(hostname): ~/mst has no "
      'experiments/pod_worker.py (set up by an earlier version): run sweep.py setup again" >&2; '
      "exit 1; }; exec 9>>~/.mst-sweep.lock; flock -n 9 || { echo \"$(hostname): busy, "
      'a sweep holds ~/.mst-sweep.lock" >&2; exit 75; }; '
      f"mv ~/mst-sweep-multiscale.sh {logs}/runs.sh || exit 1; setsid nohup "
      f"bash {logs}/runs.sh > {logs}/sweep.log 2>&1 < /dev/null & "
      f'echo "$(hostname): started, log {logs}/sweep.log"')
  assert ssh == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod-1", "--zone=us-central2-b",
                 "--project=proj", "--worker=all", f"--command={command}"]
  assert shlex.split(sweep.display(ssh)) == ssh  # the printed line is the same argv

  scp, ssh = pod.setup_commands(pod.Pod("p", "z"), "/tmp/mst-abc.tar.gz", "abc",
                                remote_dir="mst", pip_extra=["jax[tpu]==0.10.2"])
  assert scp == ["gcloud", "compute", "tpus", "tpu-vm", "scp", "/tmp/mst-abc.tar.gz",
                 "p:mst-abc.tar.gz", "--zone=z", "--worker=all"]
  assert ssh[-1] == (
      "--command=set -e; [ -d mst-abc ] || tar -xzf mst-abc.tar.gz; "
      "[ -x mst-venv/bin/pip ] || python3 -m venv mst-venv || { sudo -n apt-get update -qq && "
      "sudo -n apt-get install -y -qq python3-venv && python3 -m venv mst-venv; } || "
      '{ echo "$(hostname): cannot create ~/mst-venv with python3 -m venv, even after apt-get '
      "install python3-venv: install python3-venv (or python3.X-venv) on the image and run "
      'setup again" >&2; exit 1; }; '
      "mst-venv/bin/python -m pip install --quiet ./mst-abc 'jax[tpu]==0.10.2'; "
      'ln -sfn mst-abc mst; echo "$(hostname): mst abc installed in ~/mst-venv, ~/mst -> mst-abc"')
  assert shlex.split(sweep.display(ssh)) == ssh


def _git(repo, *args):
  return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                         *args], check=True, capture_output=True, text=True).stdout.strip()


def test_setup_ships_the_checkout_with_its_uncommitted_changes(tmp_path):
  repo = tmp_path / "repo"
  (repo / "configs").mkdir(parents=True)
  (repo / "configs" / "a.py").write_text("A = 1\n")
  _git(repo, "init", "-q")
  _git(repo, "add", ".")
  _git(repo, "commit", "-qm", "first")
  head = _git(repo, "rev-parse", "--short=12", "HEAD")
  assert pod.release(str(repo)) == (head, head)
  (repo / "configs" / "a.py").write_text("A = 2\n")  # uncommitted: shipped all the same
  (repo / "configs" / "new.py").write_text("")  # untracked: not shipped
  name, commit = pod.release(str(repo))
  assert re.fullmatch(rf"{head}-dirty-[0-9a-f]{{8}}", name) and commit.startswith(name[-8:])
  assert _git(repo, "status", "--porcelain") == "M configs/a.py\n?? configs/new.py"  # untouched
  archive = tmp_path / f"mst-{name}.tar.gz"
  subprocess.run(pod.archive_command(str(repo), name, commit, str(archive)), check=True)
  with tarfile.open(archive) as tar:
    assert tar.extractfile(f"mst-{name}/configs/a.py").read() == b"A = 2\n"
    assert f"mst-{name}/configs/new.py" not in tar.getnames()
  assert pod.shipped_path(str(repo), str(repo / "configs" / "a.py")) == "configs/a.py"
  with pytest.raises(ValueError, match="new.py is not tracked by git.*git add configs/new.py"):
    pod.shipped_path(str(repo), str(repo / "configs" / "new.py"))
  with pytest.raises(ValueError, match="outside the checkout"):
    pod.shipped_path(str(repo), str(tmp_path / "elsewhere.py"))


def _fake_run(root, name, config, **metrics_by_split):
  os.makedirs(root / name)
  (root / name / "config.json").write_text(json.dumps(config.to_dict()))
  for split, metrics in metrics_by_split.items():
    (root / name / f"{split}_metrics.json").write_text(json.dumps(metrics))


def test_collect_averages_seeds_and_sets_the_papers_numbers_beside(tmp_path, capsys):
  runs = {run.name: run for run in SWEEPS["scale_embedding"].runs(None)}
  base = overrides.load_config("configs/ava.py")
  for name, srcc in (("sce-seed0", 0.70), ("sce-seed1", 0.72), ("no_sce-seed0", 0.65)):
    config = overrides.apply_overrides(base, runs[name.split("-")[0]].overrides)
    _fake_run(tmp_path, name, config, test={"srcc": srcc, "plcc": srcc + 0.01, "rmse": 1.0})
  _fake_run(tmp_path, "no_sce-seed1", base)  # started, not finished
  os.makedirs(tmp_path / "not_a_run")
  assert sweep.main(["collect", "--root", str(tmp_path), "--name", "scale_embedding"]) == 0
  assert capsys.readouterr().out == (
      "| Scale embedding | runs | SRCC | PLCC | paper SRCC | paper PLCC |\n"
      "|---|---:|---:|---:|---:|---:|\n"
      "| with SCE | 2 | 0.710 ± 0.014 | 0.720 ± 0.014 | 0.726 | 0.738 |\n"
      "| without SCE | 1 | 0.650 | 0.660 | 0.717 | 0.729 |\n"
      "\n"
      "Unfinished (no metrics yet): no_sce-seed1\n")
  # Without --name: rows by name, no paper columns.
  assert collect.report(str(tmp_path)).splitlines()[:4] == [
      "| Run | runs | SRCC | PLCC |", "|---|---:|---:|---:|",
      "| no_sce | 1 | 0.650 | 0.660 |", "| sce | 2 | 0.710 ± 0.014 | 0.720 ± 0.014 |"]
  # A root whose configs contradict the sweep is refused, not tabulated.
  with pytest.raises(ValueError, match="sce-seed0: model.use_scale_embedding=True"):
    collect.report(str(tmp_path), runs=[Run("sce", {"model.use_scale_embedding": False})])


def test_collect_shows_every_split_it_finds(tmp_path):
  config = overrides.load_config("configs/paq2piq.py")
  _fake_run(tmp_path, "a", config, test={"srcc": 0.5, "plcc": 0.6},
            validation={"srcc": 0.4, "plcc": 0.3})
  assert collect.report(str(tmp_path)).splitlines() == [
      "| Run | runs | test SRCC | test PLCC | validation SRCC | validation PLCC |",
      "|---|---:|---:|---:|---:|---:|",
      "| a | 1 | 0.500 | 0.600 | 0.400 | 0.300 |"]


def test_splits_sweep_trains_ten_seeded_splits_and_reports_their_median(tmp_path, capsys):
  runs = SWEEPS["splits"].runs(None)
  assert [run.overrides for run in runs] == [{"dataset.split_seed": k} for k in range(10)]
  base = overrides.load_config("configs/iqa.py", "kadid10k")
  for seed, srcc in enumerate((0.80, 0.84, 0.82, 0.90, 0.70)):
    config = overrides.apply_overrides(base, runs[seed].overrides)
    _fake_run(tmp_path, f"split{seed}", config, test={"srcc": srcc, "plcc": srcc + 0.05})
  assert sweep.main(["collect", "--root", str(tmp_path), "--name", "splits"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[2] == "| split seed 0 | 1 | 0.800 | 0.850 |"
  # Sorted SRCCs 0.70 0.80 0.82 0.84 0.90: median 0.82, quartiles 0.80 and 0.84.
  assert lines[-1] == "Not started: split5, split6, split7, split8, split9"
  assert lines[-6:-2] == [
      "| summary of runs | runs | median | IQR | min to max |", "|---|---:|---:|---:|---:|",
      "| test SRCC | 5 | 0.820 | 0.800 to 0.840 | 0.700 to 0.900 |",
      "| test PLCC | 5 | 0.870 | 0.850 to 0.890 | 0.750 to 0.950 |"]


@pytest.mark.slow
def test_evaluate_scores_every_finished_run_on_several_datasets(tmp_path, capsys):
  """Two finished runs (copies of the checked-in workdir) on LIVE Challenge from its files."""
  root = tmp_path / "sweep"
  for name in ("a", "b"):
    shutil.copytree(DATA / "compat_workdir", root / name)
  os.makedirs(root / "unfinished")
  (root / "unfinished" / "config.json").write_text("{}")
  write_zip(tmp_path / "manual" / "livec" / "ChallengeDB_release.zip", livec_files()[0])
  assert sweep.main(["evaluate", "--root", str(root), "--datasets", "livec",
                     "--data-dir", str(tmp_path / "tfds"),
                     "--manual-dir", str(tmp_path / "manual")]) == 0
  out = capsys.readouterr().out
  assert "not finished, left out: unfinished" in out
  table = json.loads((root / "cross_dataset" / "cross_dataset.json").read_text())
  assert table["checkpoints"] == [str(root / "a"), str(root / "b")]
  a, b = (table["results"][str(root / name)]["livec:full"] for name in ("a", "b"))
  assert a == b and -1 <= a["srcc"] <= 1  # the same parameters score the same
  for name in ("a", "b"):
    assert (root / "cross_dataset" / name / "livec_full" / "predictions.csv").exists()


@pytest.mark.slow
def test_a_tiny_sweep_trains_end_to_end_and_collects(csv_dataset, tmp_path, capsys):
  root = tmp_path / "sweep"
  args = ["run", "scale_embedding", "--config", "configs/custom.py", "--arg", "runlocal",
          "--root", str(root), "--set", f"dataset.csv={csv_dataset}",
          "--set", f"dataset.data_dir={tmp_path / 'tfds'}", "--set", "train.num_steps=2",
          # The smallest model and no validation evals: compiling is most of a CPU run's time.
          "--set", "model.patch_encoder=linear", "--set", "model.num_layers=1",
          "--set", "dataset.eval_split="]
  assert sweep.main(args) == 0
  assert sorted(os.listdir(root)) == ["no_sce", "sce"]
  for name, flag in (("sce", True), ("no_sce", False)):
    saved = json.loads((root / name / "config.json").read_text())
    assert saved["model"]["use_scale_embedding"] is flag
    assert saved["train"]["num_steps"] == 2 and saved["dataset"]["name"] == "custom"
    assert {"srcc", "plcc"} <= set(json.loads((root / name / "test_metrics.json").read_text()))
  capsys.readouterr()

  assert sweep.main(["collect", "--root", str(root), "--name", "scale_embedding"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0] == "| Scale embedding | runs | SRCC | PLCC | paper SRCC | paper PLCC |"
  number = r"-?\d\.\d{3}|nan"
  assert [line.split(" | ")[0] for line in lines[2:]] == ["| with SCE", "| without SCE"]
  for line in lines[2:]:
    assert re.fullmatch(rf"\| [\w ]+ \| 1 \| ({number}) \| ({number}) \| 0\.7\d\d \| 0\.7\d\d \|",
                        line), line

  # Running the sweep again trains nothing: both runs have their test metrics.
  assert sweep.main(args) == 0
  assert capsys.readouterr().out.count("finished before, skipped") == 2


# Stands in for mst-train on a "worker": notes a checkpoint at step 2, waits until the test
# creates ~/go (at most 20 s), then finishes (test_metrics.json) or, for seed 1, fails with
# status 3.
FAKE_MST_TRAIN = """#!/bin/bash
for word in "$@"; do case "$word" in --workdir=*) workdir="${word#--workdir=}";; esac; done
mkdir -p "$workdir/checkpoints/2" "$workdir/checkpoints/4.orbax-checkpoint-tmp-1"
for _ in $(seq 200); do [ -e "$HOME/go" ] && break; sleep 0.1; done
case " $* " in *" --config.seed=1 "*) echo "diverged" >&2; exit 3;; esac
echo '{"srcc": 0.5}' > "$workdir/test_metrics.json"
"""


def _launch_here(home, out: str) -> subprocess.CompletedProcess:
  """Does what the printed gcloud scp and ssh commands do, on this machine as the worker."""
  lines = out.strip().splitlines()
  scp, ssh = shlex.split(lines[-2]), shlex.split(lines[-1])
  (home / scp[-3].split(":")[1]).write_bytes(open(scp[-4], "rb").read())
  return subprocess.run(["bash", "-c", ssh[-1].partition("=")[2]], cwd=home, text=True,
                        capture_output=True, env={**os.environ, "HOME": str(home)}, timeout=10)


def test_pod_runs_detached_skips_finished_runs_and_reports_status(tmp_path, capsys,
                                                                  monkeypatch):
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
  monkeypatch.setenv("MST_POD_WORKERS", "1")  # the worker is a pod of one (no metadata server)
  home = tmp_path / "home"
  install_pod_worker(home)  # what setup installs: ~/mst's pod_worker, in ~/mst-venv's python3
  (home / ".local" / "bin").mkdir(parents=True)  # mst-train where an older setup put it
  (home / ".local" / "bin" / "mst-train").write_text(FAKE_MST_TRAIN)
  (home / ".local" / "bin" / "mst-train").chmod(0o755)
  root = tmp_path / "runs"
  args = ["scale_embedding", "--config", "configs/custom.py", "--root", str(root), "--seeds",
          "0,1", "--only", "sce", "--set", "train.num_steps=4"]
  pod_args = ["pod", *args, "--tpu", "p", "--zone", "z", "--dry-run"]
  assert sweep.main(pod_args) == 0
  out = capsys.readouterr().out
  assert out.startswith("sce-seed0: not started\nsce-seed1: not started\n")

  start = time.monotonic()
  launch = _launch_here(home, out)
  assert launch.returncode == 0 and time.monotonic() - start < 1.0  # detached: runs wait for go
  assert launch.stdout == f"{socket.gethostname()}: started, log {home}/mst-logs/" \
      "scale_embedding/sweep.log\n"
  busy = _launch_here(home, out)  # a second launch while the first sweep runs is refused
  assert busy.returncode == pod.BUSY_STATUS and "busy, a sweep holds" in busy.stderr
  old = tmp_path / "old-home"  # a release that an earlier setup installed: no pod_worker
  (old / "mst").mkdir(parents=True)
  refused = _launch_here(old, out)
  assert refused.returncode == 1 and refused.stderr == (
      f"{socket.gethostname()}: ~/mst has no experiments/pod_worker.py (set up by an earlier "
      "version): run sweep.py setup again\n")
  assert not (old / "mst-logs" / "scale_embedding" / "sweep.log").exists()
  (home / "go").touch()
  logs = {seed: root / f"sce-seed{seed}" / "logs" / f"host-{socket.gethostname()}.log"
          for seed in (0, 1)}
  deadline = time.monotonic() + 20
  while not logs[1].exists() and time.monotonic() < deadline:
    time.sleep(0.2)
  assert logs[0].read_text() == "exit status 0\n"
  assert logs[1].read_text() == (
      "diverged\npod_worker: sweep scale_embedding, run sce-seed1 failed: "
      f"{socket.gethostname()} first, with exit status 3; the sweep goes on with its next run, "
      "if any\nexit status 3\n")

  assert sweep.main(["status", *args]) == 0
  assert capsys.readouterr().out.splitlines() == [
      "sce-seed0  finished", f"sce-seed1  step 2 of 4; last exit: {socket.gethostname()}: 3",
      "1 of 2 runs finished"]
  # Launched again, only the unfinished run is in the script.
  assert sweep.main(pod_args) == 0
  out = capsys.readouterr().out
  assert out.startswith("sce-seed0: finished, skipped\nsce-seed1: step 2 of 4; last exit: ")
  script = (tmp_path / "mst-sweep-scale_embedding.sh").read_text()
  assert "--workdir=" + str(root / "sce-seed1") in script and "sce-seed0" not in script

  # The first sweep's lock goes with its last process, so this launch starts; its own lock goes
  # when its one run ends.
  deadline = time.monotonic() + 10
  while (again := _launch_here(home, out)).returncode == pod.BUSY_STATUS:
    assert time.monotonic() < deadline, "the ended sweep still holds the lock"
    time.sleep(0.2)
  assert again.returncode == 0, again.stderr
  assert _lock_is_free(home / ".mst-sweep.lock", seconds=10)


def _lock_is_free(path, seconds: float) -> bool:
  """Whether the flock(1) lock on `path` is free, or becomes free within `seconds`."""
  deadline = time.monotonic() + seconds
  with open(path, "a") as lock:
    while True:
      try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
      except BlockingIOError:
        if time.monotonic() > deadline:
          return False
        time.sleep(0.1)
