"""experiments/pod_worker.py: a pod's workers fail as one. Two local processes stand in for two
workers sharing a workdir: when one worker's command fails, the other's is stopped and both read
the same verdict; a run script (pod.run_script) starts the next run on neither worker before both
ended the failed one, and with --on-failure stop on neither at all; a missing worker is named
after the barrier's timeout."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from experiments import pod
from experiments import pod_worker
from support import REPO
from support.pods import install_pod_worker

# Tests of experiments/ tooling: only the full suite runs them (pytest.ini).
pytestmark = pytest.mark.experiments

FAIL_AT_ONCE = "import sys; sys.exit(3)"
# Runs for at most 20 s; SIGTERM ends it with 75, as mst-train after saving a checkpoint. It
# creates its first argument once its handler is in place: a SIGTERM that came before would end it
# with 143, as it would end an mst-train still starting up.
STOPS_ON_TERM = ("import pathlib, signal, sys, time\n"
                 "signal.signal(signal.SIGTERM, lambda *_: sys.exit(75))\n"
                 "pathlib.Path(sys.argv[1]).touch()\n"
                 "time.sleep(20)\n")
IGNORES_TERM = ("import pathlib, signal, sys, time\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "pathlib.Path(sys.argv[1]).touch()\n"
                "time.sleep(20)\n")


def _start(worker: str, workdir, code: str, *extra: str, workers: int = 2,
           code_args: tuple[str, ...] = ()) -> subprocess.Popen:
  """pod_worker as `worker` of a pod of `workers`, running `python -c code`, polling fast."""
  argv = [sys.executable, "-m", "experiments.pod_worker", "--sweep", "s", "--run", "r",
          "--workdir", str(workdir), "--launch", "L1", "--poll", "0.1", *extra, "--",
          sys.executable, "-c", code, *code_args]
  env = {**os.environ, "MST_POD_WORKERS": str(workers), "MST_POD_WORKER": worker}
  return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> tuple[int, str, str]:
  out, err = process.communicate(timeout=30)
  return process.returncode, out, err


def _wait_for(path, process: subprocess.Popen) -> None:
  """Waits until `process`'s command has created `path` (its SIGTERM handler is in place)."""
  deadline = time.monotonic() + 20
  while not path.exists():
    assert process.poll() is None and time.monotonic() < deadline, _finish(process)
    time.sleep(0.02)


def _verdict(err: str) -> str:
  (line,) = [line for line in err.splitlines() if " failed: " in line]
  return line


def _marker(workdir, worker: str) -> dict:
  return json.loads((workdir / "logs" / "launch-L1" / f"{worker}.exit").read_text())


def test_one_workers_failure_stops_the_others_and_both_read_the_same_verdict(tmp_path):
  ready = tmp_path / "w1-ready"
  w1 = _start("w1", tmp_path, STOPS_ON_TERM, code_args=(str(ready),))
  _wait_for(ready, w1)
  start = time.monotonic()
  w0 = _start("w0", tmp_path, FAIL_AT_ONCE)
  (code0, out0, err0), (code1, out1, err1) = _finish(w0), _finish(w1)
  assert time.monotonic() - start < 8  # w1's command would have run 20 s
  assert (code0, code1) == (pod_worker.RUN_FAILED, pod_worker.RUN_FAILED)
  assert "w0 ended the run with exit status 3: stopping" in err1
  assert _verdict(err0) == _verdict(err1) == (
      "pod_worker: sweep s, run r failed: w0 first, with exit status 3; stopped for it: w1 (75); "
      "the sweep goes on with its next run, if any")
  assert (out0, out1) == ("exit status 3\n", "exit status 75\n")  # each worker's own status
  assert (_marker(tmp_path, "w0")["status"], _marker(tmp_path, "w0")["stopped_for"]) == (3, "")
  assert (_marker(tmp_path, "w1")["status"], _marker(tmp_path, "w1")["stopped_for"]) == (75, "w0")


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
  ready = tmp_path / "w1-ready"
  w1 = _start("w1", tmp_path, IGNORES_TERM, "--grace", "0.5", "--on-failure", "stop",
              code_args=(str(ready),))
  _wait_for(ready, w1)
  w0 = _start("w0", tmp_path, FAIL_AT_ONCE)
  (_, _, err0), (code1, out1, err1) = _finish(w0), _finish(w1)
  assert code1 == pod_worker.RUN_FAILED and out1 == "exit status 137\n"  # 128 + SIGKILL
  assert "still running 0.5 s after SIGTERM: SIGKILL" in err1
  assert _verdict(err1).endswith("stopped for it: w1 (137); the sweep stops (--on-failure stop)")
  assert _verdict(err0).startswith("pod_worker: sweep s, run r failed: w0 first")


