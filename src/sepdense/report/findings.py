"""The findings paragraph: every conv type set against the baseline, in words computed from the numbers."""

from __future__ import annotations

from sepdense.models import BASELINE_CONV
from sepdense.report.aggregate import Stats, cell

RATIOS = (("model/params", "the parameters"), ("model/macs", "the MACs"),
          ("time/train_epoch_s", "the training time per epoch"), ("memory/peak_mb", "the peak memory"))  # fmt: skip


def compare(conv: str, stats: Stats, baseline: Stats) -> str:
    """One sentence: ``conv`` against the baseline on cost ratios and test accuracy."""

    def mean(s: Stats, key: str) -> float | None:
        return s.get(key, {}).get("mean")

    parts = []
    for key, what in RATIOS:
        base, other = mean(baseline, key), mean(stats, key)
        if base and other is not None:
            parts.append(f"{other / base:.2f}× {what}")
    acc_base, acc = baseline.get("test/acc"), stats.get("test/acc")
    if acc_base and acc:
        n, n_base = acc["n"], acc_base["n"]
        parts.append(
            f"{100 * (acc['mean'] - acc_base['mean']):+.2f} points of test accuracy "
            f"({100 * acc['mean']:.2f}% vs {100 * acc_base['mean']:.2f}%; means over {n} {conv} and "
            f"{n_base} {BASELINE_CONV} run{'s' if n_base > 1 else ''})"
        )
    return f"{conv.capitalize()} compared with {BASELINE_CONV} convolutions: " + ", ".join(parts) + "."


def findings(stats_by_conv: dict[str, Stats]) -> str:
    """One paragraph of comparisons computed from the aggregated numbers."""
    if not stats_by_conv:
        return "No run has completed yet, so there are no findings."
    if BASELINE_CONV in stats_by_conv and len(stats_by_conv) > 1:
        baseline = stats_by_conv[BASELINE_CONV]
        return " ".join(compare(conv, s, baseline) for conv, s in stats_by_conv.items() if conv != BASELINE_CONV)
    names = " and ".join(stats_by_conv)
    accuracies = "; ".join(
        f"{conv}: test accuracy {cell(s.get('test/acc'), 100)}% over {s['test/acc']['n'] if 'test/acc' in s else 0} "
        f"run(s)"
        for conv, s in stats_by_conv.items()
    )
    missing = "" if BASELINE_CONV in stats_by_conv else f" (every conv type is compared with {BASELINE_CONV} runs)"
    return f"Only {names} runs completed, so there is no comparison yet{missing}; {accuracies}."
