"""Accuracy against cost across network settings (e.g. widths): one point per conv type and setting,
each conv type's Pareto front, and which conv type is ahead at equal cost.

A sweep such as ``experiment=tradeoff`` (growth rate 6, 12, 24 × conv type) gives each conv type
a curve of accuracy against cost; comparing the two Pareto fronts at equal MACs or equal
measured training time says whether one conv type buys more accuracy for the same cost, which a
single width cannot tell apart from "a narrower standard net would do the same".

Which settings form a front is chosen on validation accuracy (``val/acc_best``, the score that chose
each run's checkpoint); the fronts are then drawn and compared with those settings' test accuracy,
so that the test set only measures what was chosen without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sepdense.report.recipe import setting_label
from sepdense.runs import Run

COSTS = {"model/macs": "MACs", "time/fit_s": "fit time", "model/params": "parameters"}
COMPARED_AT_EQUAL = ("model/macs", "time/fit_s")  # parameters are drawn, not compared: MACs and time are the costs
# The validation score that chooses each front: the best epoch's (the checkpoint tested), else the last epoch's.
SELECTION = ("val/acc_best", "val/acc")


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
        """Test accuracy, mean over seeds: what the report shows of a setting."""
        return self.mean("test/acc")

    @property
    def selection_key(self) -> str | None:
        """The validation score every seed logged (:data:`SELECTION`), None when some seed logged neither."""
        return next((key for key in SELECTION if self.has(key)), None)

    @property
    def validation(self) -> float:
        """Validation accuracy, mean over seeds: what chooses the fronts."""
        return self.mean(self.selection_key) if self.selection_key else -np.inf


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
    """The points no other point of the list beats on both cost (lower) and validation accuracy (higher), by cost.

    Chosen on validation, never on test: a point without a validation score is on no front.
    """
    front, best = [], -np.inf
    usable = (p for p in conv_points if p.has(cost) and p.selection_key is not None)
    for point in sorted(usable, key=lambda p: (p.mean(cost), -p.validation)):
        if point.validation > best:
            front.append(point)
            best = point.validation
    return front


def _curve(front: list[Point], cost: str) -> tuple[np.ndarray, np.ndarray]:
    """log(cost) and test accuracy of a front's settings, by cost."""
    usable = sorted((p.mean(cost), p.accuracy) for p in front)
    return np.log([c for c, _ in usable]), np.array([a for _, a in usable])


def ahead_at_equal_cost(other: list[Point], baseline: list[Point], cost: str) -> str | None:
    """Which conv type's Pareto front is ahead in test accuracy where both fronts cover the same cost.

    Only each conv type's Pareto front counts (a setting that a cheaper one of the same conv type
    beats on validation is not what anyone would choose at its cost). The fronts' test accuracy is
    interpolated linearly in log(cost) between their settings and compared at five costs spread over
    the range both fronts cover. None when a front has fewer than two settings or the ranges do not overlap.
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
    return (f"At equal {what} ({span}; the two Pareto fronts, chosen on validation accuracy, in test accuracy "
            f"interpolated between their settings): {verdict}.")  # fmt: skip


def _format(cost: str, value: float) -> str:
    if cost == "time/fit_s":
        return f"{value:,.0f} s"
    if cost.endswith("_ms"):  # a latency (the report's deployed section)
        return f"{value:.3g} ms"
    return f"{value / 1e6:,.3g}M"
