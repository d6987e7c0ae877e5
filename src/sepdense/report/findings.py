"""The findings paragraph: every conv type set against the baseline, in words computed from the numbers."""

from __future__ import annotations

from sepdense.models import BASELINE_CONV
from sepdense.report.aggregate import Cell, Stats, cell, cell_name

RATIOS = (("model/params", "the parameters"), ("model/macs", "the MACs"),
          ("time/train_epoch_s", "the training time per epoch"), ("memory/peak_mb", "the peak memory"))  # fmt: skip


def compare(key: Cell, stats: Stats, baseline: Stats) -> str:
    """One sentence: a (conv type, setting) against the baseline at the same setting, on cost and accuracy."""

    def mean(s: Stats, metric: str) -> float | None:
        return s.get(metric, {}).get("mean")

    conv, setting = key
    parts = []
    for metric, what in RATIOS:
        base, other = mean(baseline, metric), mean(stats, metric)
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
    where = f" at {setting}" if setting else ""
    return f"{conv.capitalize()} compared with {BASELINE_CONV} convolutions{where}: " + ", ".join(parts) + "."


def findings(stats: dict[Cell, Stats]) -> str:
    """One paragraph of comparisons computed from the aggregated numbers of each (conv type, setting)."""
    if not stats:
        return "No run has completed yet, so there are no findings."
    sentences = [
        compare(key, s, stats[(BASELINE_CONV, key[1])])
        for key, s in stats.items()
        if key[0] != BASELINE_CONV and (BASELINE_CONV, key[1]) in stats
    ]
    if sentences:
        return " ".join(sentences)
    convs = list(dict.fromkeys(conv for conv, _ in stats))
    accuracies = "; ".join(
        f"{cell_name(key)}: test accuracy {cell(s.get('test/acc'), 100)}% over "
        f"{s['test/acc']['n'] if 'test/acc' in s else 0} run(s)"
        for key, s in stats.items()
    )
    missing = "" if BASELINE_CONV in convs else f" (every conv type is compared with {BASELINE_CONV} runs)"
    return f"Only {' and '.join(convs)} runs completed, so there is no comparison yet{missing}; {accuracies}."
