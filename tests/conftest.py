"""Test setup: 8 fake CPU devices before JAX initialises, and quiet TensorFlow."""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
# Keep TensorFlow off the device memory JAX may use, and single-threaded enough for 2 cores.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
