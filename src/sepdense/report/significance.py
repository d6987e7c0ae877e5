"""Is a conv type's accuracy difference from the baseline real? Paired tests on the same test images.

Runs are paired by seed and network settings (a separable run with seed 1 and growth rate 12
against the standard run with seed 1 and growth rate 12) and compared image by image, from the
predictions each run saved:

- McNemar's exact test per pair: of the images exactly one of the two gets right, does each get
  its share? (``scipy.stats.binomtest`` on the discordant counts);
- a bootstrap 95% interval of the accuracy difference per pair, resampling test images
  (``scipy.stats.bootstrap``, paired);
- with several seeds, the mean ± std of the differences and a paired t-interval over seeds
  (``scipy.stats.ttest_rel``), which also covers seed-to-seed variation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from sepdense.runs import Run

CONFIDENCE = 0.95


class PairingError(ValueError):
    """Runs that cannot be compared image by image."""


@dataclass
class PairResult:
    """One seed: the two runs' accuracies and the paired tests on their test images."""

    seed: int | None
    images: int
    acc_baseline: float
    acc_other: float
    only_baseline_right: int
    only_other_right: int
    mcnemar_p: float
    bootstrap_low: float
    bootstrap_high: float

    @property
    def difference(self) -> float:
        return self.acc_other - self.acc_baseline


@dataclass
class Comparison:
    """A conv type against the baseline at one network setting, over the seeds both were run with."""

    conv: str
    baseline: str
    setting: str
    pairs: list[PairResult] = field(default_factory=list)

    @property
    def differences(self) -> np.ndarray:
        return np.array([p.difference for p in self.pairs])

    def t_test(self) -> tuple[float, float, float] | None:
        """(p-value, interval low, interval high) of the mean difference over seeds; None for one seed."""
        if len(self.pairs) < 2:
            return None
        other = [p.acc_other for p in self.pairs]
        base = [p.acc_baseline for p in self.pairs]
        if np.allclose(self.differences, self.differences[0]):  # no spread: the t statistic is undefined
            p_value = 1.0 if self.differences[0] == 0 else 0.0
            return p_value, float(self.differences[0]), float(self.differences[0])
        result = stats.ttest_rel(other, base)
        interval = result.confidence_interval(CONFIDENCE)
        return float(result.pvalue), float(interval.low), float(interval.high)

    @property
    def significant(self) -> bool:
        """At 5%: over seeds by the paired t-test when there are several, else by McNemar's test."""
        t_test = self.t_test()
        return t_test[0] < 0.05 if t_test is not None else self.pairs[0].mcnemar_p < 0.05


