"""setup.py's ranges admit the stack under test, so `pip install` of mst keeps it.

pip replaces an installed distribution only when a requirement excludes its version; when each
range holds what is installed (jax 0.10.2 on the Python 3.11 stack, the newest releases on the
Python 3.13 one: `.ci/newest-stack` also installs mst over a newer jax and checks it stayed),
installing mst on a GPU or TPU host leaves its jax and the CUDA or libtpu plugin beside it alone.
"""

import ast
import importlib.metadata

from packaging.requirements import Requirement
from packaging.version import Version

from support import REPO

SETUP = REPO / "setup.py"


def _install_requires() -> list[Requirement]:
  for node in ast.parse(SETUP.read_text()).body:
    if isinstance(node, ast.Assign) and node.targets[0].id == "INSTALL_REQUIRES":
      return [Requirement(text) for text in ast.literal_eval(node.value)]
  raise AssertionError(f"{SETUP} has no INSTALL_REQUIRES")


def test_every_requirement_admits_the_installed_release():
  outside = {}
  for requirement in _install_requires():
    installed = importlib.metadata.version(requirement.name)
    if not requirement.specifier.contains(installed, prereleases=True):
      outside[requirement.name] = (installed, str(requirement.specifier))
  assert not outside, f"installed releases outside setup.py's ranges: {outside}"


def test_every_core_dependency_is_capped_above_the_installed_minor():
  """A cap below the next minor would downgrade a tested stack; no cap would admit untested ones."""
  for requirement in _install_requires():
    caps = [Version(spec.version) for spec in requirement.specifier if spec.operator == "<"]
    if requirement.name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint",
                            "tensorflow-cpu", "tensorflow-datasets", "numpy"):
      assert caps, f"{requirement} has no upper bound"
      installed = Version(importlib.metadata.version(requirement.name))
      assert all(cap > Version(f"{installed.major}.{installed.minor}") for cap in caps), \
          requirement


def test_jax_ranges_reach_the_newest_tested_release():
  """Python 3.12+ gets jax 0.12.x: the range must not stop at the Python 3.11 stack's 0.10."""
  by_name = {requirement.name: requirement for requirement in _install_requires()}
  for name in ("jax", "jaxlib"):
    assert by_name[name].specifier.contains("0.10.2")
    assert by_name[name].specifier.contains("0.12.1")
    assert not by_name[name].specifier.contains("0.13.0")
