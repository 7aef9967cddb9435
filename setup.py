"""mst: the Multi-Scale image Transformer (MUSIQ) in JAX/Flax."""

import re

import setuptools

# CPU jax by default; see docs/install.md for the GPU (jax[cuda12], jax[cuda13]) and TPU
# (jax[tpu]) ones. Tested on two stacks (docs/install.md, "The tested stacks"): Python 3.11 with
# jax 0.10.2, and Python 3.13 with the newest releases (jax 0.12.1). Each range starts at the
# oldest release tested and stops before the next minor version not yet tested; an installed
# release inside a range is never replaced, so installing mst keeps a GPU or TPU host's jax and
# its CUDA or libtpu plugin.
INSTALL_REQUIRES = [
    # jax 0.11 and later need Python 3.12: pip takes the newest one a Python can run.
    "jax>=0.10.2,<0.13",
    "jaxlib>=0.10.2,<0.13",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    # Exports pin StableHLO to TF 2.21's version (mst/scoring/xla_call.py): test before widening.
    "tensorflow-cpu>=2.21,<2.22",
    "tensorflow-datasets>=4.9.10,<4.10",
    "orbax-checkpoint>=0.12.8,<0.13",
    # Workdir files (config.json, checkpoint folders) locally or on cloud storage, without TF.
    "etils[epath]>=1.7,<1.16",
    "clu>=0.0.12,<0.1",
    "ml_collections>=1.1.0,<1.2",
    "tensorboard>=2.20,<2.22",  # clu's summary writers import it; TF 2.21 no longer pulls it in.
    "importlib_resources>=6,<8",  # tensorflow-datasets imports it.
    "numpy>=1.26,<2.6",
    # jax, TF and tensorstore need >= 0.5.1; 0.7.0 takes 0.9 s to import (0.6.0: 0.01 s), a
    # quarter of a second mst-predict start.
    "ml_dtypes>=0.5.1,<0.7",
    "scipy>=1.11,<1.19",
    # Pillow writes and resizes dataset images (SPAQ's shorter-side-512 config, demo set).
    "pillow>=10.0,<13.1",
    "openpyxl>=3.1,<3.2",  # reads SPAQ's .xlsx labels.
    "scikit-image>=0.22,<0.27",  # ships the photographs the bundled demo set is made from.
    "matplotlib>=3.8,<3.12",  # mst-visualize's figures.
    # libjpeg-turbo with TF's default (fast integer) DCT: scoring without TF.
    "simplejpeg>=1.7,<1.10",
    # JAX locks the shared compilation cache with it (mst/runtime/compilation_cache.py).
    "filelock>=3.12,<4.4",
]

# The release is written once, in mst/version.py; read without importing mst (not installed yet).
VERSION = re.search(r'^__version__ = "([^"]+)"$', open("mst/version.py", encoding="utf-8").read(),
                    re.M).group(1)

setuptools.setup(
    name="mst",
    version=VERSION,
    description="Multi-Scale image quality Transformer (MUSIQ) in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    ],
    # Only `mst`: the config files in configs/ are loaded by path and import `mst.config.defaults`.
    packages=setuptools.find_packages(include=["mst", "mst.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # torch: the independent PyTorch MUSIQ that tests and benchmarks compare the Flax model
        # with. Pinned exactly: on Linux a looser range pulls a multi-GB CUDA build of a newer
        # release, where 2.13.0 resolves to the CPU wheel on our CI machines; on Python 3.12 and
        # newer PyPI has only CUDA builds, so the tests that need it skip there, saying why.
        # ruff: the linter .ci/run runs before the tests (settings in pyproject.toml).
        "test": ["pytest>=8,<9.3", "pytest-xdist>=3,<3.9", "ruff>=0.17,<0.18",
                 "torch==2.13.0; python_version < '3.12'"],
        "bench": ["torch==2.13.0"],
    },
    entry_points={
        "console_scripts": [
            "mst-train=mst.cli.train:main",
            "mst-predict=mst.cli.predict:main",
            "mst-eval=mst.cli.evaluate:main",
            "mst-visualize=mst.cli.visualize:main",
            "mst-datasets=mst.cli.datasets:main",
            "mst-export=mst.cli.export:main",
        ],
    },
)
