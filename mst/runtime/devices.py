"""Peak throughput of the accelerators mst knows, for model FLOP utilisation (MFU) in training.

`peak_tflops(kind)` maps a `jax.devices()[0].device_kind` string to the chip's dense bf16 peak in
TFLOP/s, the usual denominator of MFU. The numbers are the vendors' datasheet peaks for dense
bf16 matrix math, without the 2:4 structured sparsity NVIDIA's headline figures include (half of
those): NVIDIA's H100 / H200 and A100 datasheets, Google Cloud's TPU system-architecture pages
(v4, v5e, v5p, v6e). A kind not listed (a CPU, an unknown chip) has no peak: training then logs
no MFU unless `config.train.peak_tflops` gives one. A float32 run is measured against the bf16
peak too, so its MFU reads low, as it should.
"""

import re

# (regular expression, matched against the whole lower-cased device kind; dense bf16 TFLOP/s per
# chip). The first match wins, so the variants come before the general patterns.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"nvidia h100 pcie.*", 756.0),  # H100 PCIe: 1513 with sparsity
    (r"nvidia h[12]00.* nvl.*", 835.0),  # H100 NVL / H200 NVL: 1671 with sparsity
    (r"nvidia h[12]00.*", 989.0),  # H100 SXM ("NVIDIA H100 80GB HBM3"), H200: 1979 with sparsity
    (r"nvidia a100.*", 312.0),  # A100 SXM4 and PCIe, 40 and 80 GB: 624 with sparsity
    (r"tpu v4", 275.0),  # not "TPU v4 lite" (v4i)
    (r"tpu v5 ?lite|tpu v5e", 197.0),
    (r"tpu v5p?", 459.0),  # v5p's device kind is "TPU v5"
    (r"tpu v6 ?lite|tpu v6e", 918.0),  # Trillium
)


def peak_tflops(kind: str) -> float | None:
  """The dense bf16 peak of one `kind` device in TFLOP/s; None for a kind not in the table."""
  name = " ".join(kind.lower().split())
  for pattern, tflops in PEAK_BF16_TFLOPS:
    if re.fullmatch(pattern, name):
      return tflops
  return None


def peak_per_device(configured: float, kind: str) -> float | None:
  """`config.train.peak_tflops` when set (> 0), else the table's peak for `kind` (None: no MFU)."""
  return float(configured) if configured > 0 else peak_tflops(kind)
