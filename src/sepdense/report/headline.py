"""The report's headline table: per conv type (and setting) the test metrics over seeds, the paired tests
against the baseline and the cost, in one table; and the short run table printed at the end of a sweep."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from sepdense.models import BASELINE_CONV
from sepdense.report.aggregate import QUALITY, Cell, Stats, cell
from sepdense.report.figures import time_axis
from sepdense.report.significance import Comparison
from sepdense.runs import Run
from sepdense.tables import format_value, markdown_table

# (metric key, column label, unit scale, digits); training time gets its unit from the runs (s, min or h).
COST = (
    ("model/params", "parameters (M)", 1e-6, 3),
    ("model/macs", "MACs / image (M)", 1e-6, 1),
    ("time/fit_s", "training time", 1, 1),
    ("memory/peak_mb", "peak memory (MB)", 1, 0),
    ("model/latency_b1_ms", "latency, batch 1 (ms)", 1, 2),
)
PAIRED = ("vs baseline (points)", "over seeds: paired t 95% (points)", "McNemar p per seed",
          "bootstrap 95% per seed (points)", "significant at 5%")  # fmt: skip


def run_precision(run: Run) -> str:
    """The precision a run trained in: recorded in metrics.json, else its config's setting (older runs)."""
    recorded = run.metrics.get("precision")
    if recorded is None and run.config is not None:
        recorded = OmegaConf.select(run.config, "trainer.precision", default=None)
    return str(recorded) if recorded is not None else "?"


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
        f"{'yes' if comparison.significant else 'no'} (p = {comparison.p_value:.3g}"
        f"{'; test images alone could give it' if comparison.images_could_explain else ''})",
    ), strict=True))  # fmt: skip


def headline_rows(
    cells: dict[Cell, list[Run]], stats: dict[Cell, Stats], comparisons: list[Comparison], keys: list[str]
) -> list[dict[str, Any]]:
    """One row per (conv type, setting) of complete runs: seeds, test metrics (mean ± std), paired tests, cost."""
    by_cell = {(c.conv, c.setting): c for c in comparisons}
    scale, unit = time_axis([s["time/fit_s"]["mean"] for s in stats.values() if "time/fit_s" in s])
    rows = []
    for key, s in stats.items():
        conv, setting = key
        seeds = sorted(r.seed for r in cells[key] if r.seed is not None)
        row: dict[str, Any] = {"conv": conv, **({"setting": setting} if keys else {}),
                               "seeds": ", ".join(map(str, seeds)) or "-",
                               "precision": ", ".join(sorted({run_precision(r) for r in cells[key]}))}  # fmt: skip
        row |= {f"test {k.split('/')[1]} (%)": cell(s.get(k), 100) for k in QUALITY}
        if conv == BASELINE_CONV:
            row |= dict.fromkeys(PAIRED, "(baseline)")
        elif key in by_cell:
            row |= paired_columns(by_cell[key])
        else:
            row |= dict.fromkeys(PAIRED, "not paired (see below)")
        for metric, label, metric_scale, digits in COST:
            figure = s.get(metric)
            if figure is not None and figure["std"] == 0:  # the same in every seed (parameters, MACs): no "± 0"
                figure = {**figure, "n": 1}
            if metric == "time/fit_s":
                row[f"{label} ({unit})"] = cell(figure, scale, digits)
            else:
                row[label] = cell(figure, metric_scale, digits)
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
