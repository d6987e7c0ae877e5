"""The report's headline table: per conv type (and setting) the test metrics over seeds, the paired tests
against the baseline and the cost, in one table; and the short run table printed at the end of a sweep."""

from __future__ import annotations

from typing import Any

from sepdense.models import BASELINE_CONV
from sepdense.report.aggregate import QUALITY, Cell, Stats, cell, cost_columns
from sepdense.report.measured import is_subset, measured
from sepdense.report.significance import ALPHA, Comparison, too_few_seeds
from sepdense.runs import Run
from sepdense.tables import format_value, markdown_table

PAIRED = ("vs baseline (points)", "over seeds: paired t 95% (points)", "McNemar p per seed",
          "bootstrap 95% per seed (points)", "significant at 5%")  # fmt: skip


def seeds_text(runs: list[Run]) -> str:
    """'3 (0, 1, 2)' or '1 (seed 0)': how many seeds, then which; a lone seed number would read as a count."""
    seeds = sorted(r.seed for r in runs if r.seed is not None)
    if not seeds:
        return f"{len(runs)} (seed not recorded)"
    return f"1 (seed {seeds[0]})" if len(seeds) == 1 else f"{len(seeds)} ({', '.join(map(str, seeds))})"


def significance_cell(comparison: Comparison) -> str:
    """'yes (p = 0.002)', with the Holm-adjusted p when the report makes several comparisons, and why two seeds
    cannot decide."""
    p = comparison.decisive_p
    which = "Holm-adjusted p" if comparison.adjusted_p is not None else "p"
    text = f"{'yes' if comparison.significant else 'no'} ({which} = {p:.3g}"
    if p < ALPHA and comparison.images_could_explain:
        text += "; test images alone could give it"
    if too_few_seeds(comparison) and not comparison.significant:
        text += "; two seeds cannot decide: run ≥ 3"
    return text + ")"


def paired_columns(comparison: Comparison) -> dict[str, str]:
    """The paired tests of one conv type against the baseline, as the headline's columns."""
    diffs = 100 * comparison.differences
    if len(diffs) == 1:
        difference, over_seeds = f"{diffs[0]:+.2f}", "one seed: none"
    elif comparison.no_spread:
        difference = f"{diffs[0]:+.2f} in every seed"
        over_seeds = f"no spread; sign-flip p = {comparison.p_value:.3g}"
    else:
        _, low, high = comparison.t_test()
        difference = f"{diffs.mean():+.2f} ± {diffs.std(ddof=1):.2f}"
        over_seeds = f"{100 * low:+.2f} to {100 * high:+.2f}, p = {comparison.p_value:.3g}"
    return dict(zip(PAIRED, (
        difference,
        over_seeds,
        ", ".join(f"{p.mcnemar_p:.2g}" for p in comparison.pairs),
        "; ".join(f"{100 * p.bootstrap_low:+.2f} to {100 * p.bootstrap_high:+.2f}" for p in comparison.pairs),
        significance_cell(comparison),
    ), strict=True))  # fmt: skip


def headline_rows(
    cells: dict[Cell, list[Run]], stats: dict[Cell, Stats], comparisons: list[Comparison], keys: list[str]
) -> list[dict[str, Any]]:
    """One row per (conv type, setting) of complete runs: what was measured (data, test images, epochs, precision,
    machine), test metrics (mean ± std over seeds), paired tests against the baseline, and the costs, each under a
    header that names its definition."""
    by_cell = {(c.conv, c.setting): c for c in comparisons}
    columns = cost_columns(stats)
    rows = []
    for key, s in stats.items():
        conv, setting = key
        row: dict[str, Any] = {"conv": conv, **({"setting": setting} if keys else {}), "seeds": seeds_text(cells[key]),
                               **measured(cells[key])}  # fmt: skip
        subset = " (on a subset of the test split)" if any(is_subset(r) for r in cells[key]) else ""
        row |= {f"test {k.split('/')[1]} (%)": cell(s.get(k), 100) + subset for k in QUALITY}
        if conv == BASELINE_CONV:
            row |= dict.fromkeys(PAIRED, "(baseline)")
        elif key in by_cell:
            row |= paired_columns(by_cell[key])
        else:  # one cell says so; the others stay empty rather than repeat it
            row |= {PAIRED[0]: "not paired: see 'Not compared'", **dict.fromkeys(PAIRED[1:], "")}
        for figure, label, scale in columns:
            value = s.get(figure.key)
            if value is not None and value["std"] == 0:  # the same in every seed (parameters, MACs): no "± 0"
                value = {**value, "n": 1}
            row[label] = cell(value, scale, None) if value is not None else "-"
        rows.append(row)
    return rows


def run_summary(runs: list[dict[str, Any]]) -> str:
    """The table a sweep prints when it ends: per run, test accuracy and macro F1, or how far it got."""

    def percent(row: dict[str, Any], key: str) -> str:
        return format_value(100 * row[key]) if isinstance(row.get(key), int | float) else "-"

    table = []
    for row in runs:
        if row["complete"]:
            results = {"test acc (%)": percent(row, "test/acc"), "macro F1 (%)": percent(row, "test/f1")}
        else:
            where = f" {row['epochs']}" if row.get("epochs") else ""
            results = dict.fromkeys(("test acc (%)", "macro F1 (%)"), f"{row['status'].split(' (')[0]}{where}")
        table.append({"run": row["run"], **results})
    return markdown_table(table)
