"""Peak dense tensor throughput of known GPUs, and model FLOPs utilisation (MFU) against it.

MFU = model FLOPs per sample × samples/s / peak FLOP/s, with model FLOPs = 2 × MACs (a
multiply-accumulate is two operations) for inference and 3 × that for training (the backward
pass costs twice the forward: the convention of the PaLM paper's MFU, which excludes
recomputation and anything else an implementation adds).

The peak is the dense (no 2:4 sparsity) tensor-core figure for the run's matmul precision: bf16 or
fp16 under autocast (fp32 accumulation: the GeForce cards run those at half the rate the
datasheets headline), tf32 for `--precision no` when `torch.get_float32_matmul_precision()` allows
it (fgbench leaves it at PyTorch's default, `highest`), else plain fp32. `--peak-tflops`
overrides the table; an unknown device (or a CPU) has no MFU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DevicePeak:
    name: str
    pattern: str  # regular expression searched in torch.cuda.get_device_name()
    bf16: float | None  # dense TFLOP/s
    fp16: float | None
    tf32: float | None
    fp32: float


# Sources: NVIDIA datasheets (H100, H200, A100, L40S, L40, L4, A10, V100) and the architecture
# whitepapers for GeForce cards (Ada: RTX 4090; Ampere GA102: RTX 3090), dense figures, i.e. half
# of the "with sparsity" numbers. Most specific patterns first.
PEAKS: tuple[DevicePeak, ...] = (
    DevicePeak("H100 PCIe", r"H100.*PCIe", 756.5, 756.5, 378.0, 51.2),
    DevicePeak("H100 NVL", r"H100 NVL", 835.5, 835.5, 417.5, 60.0),
    DevicePeak("H100 SXM", r"H100", 989.4, 989.4, 494.7, 66.9),
    DevicePeak("H200 NVL", r"H200 NVL", 835.5, 835.5, 417.5, 60.0),
    DevicePeak("H200 SXM", r"H200", 989.4, 989.4, 494.7, 66.9),
    DevicePeak("A100", r"A100", 312.0, 312.0, 156.0, 19.5),
    DevicePeak("L40S", r"L40S", 362.05, 362.05, 183.0, 91.6),
    DevicePeak("L40", r"L40\b", 181.05, 181.05, 90.5, 90.5),
    DevicePeak("L4", r"\bL4\b", 121.0, 121.0, 60.0, 30.3),
    DevicePeak("A10", r"\bA10\b", 125.0, 125.0, 62.5, 31.2),
    DevicePeak("RTX 4090", r"RTX 4090", 165.2, 165.2, 82.6, 82.6),
    DevicePeak("RTX 3090", r"RTX 3090(?! Ti)", 71.0, 71.0, 35.6, 35.6),
    DevicePeak("V100", r"V100", None, 125.0, None, 15.7),
)


def find_peak(device_name: str) -> DevicePeak | None:
    for peak in PEAKS:
        if re.search(peak.pattern, device_name):
            return peak
    return None


def matmul_precision(precision: str) -> str:
    """The tensor precision the model's matmuls run in: bf16, fp16, tf32 or fp32."""
    if precision in ("bf16", "fp16"):
        return precision
    return "fp32" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def peak_tflops(device: torch.device, precision: str, override: float | None = None) -> tuple[float | None, str]:
    """(peak dense TFLOP/s, where it comes from) for the run; (None, reason) when unknown."""
    if override is not None:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "no peak for a CPU (pass --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    peak = find_peak(name)
    kind = matmul_precision(precision)
    value = getattr(peak, kind) if peak else None
    if value is None:
        return None, f"{name} ({kind}) is not in the peak table (pass --peak-tflops)"
    return value, f"{peak.name} dense {kind} (datasheet)"


def mfu(samples_per_sec: float | None, gmacs_per_sample: float | None, peak: float | None,
        train: bool) -> float | None:
    """Model FLOPs utilisation in [0, 1]: 2 FLOPs per MAC, times 3 for a training step."""
    if not samples_per_sec or not gmacs_per_sample or not peak:
        return None
    flops = 2.0 * gmacs_per_sample * 1e9 * (3.0 if train else 1.0)
    return flops * samples_per_sec / (peak * 1e12)
