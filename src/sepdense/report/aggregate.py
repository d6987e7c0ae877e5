"""Grouping runs by conv type and reducing their metrics to mean ± std over seeds."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sepdense.models import ordered_conv_types
from sepdense.runs import Run

QUALITY = ("test/acc", "test/precision", "test/recall", "test/f1")


@dataclass(frozen=True)
class Figure:
    """A cost the report shows, by one definition, named in every column header that shows it."""

    key: str
    label: str  # the column header, with its unit; "{unit}" where the unit follows the values (fit time)
    scale: float = 1.0


# The costs of the headline, the findings' ratios and the efficiency table: each ratio in the findings is of two
# numbers shown under the same header. Peak memory is measured differently on each device (``measure.py``), so
# it is two figures, named by what each is; ``settle_costs`` files a run's ``memory/peak_mb`` under one of them.
COSTS = (
    Figure("model/params", "parameters (M)", 1e-6),
    Figure("model/macs", "forward MACs per image (M)", 1e-6),
    Figure("time/train_epoch_s", "median training time per epoch, without validation (s)"),
    Figure("time/fit_s", "fit time, all epochs with validation ({unit})"),
    Figure("memory/peak_rss_mb", "process peak resident memory during fit, CPU (MB)"),
    Figure("memory/peak_cuda_mb", "peak CUDA memory allocated during fit, GPU (MB)"),
    Figure("model/latency_b1_ms", "latency, batch 1 (ms)"),
)
THROUGHPUT = Figure("time/train_images_per_s", "median training images/s")
MEMORY = {"cpu": "memory/peak_rss_mb", "gpu": "memory/peak_cuda_mb"}

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
    """Numbers inside ``text`` compared as numbers: growth_rate=6 before 12, lr=0.01 before 0.1."""
    return [float(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+(?:\.\d+)?)", text))]


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


def time_axis(seconds: list[float]) -> tuple[float, str]:
    """A scale and unit that keep training times readable: seconds, minutes or hours."""
    longest = max(seconds, default=0)
    if longest >= 2 * 3600:
        return 1 / 3600, "h"
    if longest >= 120:
        return 1 / 60, "min"
    return 1, "s"


def decimals(value: float, significant: int = 3) -> int:
    """Decimals that show ``value`` to ``significant`` digits (none for values of 100 and more)."""
    return max(0, significant - 1 - math.floor(math.log10(abs(value)))) if value else 0


def cell(stats: dict[str, float] | None, scale: float = 1.0, digits: int | None = 2) -> str:
    """'mean ± std' (or the single value) of ``stats`` times ``scale``, for a table; ``digits`` None: the mean to
    three significant digits and the std to the same decimals, so that a ratio of two cells can be checked."""
    if stats is None:
        return "n/a"
    mean = stats["mean"] * scale
    digits = decimals(mean) if digits is None else digits
    if stats["n"] == 1:
        return f"{mean:,.{digits}f}"
    return f"{mean:,.{digits}f} ± {stats['std'] * scale:,.{digits}f}"


def cost_columns(stats: dict[Cell, Stats]) -> list[tuple[Figure, str, float]]:
    """(figure, column header, scale) of each cost any cell has; the fit time's unit follows its values."""
    scale, unit = time_axis([s["time/fit_s"]["mean"] for s in stats.values() if "time/fit_s" in s])
    columns = []
    for figure in COSTS:
        if any(figure.key in s for s in stats.values()):
            fit = figure.key == "time/fit_s"
            columns.append((figure, figure.label.format(unit=unit), figure.scale * (scale if fit else 1)))
    return columns
