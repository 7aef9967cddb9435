"""docs/clusters.md's Kubernetes manifest is a JobSet that runs mst-train the way mst needs: one
indexed pod per host, process 0's address and every process's id for JAX, the compilation cache
on shared storage, a grace period to save after SIGTERM, and restarts that resume after exit 75."""

import re

import yaml

from mst import errors
from mst.cli import train
from support import REPO

DOCS = REPO / "docs"


def _manifest():
  (block,) = re.findall(r"```yaml\n(.*?)```", (DOCS / "clusters.md").read_text(), re.S)
  return yaml.safe_load(block)


def test_the_jobset_gives_jax_and_mst_what_they_need():
  manifest = _manifest()
  assert manifest["kind"] == "JobSet"
  name = manifest["metadata"]["name"]
  (workers,) = manifest["spec"]["replicatedJobs"]
  job = workers["template"]["spec"]
  assert job["completionMode"] == "Indexed" and job["parallelism"] == job["completions"]
  pod = job["template"]["spec"]
  assert pod["terminationGracePeriodSeconds"] >= 60  # time to save after SIGTERM
  assert manifest["spec"]["failurePolicy"]["maxRestarts"] > 0  # exit 75 restarts, then resumes
  (container,) = pod["containers"]
  env = {item["name"]: item for item in container["env"]}
  # Pod 0 of the JobSet's replicated job, by the headless service named after the JobSet.
  assert env["JAX_COORDINATOR_ADDRESS"]["value"].startswith(
      f"{name}-{workers['name']}-0-0.{name}:")
  assert env["JAX_NUM_PROCESSES"]["value"] == str(job["completions"])
  assert "job-completion-index" in env["JAX_PROCESS_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
  cache = env["MST_CACHE_DIR"]["value"]
  assert any(cache.startswith(mount["mountPath"]) for mount in container["volumeMounts"])
  assert errors.PREEMPTED == 75


def test_the_command_is_one_mst_train_accepts(monkeypatch):
  (container,) = _manifest()["spec"]["replicatedJobs"][0]["template"]["spec"]["template"][
      "spec"]["containers"]
  command, *argv = container["command"]
  assert command == "mst-train"
  monkeypatch.chdir(REPO)  # where the image runs it: configs/ beside it
  args, config = train.parse_args(argv)  # the config file loads and every override is a key
  assert args.workdir.startswith("gs://")
  assert config.dataset.data_dir == "gs://my-bucket/tfds"
