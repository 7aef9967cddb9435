"""Prints setup.py's jax and jaxlib requirements (e.g. `jax>=0.10.2,<0.13 jaxlib>=0.10.2,<0.13`),
so .ci/newest-stack installs the newest jax setup.py allows before installing mst over it."""

import ast
import pathlib
import re

SETUP = pathlib.Path(__file__).resolve().parent.parent / "setup.py"

for node in ast.parse(SETUP.read_text()).body:
  if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "INSTALL_REQUIRES":
    print(" ".join(r for r in ast.literal_eval(node.value) if re.match(r"jax(lib)?[<>=]", r)))
