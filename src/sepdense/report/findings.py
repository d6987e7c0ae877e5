"""The findings paragraph: every conv type set against the baseline, in words computed from the numbers."""

from __future__ import annotations

from sepdense.models import BASELINE_CONV
from sepdense.report.aggregate import Cell, Figure, Stats, cell, cell_name, cost_columns, decimals


def compare(key: Cell, stats: Stats, baseline: Stats, columns: list[tuple[Figure, str, float]]) -> str:
    """One sentence: a (conv type, setting) against the baseline at the same setting, on cost and accuracy.

    Each cost ratio is of the two means the headline shows under ``columns``' header, quoted beside it.
    """

    def mean(s: Stats, metric: str) -> float | None:
        return s.get(metric, {}).get("mean")

    conv, setting = key
    parts = []
    for figure, label, scale in columns:
        base, other = mean(baseline, figure.key), mean(stats, figure.key)
        if base and other is not None:
            name, unit = label.rsplit(" (", 1)
            shown = (f"{value * scale:,.{decimals(value * scale)}f} {unit.rstrip(')')}" for value in (other, base))
            parts.append(f"{other / base:.2f}× the {name} ({' vs '.join(shown)})")
    acc_base, acc = baseline.get("test/acc"), stats.get("test/acc")
    if acc_base and acc:
        n, n_base = acc["n"], acc_base["n"]
        parts.append(
            f"{100 * (acc['mean'] - acc_base['mean']):+.2f} points of test accuracy "
            f"({100 * acc['mean']:.2f}% vs {100 * acc_base['mean']:.2f}%; means over {n} {conv} and "
            f"{n_base} {BASELINE_CONV} run{'s' if n_base > 1 else ''})"
        )
    where = f" at {setting}" if setting else ""
    return f"{conv.capitalize()} compared with {BASELINE_CONV} convolutions{where}: " + "; ".join(parts) + "."


def findings(stats: dict[Cell, Stats]) -> str:
    """One paragraph of comparisons computed from the aggregated numbers of each (conv type, setting)."""
    if not stats:
        return "No run has completed yet, so there are no findings."
    columns = cost_columns(stats)
    sentences = [
        compare(key, s, stats[(BASELINE_CONV, key[1])], columns)
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
