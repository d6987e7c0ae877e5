"""Accuracy against cost across network settings (e.g. widths): one point per conv type and setting,
each conv type's Pareto front, and which conv type is ahead at equal cost.

A sweep such as ``experiment=tradeoff`` (growth rate 6, 12, 24 × conv type) gives each conv type
a curve of test accuracy against cost; comparing the two Pareto fronts at equal MACs or equal
measured training time says whether one conv type buys more accuracy for the same cost, which a
single width cannot tell apart from "a narrower standard net would do the same".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from sepdense.runs import Run

COSTS = {"model/macs": "MACs", "time/fit_s": "measured training time", "model/params": "parameters"}


@dataclass
class Point:
    """The runs (seeds) of one conv type at one network setting."""

    conv: str
    setting: str
    runs: list[Run]

    def has(self, key: str) -> bool:
        """Whether every run (seed) logged ``key``: means are taken over all of them or not at all."""
        return all(key in r.metrics for r in self.runs)

    def mean(self, key: str) -> float:
        return float(np.mean([r.metrics[key] for r in self.runs]))

    @property
    def accuracy(self) -> float:
        return self.mean("test/acc")


def dataset(run: Run) -> str:
    """Which data a run used, from its config: the source's kind and, for files, the folder or archive name."""
    config = OmegaConf.to_container(run.config, resolve=False) if run.config is not None else {}
    source = (config.get("data") or {}).get("source")
    if not isinstance(source, dict):
        return "?"
    kind = str(source.get("_target_", "?")).rsplit(".", 1)[-1]
    root = source.get("root")  # as saved, unresolved: its last part names the folder or archive either way
    return f"{kind}:{Path(str(root)).name}" if root else kind


def _settings(run: Run) -> dict[str, str]:
    """The network settings of a run and, as ``data``, its dataset: runs on different data never share a cell."""
    model = OmegaConf.to_container(run.config.model, resolve=True) if run.config is not None else {}
    return {**{k: str(v) for k, v in model.items() if k not in ("conv", "_target_")}, "data": dataset(run)}


def varying_settings(runs: list[Run]) -> list[str]:
    """The settings (model config keys, and ``data``) whose values differ between runs (apart from the conv type)."""
    settings = [_settings(r) for r in runs]
    keys = sorted({k for s in settings for k in s})
    return [k for k in keys if len({s.get(k) for s in settings}) > 1]


def setting_label(run: Run, keys: list[str]) -> str:
    settings = _settings(run)
    return ", ".join(f"{k}={settings.get(k)}" for k in keys)


def points(groups: dict[str, list[Run]], keys: list[str]) -> dict[str, list[Point]]:
    """Per conv type, one point per network setting (mean over its seeds), among runs with a test accuracy."""
    out: dict[str, list[Point]] = {}
    for conv, runs in groups.items():
        by_setting: dict[str, list[Run]] = {}
        for run in runs:
            if "test/acc" in run.metrics:
                by_setting.setdefault(setting_label(run, keys), []).append(run)
        out[conv] = [Point(conv, setting, rs) for setting, rs in by_setting.items()]
    return out


def pareto_front(conv_points: list[Point], cost: str) -> list[Point]:
    """The points no other point of the list beats on both cost (lower) and accuracy (higher), by cost."""
    front, best = [], -np.inf
    for point in sorted((p for p in conv_points if p.has(cost)), key=lambda p: (p.mean(cost), -p.accuracy)):
        if point.accuracy > best:
            front.append(point)
            best = point.accuracy
    return front


def _curve(conv_points: list[Point], cost: str) -> tuple[np.ndarray, np.ndarray]:
    usable = sorted((p.mean(cost), p.accuracy) for p in conv_points if p.has(cost))
    return np.log([c for c, _ in usable]), np.array([a for _, a in usable])


def ahead_at_equal_cost(other: list[Point], baseline: list[Point], cost: str) -> str | None:
    """Which conv type's Pareto front is ahead where both fronts cover the same cost.

    Only each conv type's Pareto front counts (a setting that a cheaper one of the same conv type
    beats is not what anyone would choose at its cost). Accuracy is interpolated linearly in
    log(cost) between the settings of each front and compared at five costs spread over the range
    both fronts cover. None when a front has fewer than two settings or the ranges do not overlap.
    """
    fronts = pareto_front(other, cost), pareto_front(baseline, cost)
    (x_other, y_other), (x_base, y_base) = (_curve(front, cost) for front in fronts)
    if len(x_other) < 2 or len(x_base) < 2:
        return None
    low, high = max(x_other[0], x_base[0]), min(x_other[-1], x_base[-1])
    if low >= high:
        return None
    grid = np.linspace(low, high, 5)
    gaps = 100 * (np.interp(grid, x_other, y_other) - np.interp(grid, x_base, y_base))
    conv, base, what = other[0].conv, baseline[0].conv, COSTS.get(cost, cost)
    span = f"{_format(cost, np.exp(low))} to {_format(cost, np.exp(high))}"
    if (gaps > 0).all():
        verdict = f"{conv} is ahead of {base} by {gaps.min():.2f} to {gaps.max():.2f} points"
    elif (gaps < 0).all():
        verdict = f"{conv} is behind {base} by {-gaps.max():.2f} to {-gaps.min():.2f} points"
    else:
        verdict = f"neither is ahead throughout ({conv} − {base}: {gaps.min():+.2f} to {gaps.max():+.2f} points)"
    return f"At equal {what} ({span}; the two Pareto fronts, interpolated between their settings): {verdict}."


def _format(cost: str, value: float) -> str:
    if cost == "time/fit_s":
        return f"{value:,.0f} s"
    if cost.endswith("_ms"):  # a latency (the report's deployed section)
        return f"{value:.3g} ms"
    return f"{value / 1e6:,.3g}M"
