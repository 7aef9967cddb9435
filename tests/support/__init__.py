"""What the test modules share, one module a concern, so that no test module defines a helper again
or imports another test module:

  checkpoints      the small model, its scoring params and official-format .npz files
  configs          `set_fields` and `tiny_run_config` (configs/custom.py cut to a few CPU steps)
  images           image file bytes and the tiny learnable CSV dataset (conftest's `csv_dataset`)
  downloads        fake original-format downloads of the datasets, their writers and readers
  runs             running mst-train in subprocesses and reading what a run wrote
  pods             a pod worker's home as `experiments/pod.py`'s setup leaves it
  readme_code      the code blocks of a section of the README or of docs/
  fault_injection  the script the fault tests run: mst-train with a fault at a named moment
  slurm_cluster    a one-node SLURM cluster in a temporary folder

Imported as `from support import ...` (pytest.ini puts tests/ on the path). Importing most of them
imports JAX, so conftest.py sets JAX's flags first.
"""

import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]  # the checkout: configs/, experiments/, docs/
DATA = REPO / "tests" / "data"  # the compatibility fixture (never rewritten, see compat_test)
# How far a score may be from the one the fixture recorded: last bits that another kind of CPU
# sums differently (system/compat_test.py says how far, where).
REPLAY_TOLERANCE = 5e-5

# Why the PyTorch cross-checks skip where torch is missing: PyPI's Linux torch for Python 3.12 and
# newer is a multi-GB CUDA build, so setup.py's test extra asks for the CPU wheel on 3.11 only.
NO_TORCH = "no torch: setup.py's [test] extra installs the CPU torch 2.13.0 on Python 3.11 only"
