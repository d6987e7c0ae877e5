"""Grouping runs by conv type and reducing their metrics to mean ± std over seeds."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from sepdense.models import ordered_conv_types
from sepdense.runs import Run

QUALITY = ("test/acc", "test/precision", "test/recall", "test/f1")
# (metric key, column label, unit scale, digits)
EFFICIENCY = (
    ("model/params", "parameters (M)", 1e-6, 3),
    ("model/macs", "MACs / image (M)", 1e-6, 1),
    ("time/train_images_per_s", "train images/s", 1, 1),
    ("time/train_epoch_s", "train epoch (s)", 1, 1),
    ("memory/peak_mb", "peak memory (MB)", 1, 0),
    ("model/latency_b1_ms", "latency, batch 1 (ms)", 1, 2),
    ("time/fit_s", "fit time (s)", 1, 1),
)

Stats = dict[str, dict[str, float]]  # metric -> {"mean", "std", "n"}


def mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def by_conv(runs: list[Run]) -> dict[str, list[Run]]:
    """The complete runs of each conv type, in registry order (the baseline first)."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if run.complete:
            groups.setdefault(run.conv, []).append(run)
    return {conv: groups[conv] for conv in ordered_conv_types(groups) if conv in groups}


Cell = tuple[str, str]  # (conv type, network setting such as "growth_rate=12"; "" when only one)


def by_cell(groups: dict[str, list[Run]], label: Callable[[Run], str]) -> dict[Cell, list[Run]]:
    """The runs of each (conv type, setting), conv types in registry order, settings in natural order (6 < 12)."""
    cells: dict[Cell, list[Run]] = {}
    for conv, runs in groups.items():
        for run in sorted(runs, key=lambda r: natural_key(label(r))):
            cells.setdefault((conv, label(run)), []).append(run)
    return cells


def natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def cell_name(key: Cell) -> str:
    conv, setting = key
    return f"{conv} ({setting})" if setting else conv


def aggregate(runs: list[Run], keys: list[str]) -> Stats:
    out = {}
    for key in keys:
        values = [r.metrics[key] for r in runs if isinstance(r.metrics.get(key), int | float)]
        if values:
            mean, std = mean_std(values)
            out[key] = {"mean": mean, "std": std, "n": len(values)}
    return out


def cell(stats: dict[str, float] | None, scale: float = 1.0, digits: int = 2) -> str:
    """'mean ± std' (or the single value) of ``stats`` times ``scale``, for a table."""
    if stats is None:
        return "n/a"
    if stats["n"] == 1:
        return f"{stats['mean'] * scale:,.{digits}f}"
    return f"{stats['mean'] * scale:,.{digits}f} ± {stats['std'] * scale:,.{digits}f}"
