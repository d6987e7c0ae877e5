"""Is a conv type's accuracy difference from the baseline real? Paired tests on the same test images.

Runs are paired by seed and network settings (a separable run with seed 1 and growth rate 12
against the standard run with seed 1 and growth rate 12), only when both were tested on the same
images with the same labels (equal test-split fingerprints, image indices and labels), and
compared image by image, from the predictions each run saved:

- McNemar's exact test per pair: of the images exactly one of the two gets right, does each get
  its share? (``scipy.stats.binomtest`` on the discordant counts);
- a bootstrap 95% interval of the accuracy difference per pair, resampling test images
  (``scipy.stats.bootstrap``, paired);
- with several seeds, the mean ± std of the differences and a paired t-interval over seeds
  (``scipy.stats.ttest_rel``), which also covers seed-to-seed variation. When every seed gives the
  same difference the t statistic is undefined (zero spread); the test over seeds is then the exact
  sign-flip test, which with n seeds can give no p below 2 / 2^n. The test over seeds takes each
  seed's accuracy as exact, so a difference over seeds is significant only if it also stands against
  the sampling of test images: the bootstrap interval of its mean over seeds must exclude 0.

When a report makes more than one comparison (several conv types, settings or data sets), the
verdicts' p-values are adjusted by Holm's step-down procedure across all of them, so that the
chance of calling any true null difference significant stays at 5% for the whole report.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from sepdense.runs import Run

CONFIDENCE = 0.95
ALPHA = 0.05
HOLM = (
    "Holm's step-down procedure: the m p-values sorted from the smallest, p(1) ≤ … ≤ p(m), the i-th is "
    "multiplied by m − i + 1, capped at 1, and raised to the largest adjusted value before it; a comparison is "
    "significant when its adjusted p is below 5%"
)


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
    test_fingerprint: str | None = None  # None: a run saved before fingerprints were recorded

    @property
    def difference(self) -> float:
        """acc_other − acc_baseline, from the discordant counts, so equal counts give exactly equal differences."""
        return (self.only_other_right - self.only_baseline_right) / self.images


@dataclass
class Comparison:
    """A conv type against the baseline at one network setting, over the seeds both were run with."""

    conv: str
    baseline: str
    setting: str
    pairs: list[PairResult] = field(default_factory=list)
    # Bootstrap 95% interval of the mean difference over seeds, resampling test images (None: one seed).
    images_interval: tuple[float, float] | None = None
    # Holm-adjusted p across the report's comparisons (see ``adjust_by_holm``); None when the report makes one.
    adjusted_p: float | None = None
    comparisons_in_report: int = 1

    @property
    def differences(self) -> np.ndarray:
        return np.array([p.difference for p in self.pairs])

    @property
    def no_spread(self) -> bool:
        """Several seeds that all give the same difference: a t statistic would divide by a zero std."""
        return len(self.pairs) > 1 and bool(np.all(self.differences == self.differences[0]))

    def t_test(self) -> tuple[float, float, float] | None:
        """(p-value, interval low, interval high) of the mean difference over seeds; None for one seed or no spread."""
        if len(self.pairs) < 2 or self.no_spread:
            return None
        other = [p.acc_other for p in self.pairs]
        base = [p.acc_baseline for p in self.pairs]
        result = stats.ttest_rel(other, base)
        interval = result.confidence_interval(CONFIDENCE)
        return float(result.pvalue), float(interval.low), float(interval.high)

    def sign_flip_p(self) -> float | None:
        """Exact two-sided sign-flip (paired permutation) test over seeds; None for one seed.

        Under "no difference" each seed's difference is as likely positive as negative: p is the share
        of the 2^n sign assignments whose mean is at least as far from 0 as the observed one.
        """
        if len(self.pairs) < 2:
            return None
        diffs = self.differences
        signs = np.array(list(itertools.product((1, -1), repeat=len(diffs))))
        means = np.abs(signs @ diffs) / len(diffs)
        return float(np.mean(means >= abs(diffs.mean()) - 1e-12))

    @property
    def p_value(self) -> float:
        """The verdict's p: McNemar's (one seed), the paired t-test's (seeds), the sign-flip test's (no spread)."""
        if len(self.pairs) == 1:
            return self.pairs[0].mcnemar_p
        t_test = self.t_test()
        return t_test[0] if t_test is not None else self.sign_flip_p()

    @property
    def images_could_explain(self) -> bool:
        """Over seeds: whether the sampling of test images alone could give the mean difference (interval has 0)."""
        return self.images_interval is not None and self.images_interval[0] <= 0 <= self.images_interval[1]

    @property
    def significant(self) -> bool:
        """At 5%: by McNemar's test with one seed; with several, by the test over seeds AND over test images.

        The test over seeds treats each seed's accuracy as exact; near-identical differences then give a
        tiny p even when a handful of test images decide them. So the difference must also stand against
        the sampling of test images: its bootstrap interval (``images_interval``) must exclude 0.
        """
        return self.decisive_p < ALPHA and not self.images_could_explain

    @property
    def decisive_p(self) -> float:
        """The p the verdict compares with 5%: Holm-adjusted when the report makes several comparisons."""
        return self.p_value if self.adjusted_p is None else self.adjusted_p

    def p_text(self) -> str:
        """'p = 0.012' or, among several comparisons, 'p = 0.012, Holm-adjusted over 3 comparisons p = 0.036'."""
        if self.adjusted_p is None:
            return f"p = {self.p_value:.3g}"
        return f"p = {self.p_value:.3g}, Holm-adjusted over {self.comparisons_in_report} comparisons p = " \
               f"{self.adjusted_p:.3g}"  # fmt: skip


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (see :data:`HOLM`)."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def adjust_by_holm(comparisons: list[Comparison]) -> None:
    """Set each comparison's Holm-adjusted p across all of ``comparisons``; nothing to adjust for one."""
    if len(comparisons) < 2:
        return
    for comparison, adjusted in zip(comparisons, holm([c.p_value for c in comparisons]), strict=True):
        comparison.adjusted_p = adjusted
        comparison.comparisons_in_report = len(comparisons)