def correctness(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(image index, whether the run's prediction was right) from the predictions the run saved."""
    if run.predictions is None:
        raise PairingError(f"{run.name} saved no test predictions (test_predictions.npz); rerun its test.")
    order = np.argsort(run.predictions["index"])
    return run.predictions["index"][order], (run.predictions["pred"] == run.predictions["label"])[order]


def mcnemar(baseline_right: np.ndarray, other_right: np.ndarray) -> tuple[int, int, float]:
    """McNemar's exact test: (only baseline right, only other right, two-sided p)."""
    b = int(np.sum(baseline_right & ~other_right))
    c = int(np.sum(~baseline_right & other_right))
    return b, c, float(stats.binomtest(c, b + c, 0.5).pvalue) if b + c else 1.0


def bootstrap_difference(baseline_right: np.ndarray, other_right: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of accuracy(other) − accuracy(baseline), resampling images in pairs."""
    if np.array_equal(baseline_right, other_right):
        return 0.0, 0.0  # every resample gives 0; scipy refuses a degenerate sample
    result = stats.bootstrap(
        (other_right.astype(float), baseline_right.astype(float)),
        lambda other, base, axis: other.mean(axis) - base.mean(axis),
        paired=True,
        vectorized=True,
        confidence_level=CONFIDENCE,
        n_resamples=2000,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def compare_pair(baseline: Run, other: Run) -> PairResult:
    base_index, base_right = correctness(baseline)
    other_index, other_right = correctness(other)
    if not np.array_equal(base_index, other_index):
        raise PairingError(f"{other.name} and {baseline.name} were tested on different images; compare runs "
                           f"tested on the same data.")  # fmt: skip
    b, c, p_value = mcnemar(base_right, other_right)
    low, high = bootstrap_difference(base_right, other_right)
    return PairResult(seed=other.seed, images=len(base_index), acc_baseline=float(base_right.mean()),
                      acc_other=float(other_right.mean()), only_baseline_right=b, only_other_right=c,
                      mcnemar_p=p_value, bootstrap_low=low, bootstrap_high=high)  # fmt: skip


def _one_run_per_seed(runs: list[Run], setting: str) -> dict[int | None, Run]:
    by_seed: dict[int | None, Run] = {}
    for run in runs:
        if run.seed in by_seed:
            raise PairingError(f"{run.name} and {by_seed[run.seed].name} are both {run.conv} runs with seed "
                               f"{run.seed}{setting and f' at {setting}'}; keep one of them.")  # fmt: skip
        by_seed[run.seed] = run
    return by_seed


def compare(baseline_runs: list[Run], other_runs: list[Run], setting: str = "") -> Comparison:
    """Pair ``other_runs`` with ``baseline_runs`` by seed (all at one network setting) and test each pair."""
    by_seed = _one_run_per_seed(baseline_runs, setting)
    _one_run_per_seed(other_runs, setting)  # a seed twice would count one pair twice
    other_conv = other_runs[0].conv if other_runs else "?"
    baseline_conv = baseline_runs[0].conv if baseline_runs else "?"
    unpaired = [r for r in other_runs if r.seed not in by_seed]
    if unpaired:
        names = ", ".join(f"{r.name} (seed {r.seed})" for r in unpaired)
        seeds = ",".join(str(r.seed) for r in unpaired)
        raise PairingError(
            f"{names}: no {baseline_conv} run with the same seed{setting and f' at {setting}'} to pair with; "
            f"run the missing {baseline_conv} seed(s) (model.conv={baseline_conv} seed={seeds}) or leave them out."
        )
    pairs = [compare_pair(by_seed[r.seed], r) for r in sorted(other_runs, key=lambda r: (r.seed is None, r.seed))]
    return Comparison(conv=other_conv, baseline=baseline_conv, setting=setting, pairs=pairs)


def describe(comparison: Comparison) -> str:
    """The significance line of the findings, in words."""
    n = len(comparison.pairs)
    diffs = 100 * comparison.differences
    where = f" at {comparison.setting}" if comparison.setting else ""
    verdict = "significant" if comparison.significant else "not significant"
    if n == 1:
        pair = comparison.pairs[0]
        return (
            f"{comparison.conv} vs {comparison.baseline}{where}: {diffs[0]:+.2f} points on {pair.images:,} test images "
            f"(bootstrap 95% interval {100 * pair.bootstrap_low:+.2f} to {100 * pair.bootstrap_high:+.2f}); "
            f"McNemar's exact test p = {pair.mcnemar_p:.3g} ({pair.only_other_right} images only {comparison.conv} "
            f"got right, {pair.only_baseline_right} only {comparison.baseline}): {verdict} at 5% with one seed, "
            f"which covers the sampling of test images but not the variation between training seeds."
        )
    p_value, low, high = comparison.t_test()
    mcnemar_ps = ", ".join(f"{p.mcnemar_p:.2g}" for p in comparison.pairs)
    return (
        f"{comparison.conv} vs {comparison.baseline}{where}: {diffs.mean():+.2f} ± {diffs.std(ddof=1):.2f} points over "
        f"{n} seeds (paired t 95% interval {100 * low:+.2f} to {100 * high:+.2f}, p = {p_value:.3g}): {verdict} at 5% "
        f"over {n} seeds. McNemar's p per seed: {mcnemar_ps}."
    )
