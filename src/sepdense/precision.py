"""Settings that training and evaluation choose the same way: the numeric precision, and the scalars to save."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def resolve_precision(precision: str | int) -> str | int:
    """'auto' means bf16 mixed precision on a GPU that supports it and full fp32 elsewhere."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


def scalars(values: Mapping[str, Any]) -> dict[str, float]:
    """The one-number entries of ``values`` (e.g. ``trainer.callback_metrics``) as floats."""
    return {k: float(v) for k, v in values.items() if torch.as_tensor(v).numel() == 1}