def images_bootstrap(differences: list[np.ndarray], same_images: bool, seed: int = 0,
                     n_resamples: int = 2000) -> tuple[float, float]:  # fmt: skip
    """95% percentile interval of the mean over seeds of accuracy differences, resampling test images.

    ``differences`` holds, per seed, each test image's (other right) − (baseline right). Seeds tested
    on the same images are resampled together (the per-image mean over seeds, resampled); otherwise
    each seed's images are resampled on their own and the means averaged.
    """
    rng = np.random.default_rng(seed)
    if same_images:
        per_image = np.mean(differences, axis=0)
        draws = np.array([per_image[rng.integers(0, len(per_image), len(per_image))].mean()
                          for _ in range(n_resamples)])  # fmt: skip
    else:
        draws = np.mean([[d[rng.integers(0, len(d), len(d))].mean() for _ in range(n_resamples)]
                         for d in differences], axis=0)  # fmt: skip
    low, high = np.percentile(draws, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
    return float(low), float(high)


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


def _data(run: Run) -> str:
    fingerprint = run.test_data("test_fingerprint")
    source = run.test_data("data_source") or "source unknown"
    return f"{source}, test split sha1 {fingerprint[:12]}" if fingerprint else f"{source}, fingerprint unknown"


def check_comparable(baseline: Run, other: Run) -> None:
    """Raise PairingError unless both runs were tested on the same images with the same labels."""
    why = f"{other.name} and {baseline.name} are not comparable:"
    fingerprints = other.test_data("test_fingerprint"), baseline.test_data("test_fingerprint")
    if None not in fingerprints and fingerprints[0] != fingerprints[1]:
        raise PairingError(f"{why} they were tested on different data ({_data(other)}; {_data(baseline)}); only "
                           f"runs tested on the same images with the same labels are paired.")  # fmt: skip
    other_index, base_index = (np.sort(r.predictions["index"]) for r in (other, baseline))
    if not np.array_equal(base_index, other_index):
        raise PairingError(f"{why} they were tested on different images ({len(other_index):,} and "
                           f"{len(base_index):,} images, not the same indices); compare runs tested on the same "
                           f"test images.")  # fmt: skip
    other_labels, base_labels = (r.predictions["label"][np.argsort(r.predictions["index"])] for r in (other, baseline))
    if not np.array_equal(base_labels, other_labels):
        changed = int(np.sum(base_labels != other_labels))
        raise PairingError(f"{why} {changed:,} of their {len(base_labels):,} test images have different labels "
                           f"({_data(other)}; {_data(baseline)}).")  # fmt: skip


def compare_pair(baseline: Run, other: Run) -> PairResult:
    base_index, base_right = correctness(baseline)
    _, other_right = correctness(other)
    check_comparable(baseline, other)
    b, c, p_value = mcnemar(base_right, other_right)
    low, high = bootstrap_difference(base_right, other_right)
    fingerprints = {baseline.test_data("test_fingerprint"), other.test_data("test_fingerprint")}
    return PairResult(seed=other.seed, images=len(base_index), acc_baseline=float(base_right.mean()),
                      acc_other=float(other_right.mean()), only_baseline_right=b, only_other_right=c,
                      mcnemar_p=p_value, bootstrap_low=low, bootstrap_high=high,
                      test_fingerprint=None if None in fingerprints else fingerprints.pop())  # fmt: skip


def _one_run_per_seed(runs: list[Run], setting: str) -> dict[int | None, Run]:
    by_seed: dict[int | None, Run] = {}
    for run in runs:
        if run.seed in by_seed:
            raise PairingError(f"{run.name} and {by_seed[run.seed].name} are both {run.conv} runs with seed "
                               f"{run.seed}{setting and f' at {setting}'}; keep one of them.")  # fmt: skip
        by_seed[run.seed] = run
    return by_seed


def compare(baseline_runs: list[Run], other_runs: list[Run], setting: str = "") -> tuple[Comparison | None, list[str]]:
    """Pair ``other_runs`` with ``baseline_runs`` by seed (all at one network setting) and test each pair.

    Returns the comparison of the pairs that are comparable (None if there is none) and, for every
    run left out, why. A seed twice on one side is refused (PairingError): which run counts is the user's call.
    """
    by_seed = _one_run_per_seed(baseline_runs, setting)
    _one_run_per_seed(other_runs, setting)  # a seed twice would count one pair twice
    other_conv = other_runs[0].conv if other_runs else "?"
    baseline_conv = baseline_runs[0].conv if baseline_runs else "?"
    problems = []
    unpaired = [r for r in other_runs if r.seed not in by_seed]
    if unpaired:
        names = ", ".join(f"{r.name} (seed {r.seed})" for r in unpaired)
        seeds = ",".join(str(r.seed) for r in unpaired)
        problems.append(
            f"{names}: no {baseline_conv} run with the same seed{setting and f' at {setting}'} to pair with; "
            f"run the missing {baseline_conv} seed(s) (model.conv={baseline_conv} seed={seeds}) or leave them out."
        )
    pairs = []
    for run in sorted((r for r in other_runs if r.seed in by_seed), key=lambda r: (r.seed is None, r.seed)):
        try:
            pairs.append(compare_pair(by_seed[run.seed], run))
        except PairingError as err:
            problems.append(str(err))
    comparison = Comparison(conv=other_conv, baseline=baseline_conv, setting=setting, pairs=pairs) if pairs else None
    if comparison is not None and len(pairs) > 1:
        paired = [r for r in other_runs if r.seed in {p.seed for p in pairs}]
        differences = [correctness(r)[1].astype(np.int8) - correctness(by_seed[r.seed])[1].astype(np.int8)
                       for r in paired]  # fmt: skip
        fingerprints = {p.test_fingerprint for p in pairs}
        same = len(fingerprints) == 1 and None not in fingerprints and len({len(d) for d in differences}) == 1
        comparison.images_interval = images_bootstrap(differences, same)
    return comparison, problems


def per_seed_evidence(comparison: Comparison) -> str:
    """What the per-seed tests show: whether each pair of trained networks differs on these test images."""
    n, conv = len(comparison.pairs), comparison.conv
    mcnemar_count = sum(p.mcnemar_p < ALPHA for p in comparison.pairs)
    excluding = [p for p in comparison.pairs if p.bootstrap_low > 0 or p.bootstrap_high < 0]
    signs = {p.difference > 0 for p in excluding}
    direction = f", each time with {conv} {'ahead' if signs.pop() else 'behind'}" if len(signs) == 1 else ""
    return (f"Per seed, McNemar's p is below 5% in {mcnemar_count} of {n} and the bootstrap 95% interval excludes 0 "
            f"in {len(excluding)} of {n}{direction}: evidence that these trained networks differ on these test "
            f"images, not that another training of each conv type would.")  # fmt: skip


def too_few_seeds(comparison: Comparison) -> str:
    """Why two seeds cannot decide, and what to run; empty with one seed or three and more."""
    if len(comparison.pairs) != 2:
        return ""
    return (f"Two seeds cannot support a test across trainings: the paired t-test has one degree of freedom (its 95% "
            f"interval is the mean ± 12.7 × the standard error) and the sign-flip test cannot go below p = 0.5. "
            f"Run at least 3 seeds of each conv type (e.g. seed=2 for {comparison.baseline} and "
            f"{comparison.conv}).")  # fmt: skip


def describe(comparison: Comparison) -> str:
    """The significance line of the findings, in words."""
    n = len(comparison.pairs)
    diffs = 100 * comparison.differences
    where = f" at {comparison.setting}" if comparison.setting else ""
    verdict = "significant" if comparison.significant else "not significant"
    holm_note = (f"; Holm-adjusted over the report's {comparison.comparisons_in_report} comparisons p = "
                 f"{comparison.adjusted_p:.3g}" if comparison.adjusted_p is not None else "")  # fmt: skip
    unknown = sum(p.test_fingerprint is None for p in comparison.pairs)
    caveat = (
        f" Test-split fingerprint unknown for {unknown} of the {n} pair(s) (runs saved before fingerprints were "
        f"recorded): paired on equal image indices and labels only."
        if unknown
        else ""
    )
    if n == 1:
        pair = comparison.pairs[0]
        return (
            f"{comparison.conv} vs {comparison.baseline}{where}: {diffs[0]:+.2f} points on {pair.images:,} test images "
            f"(bootstrap 95% interval {100 * pair.bootstrap_low:+.2f} to {100 * pair.bootstrap_high:+.2f}); "
            f"McNemar's exact test p = {pair.mcnemar_p:.3g} ({pair.only_other_right} images only {comparison.conv} "
            f"got right, {pair.only_baseline_right} only {comparison.baseline}{holm_note}): {verdict} at 5% with one "
            f"seed, which covers the sampling of test images but not the variation between training seeds.{caveat}"
        )
    mcnemar_ps = ", ".join(f"{p.mcnemar_p:.2g}" for p in comparison.pairs)
    if comparison.no_spread:
        test = (
            f"{diffs[0]:+.2f} points in each of {n} seeds (an identical difference in every seed: with no spread the "
            f"paired t-test is undefined; exact sign-flip test over seeds p = {comparison.p_value:.3g}, the smallest "
            f"it can give with {n} seeds{holm_note})"
        )
    else:
        _, low, high = comparison.t_test()
        test = (
            f"{diffs.mean():+.2f} ± {diffs.std(ddof=1):.2f} points over {n} seeds (paired t 95% interval "
            f"{100 * low:+.2f} to {100 * high:+.2f}, p = {comparison.p_value:.3g}{holm_note})"
        )
    images = ""
    if comparison.images_interval is not None:
        low, high = comparison.images_interval
        images = f"; over test images, bootstrap 95% interval of the mean {100 * low:+.2f} to {100 * high:+.2f}"
    why = ""
    if comparison.decisive_p < ALPHA and comparison.images_could_explain:
        why = " (the seeds agree, but the test images alone could give this difference)"
    notes = [] if comparison.significant else [too_few_seeds(comparison), per_seed_evidence(comparison)]
    explained = "".join(f" {note}" for note in notes if note)
    return (
        f"{comparison.conv} vs {comparison.baseline}{where}: {test}{images}: {verdict} at 5% over {n} seeds{why}. "
        f"McNemar's p per seed: {mcnemar_ps}.{explained}{caveat}"
    )


def verdict(comparison: Comparison) -> str:
    """The findings' one-line verdict; the full line (``describe``) stands under "Is the difference real?"."""
    n = len(comparison.pairs)
    where = f" at {comparison.setting}" if comparison.setting else ""
    if n == 1:
        test, seeds = "McNemar's exact test", "with one seed"
    else:
        test = "exact sign-flip test over seeds" if comparison.no_spread else "paired t-test over seeds"
        seeds = f"over {n} seeds"
    significant = "significant" if comparison.significant else "not significant"
    if comparison.decisive_p < ALPHA and comparison.images_could_explain:
        test += ", but test images alone could give the difference"
    short = " (two seeds cannot support a test across trainings: run at least 3)" if too_few_seeds(comparison) \
        and not comparison.significant else ""  # fmt: skip
    return (f"{comparison.conv} vs {comparison.baseline}{where}: {significant} at 5% {seeds} ({test}, "
            f"{comparison.p_text()}){short}.")  # fmt: skip
