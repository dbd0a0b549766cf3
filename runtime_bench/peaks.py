"""Peak dense bf16 tensor-core throughput of a device, for MFU, looked up by exact model.

NVIDIA data sheets quote sparse figures ("with sparsity"); dense is half. Variants of one chip
differ a lot: an H100 PCIe has 76 % of an H100 SXM's peak, so matching "H100" alone overstates
a PCIe card's MFU by a third. torch reports e.g. "NVIDIA H100 80GB HBM3" (SXM), "NVIDIA H100
PCIe", "NVIDIA H100 NVL", "NVIDIA H200" (SXM), "NVIDIA H200 NVL", "NVIDIA A100-SXM4-80GB".
An unknown model gives NaN and a note: pass `--peak-tflops` to the benchmark instead.
"""

from __future__ import annotations

import os
import re

# (pattern on the lower-cased device name, dense bf16 TFLOP/s, label); first match wins.
GPU_PEAKS_BF16: tuple[tuple[str, float, str], ...] = (
    (r"h200.*nvl", 835.0, "H200 NVL"),
    (r"h200", 989.0, "H200 SXM"),
    (r"gh200", 989.0, "GH200"),
    (r"h100.*nvl", 835.0, "H100 NVL"),
    (r"h100.*pcie", 756.0, "H100 PCIe"),
    (r"h100", 989.0, "H100 SXM"),
    (r"h800.*pcie", 756.0, "H800 PCIe"),
    (r"h800", 989.0, "H800 SXM"),
    (r"b200", 2250.0, "B200"),
    (r"a100", 312.0, "A100"),
    (r"a800", 312.0, "A800"),
    (r"l40s", 362.0, "L40S"),
    (r"l4\b", 121.0, "L4"),
    (r"a10g", 70.0, "A10G"),
    (r"a10\b", 125.0, "A10"),
)


def gpu_peak(name: str) -> tuple[float, str]:
    """(dense bf16 FLOP/s, which entry matched) for a `torch.cuda.get_device_name()` string."""
    low = name.lower()
    # GH200 contains "h200": check it before the H200 patterns.
    if "gh200" in low:
        return 989.0e12, f"{name}: GH200 dense bf16 989 TFLOP/s"
    for pattern, tflops, label in GPU_PEAKS_BF16:
        if re.search(pattern, low):
            return tflops * 1e12, f"{name}: {label} dense bf16 {tflops:g} TFLOP/s"
    return float("nan"), f"{name}: peak unknown (pass --peak-tflops)"


def cpu_peak(threads: int, ghz: float) -> tuple[float, str]:
    """fp32 FMA peak: threads × 2 FMA units × SIMD lanes × 2 FLOPs × clock."""
    flags = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    lanes = 16 if "avx512f" in flags else 8
    return threads * 2 * lanes * 2 * ghz * 1e9, f"{threads} threads × 2 FMA × {lanes} fp32 lanes × {ghz} GHz"