def test_a_run_that_ends_with_0_everywhere_passes(tmp_path):
  workers = [_start(f"w{k}", tmp_path, "pass") for k in range(2)]
  assert [_finish(process) for process in workers] == [(0, "exit status 0\n", "")] * 2


def test_the_barrier_names_a_missing_worker_after_its_timeout(tmp_path):
  start = time.monotonic()
  code, out, err = _finish(_start("w0", tmp_path, "pass", "--barrier-timeout", "1"))
  assert code == pod_worker.RUN_FAILED and out == "exit status 0\n"
  assert 1 <= time.monotonic() - start < 8
  assert "after 1 s, 1 of 2 workers (w1) wrote no exit marker in " in err
  # Names that do not end in a worker's index cannot be guessed: the message says who was seen.
  code, _, err = _finish(_start("alpha", tmp_path / "b", "pass", "--barrier-timeout", "0.2",
                                workers=3))
  assert code == pod_worker.RUN_FAILED and "2 of 3 workers (all but alpha) wrote no" in err


def test_a_command_that_cannot_start_fails_the_run(tmp_path):
  argv = ["--sweep", "s", "--run", "r", "--workdir", str(tmp_path), "--launch", "L1", "--",
          str(tmp_path / "no-such-command")]
  process = subprocess.run([sys.executable, "-m", "experiments.pod_worker", *argv], cwd=REPO,
                           env={**os.environ, "MST_POD_WORKERS": "1"}, capture_output=True,
                           text=True, timeout=30)
  assert process.returncode == pod_worker.RUN_FAILED
  assert process.stdout == "exit status 127\n" and "cannot start" in process.stderr


def test_the_worker_count_comes_from_the_metadata_server(monkeypatch):
  monkeypatch.delenv("MST_POD_WORKERS", raising=False)
  asked = []

  class Response:
    def __init__(self, request, timeout):
      asked.append((request.full_url, request.get_header("Metadata-flavor"), timeout))

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      return False

    def read(self):
      return b"unknown:unknown:10.0.0.2,unknown:unknown:10.0.0.3,unknown:unknown:10.0.0.4"

  monkeypatch.setattr(urllib.request, "urlopen", Response)
  assert pod_worker.worker_count(timeout=2.0) == 3
  assert asked == [(pod_worker.METADATA_URL, "Google", 2.0)]

  def unreachable(request, timeout):
    raise urllib.error.URLError("Name or service not known")

  monkeypatch.setattr(urllib.request, "urlopen", unreachable)
  with pytest.raises(pod_worker.PodError, match="cannot read the number of workers from the "
                     "Cloud TPU metadata server .*Name or service not known.*set MST_POD_WORKERS"):
    pod_worker.worker_count(tries=1)
  monkeypatch.setenv("MST_POD_WORKERS", "two")
  with pytest.raises(pod_worker.PodError, match="MST_POD_WORKERS='two': give the number"):
    pod_worker.worker_count()


def test_names_and_the_verdict_are_the_same_whoever_reads_them():
  assert pod_worker.likely_names("t1v-n-0c1d2e3f-w-1", 4) == [
      f"t1v-n-0c1d2e3f-w-{k}" for k in range(4)]
  assert pod_worker.likely_names("w5", 4) is None and pod_worker.likely_names("host", 2) is None
  markers = {  # w2 was stopped for w1 before w0 failed on its own: w0 still comes first
      "w0": pod_worker.Marker("w0", 1, 20.0),
      "w1": pod_worker.Marker("w1", 0, 5.0),
      "w2": pod_worker.Marker("w2", 75, 10.0, stopped_for="w3"),
      "w3": pod_worker.Marker("w3", 2, 30.0)}
  assert pod_worker.verdict(markers, "r") == (
      pod_worker.RUN_FAILED, "run r failed: w0 first, with exit status 1; also failed: w3 (2); "
      "stopped for it: w2 (75)")
  assert pod_worker.verdict(dict(reversed(markers.items())), "r") == pod_worker.verdict(
      markers, "r")
  assert pod_worker.verdict({"w1": markers["w1"]}, "r") == (0, "")


