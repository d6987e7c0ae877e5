"""Settings that training and evaluation choose the same way: the numeric precision, and the scalars to save."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

# PyTorch's own CPU feature checks (cpuinfo, as its kernel dispatch reads them); private, so each may be absent.
NATIVE_BF16_CHECKS = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def cpu_runs_bf16_natively() -> bool:
    """Whether this CPU has bf16 instructions (AVX512_BF16 or AMX), where oneDNN's bf16 convs are faster than fp32.

    Without them oneDNN emulates bf16 through fp32 and a bf16 step is slower, not faster.
    """
    return any(getattr(torch.cpu, name, lambda: False)() for name in NATIVE_BF16_CHECKS)


def resolve_precision(precision: str | int, accelerator: str = "auto") -> str | int:
    """'auto' means bf16 mixed precision where the device runs bf16 natively (a GPU that supports it, a CPU with
    AVX512_BF16 or AMX) and full fp32 elsewhere; any other value is kept as given."""
    if precision != "auto":
        return precision
    if str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_runs_bf16_natively() else "32-true"


def scalars(values: Mapping[str, Any]) -> dict[str, float]:
    """The one-number entries of ``values`` (e.g. ``trainer.callback_metrics``) as floats."""
    return {k: float(v) for k, v in values.items() if torch.as_tensor(v).numel() == 1}