# ------------------------------------------------------------------- run scripts, two workers

# Stands in for mst-train: notes when it started and ended in its workdir (times-<worker>); run1
# fails on w0 0.3 s after w1's has started (and trapped SIGTERM), w1's run1 runs 10 s unless
# SIGTERM (exit 75), every other run 0.3 s.
FAKE_MST_TRAIN = """#!/bin/bash
for word in "$@"; do case "$word" in --workdir=*) workdir="${word#--workdir=}";; esac; done
times="$workdir/times-$MST_POD_WORKER"
trap 'echo "end $(date +%s.%N)" >> "$times"; exit 75' TERM
mkdir -p "$workdir"; echo "start $(date +%s.%N)" >> "$times"
case "$workdir:$MST_POD_WORKER" in
  */run1:w0) for _ in $(seq 200); do [ -e "$workdir/times-w1" ] && break; sleep 0.05; done
    sleep 0.3; echo "end $(date +%s.%N)" >> "$times"; echo "bad input" >&2; exit 3;;
  */run1:w1) for _ in $(seq 100); do sleep 0.1; done;;
  *) sleep 0.3;;
esac
echo "end $(date +%s.%N)" >> "$times"
"""


def _run_scripts(tmp_path, on_failure: str) -> list[subprocess.CompletedProcess]:
  """Two workers (their own homes, one root) running the same two-run script side by side."""
  root = tmp_path / "runs"
  runs = [pod.RemoteRun(name, str(root / name), [f"--workdir={root / name}"])
          for name in ("run1", "run2")]
  script = pod.run_script("s", runs, "L1", on_failure)
  workers = []
  for worker in ("w0", "w1"):
    home = tmp_path / worker
    install_pod_worker(home)
    (home / "mst-venv" / "bin" / "mst-train").write_text(FAKE_MST_TRAIN)
    (home / "mst-venv" / "bin" / "mst-train").chmod(0o755)
    (home / "mst-logs" / "s").mkdir(parents=True)  # what the launch makes
    env = {**os.environ, "HOME": str(home), "MST_POD_WORKERS": "2", "MST_POD_WORKER": worker}
    workers.append(subprocess.Popen(["bash", "-c", script], cwd=home / "mst", env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  done = []
  for process in workers:
    out, _ = process.communicate(timeout=30)
    done.append(subprocess.CompletedProcess(process.args, process.returncode, out))
  return done


def _times(root, run: str, worker: str) -> dict[str, float]:
  path = root / run / f"times-{worker}"
  return {key: float(value) for key, value in
          (line.split() for line in path.read_text().splitlines())} if path.exists() else {}


def _run1_log(tmp_path, worker: str) -> str:
  return (tmp_path / worker / "mst-logs" / "s" / "run1.log").read_text()


def test_after_a_failed_run_every_worker_goes_on_together(tmp_path):
  done = _run_scripts(tmp_path, "continue")
  assert [process.returncode for process in done] == [0, 0], [p.stdout for p in done]
  root = tmp_path / "runs"
  run1 = [_times(root, "run1", worker) for worker in ("w0", "w1")]
  run2 = [_times(root, "run2", worker) for worker in ("w0", "w1")]
  assert all(set(times) == {"start", "end"} for times in run1 + run2)
  assert run1[1]["end"] - run1[1]["start"] < 5  # w1's run1 was stopped, not run for 10 s
  # Neither worker started run2 before both had ended run1.
  assert min(times["start"] for times in run2) > max(times["end"] for times in run1)
  assert _run1_log(tmp_path, "w0").endswith("w0 first, with exit status 3; stopped for it: w1 "
                                            "(75); the sweep goes on with its next run, if any\n"
                                            "exit status 3\n")
  assert _run1_log(tmp_path, "w1").endswith("exit status 75\n")
  assert (root / "run2" / "logs" / "launch-L1" / "w1.exit").exists()


def test_after_a_failed_run_with_stop_no_worker_starts_the_next(tmp_path):
  done = _run_scripts(tmp_path, "stop")
  assert [process.returncode for process in done] == [pod_worker.RUN_FAILED] * 2
  assert all(p.stdout == "run1 failed: the sweep stops (--on-failure stop)\n" for p in done)
  assert not (tmp_path / "runs" / "run2").exists()
  assert "the sweep stops (--on-failure stop)\nexit status 3\n" in _run1_log(tmp_path, "w0")
  assert _run1_log(tmp_path, "w1").endswith("exit status 75\n")
