"""Writes ``<dir>/report/``: report.md, summary.csv, summary.json and the figures, for a run or a sweep."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from sepdense.measure import LATENCY_METHOD
from sepdense.models import BASELINE_CONV
from sepdense.report.aggregate import EFFICIENCY, QUALITY, Cell, aggregate, by_cell, by_conv, cell, cell_name
from sepdense.report.deployed import deployed_section
from sepdense.report.figures import plot_confusion, plot_conv_curves, plot_run_curves, plot_tradeoff
from sepdense.report.findings import findings
from sepdense.report.headline import headline_rows
from sepdense.report.significance import Comparison, PairingError, compare, describe, verdict
from sepdense.report.tradeoff import (
    COSTS,
    Point,
    ahead_at_equal_cost,
    dataset,
    points,
    setting_label,
    varying_settings,
)
from sepdense.runs import REPORT_DIR, Run, find_run_dirs, load_run
from sepdense.tables import format_value, markdown_table, write_csv, write_json

HOW_TO_READ = (
    "How to read this: a difference is *significant at 5%* when chance alone would produce one at least as large "
    "less than 5% of the time. With one seed per conv type that is McNemar's exact test on the images exactly one"
    " of the two runs gets right, which covers the sampling of test images only; with several seeds it is a "
    "paired t-test over seeds, which also covers the variation between trainings. When every seed gives the "
    "identical difference, the t-test is undefined (no spread) and the verdict is the exact sign-flip test over "
    "seeds, whose p cannot fall below 2 / 2^n with n seeds (0.5 with 2, 0.25 with 3): fewer than 6 seeds can then"
    " never be significant. A test over seeds takes each seed's accuracy as exact, so with several seeds a "
    "difference is significant only when, in addition, the bootstrap 95% interval of its mean over seeds, "
    "resampling test images, excludes 0. Runs are paired only when they were tested on the same images with the "
    "same labels (the test split's fingerprint saved with each run); the others are listed as not compared, with "
    "the reason. At equal cost, the two conv types' Pareto fronts are compared: the settings that no cheaper "
    "setting of the same conv type beats."
)


def draw_figures(
    runs: list[Run], cells: dict[Cell, list[Run]], conv_points: dict[str, list[Point]], out: Path
) -> dict[str, list[tuple[str, str]]]:
    """Every figure of the report; returns, per report section, (file, caption) of those shown in report.md."""
    figures: dict[str, list[tuple[str, str]]] = {"curves": [], "tradeoff": [], "confusion": []}
    groups = by_conv(runs)
    if groups:
        plot_conv_curves(cells, out / "curves_by_conv.png")
        figures["curves"].append(("curves_by_conv.png", "Learning curves per conv type (complete runs)"))
        plot_tradeoff(conv_points, out / "tradeoff.png")
        figures["tradeoff"].append(("tradeoff.png", "Accuracy against cost, with each conv type's Pareto front"))
    for run in runs:
        if run.curves:
            name = f"curves/{run.name.replace('/', '_')}.png"
            plot_run_curves(run, out / name)
            figures["curves"].append((name, run.name if run.complete else f"{run.name}, {run.status}"))
    for conv, rs in groups.items():
        best = max(rs, key=lambda r: r.metrics.get("test/acc", -1))
        if best.confusion is not None:
            plot_confusion(best, out / f"confusion_{conv}.png")
            figures["confusion"].append((f"confusion_{conv}.png", f"Test confusion matrix of the best {conv} run, "
                                                                  f"{best.name}"))  # fmt: skip
    return figures


def significance(cells: dict[Cell, list[Run]]) -> tuple[list[Comparison], list[str]]:
    """Each conv type against the baseline at each setting, paired by seed; and why any could not be paired."""
    comparisons, problems = [], []
    for (conv, setting), runs in cells.items():
        if conv == BASELINE_CONV:
            continue
        baseline = cells.get((BASELINE_CONV, setting), [])
        if not baseline:
            problems.append(f"no {BASELINE_CONV} run{setting and f' at {setting}'} to compare {conv} with.")
            continue
        try:
            comparison, unpaired = compare(baseline, runs, setting)
        except PairingError as err:
            problems.append(str(err))
            continue
        comparisons += [comparison] if comparison is not None else []
        problems += unpaired
    return comparisons, problems


def equal_cost(conv_points: dict[str, list[Point]]) -> list[str]:
    """Sentences on which conv type's front is ahead at equal MACs and at equal measured training time, per dataset."""
    if BASELINE_CONV not in conv_points:
        return []
    datasets = list(dict.fromkeys(dataset(p.runs[0]) for ps in conv_points.values() for p in ps))
    sentences = []
    for data in datasets:
        on = {conv: [p for p in ps if dataset(p.runs[0]) == data] for conv, ps in conv_points.items()}
        for conv, ps in on.items():
            if conv == BASELINE_CONV:
                continue
            for cost in ("model/macs", "time/fit_s"):
                sentence = ahead_at_equal_cost(ps, on[BASELINE_CONV], cost) if ps and on[BASELINE_CONV] else None
                if sentence:
                    sentences.append(f"On {data}: {sentence}" if len(datasets) > 1 else sentence)
    return sentences


def write_report(root: Path) -> Path:
    """Write the report of the run or sweep in ``root`` into ``root/report`` and return that path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory; give a run or sweep directory (e.g. logs/train/...).")
    out = root / REPORT_DIR
    (out / "curves").mkdir(parents=True, exist_ok=True)
    runs = [load_run(p, root) for p in find_run_dirs(root)]
    groups = by_conv(runs)
    keys = varying_settings([r for rs in groups.values() for r in rs])
    cells = by_cell(groups, lambda run: setting_label(run, keys))
    class_names = next((r.class_names for r in runs if r.class_names), [])
    per_class_keys = [f"test/f1/{c}" for c in class_names]
    efficiency_keys = [key for key, *_ in EFFICIENCY]
    stats = {key: aggregate(rs, [*QUALITY, *per_class_keys, *efficiency_keys]) for key, rs in cells.items()}
    conv_points = points(groups, keys)
    comparisons, problems = significance(cells)
    cost_sentences = equal_cost(conv_points)
    figures = draw_figures(runs, cells, conv_points, out)

    run_rows = [{"run": r.name, "conv": r.conv, "seed": r.seed, "setting": setting_label(r, keys), "status": r.status,
                 "complete": r.complete, "epochs": r.progress, "stopped_by": r.stopped_by,
                 **{k: r.metrics.get(k) for k in [*QUALITY, *efficiency_keys]}} for r in runs]  # fmt: skip
    write_csv(out / "summary.csv", run_rows)
    # The findings give each verdict in a line; the full sentence stands once, under "Is the difference real?".
    paragraphs = [findings(stats), " ".join(verdict(c) for c in comparisons), " ".join(cost_sentences)]
    paragraph = "\n\n".join(p for p in paragraphs if p)
    headline = headline_rows(cells, stats, comparisons, keys)
    write_json(out / "summary.json", {
        "runs": run_rows,
        "complete": sum(r.complete for r in runs),
        "headline": headline,
        "by_conv": {cell_name(key): s for key, s in stats.items()},
        "significance": [{"conv": c.conv, "baseline": c.baseline, "setting": c.setting, "significant": c.significant,
                          "p_value": c.p_value, "no_spread": c.no_spread, "pairs": [asdict(p) for p in c.pairs],
                          "t_test": c.t_test(), "sign_flip_p": c.sign_flip_p()} for c in comparisons],
        "unpaired": problems,
        "equal_cost": cost_sentences,
        "findings": paragraph,
    })  # fmt: skip
    significance_lines = [f"- {describe(c)}" for c in comparisons] + [f"- Not compared: {p}" for p in problems]
    (out / "report.md").write_text(
        report_markdown(root, runs, cells, stats, class_names, figures, paragraph, significance_lines, keys, headline)
        + deployed_section(out, runs, conv_points)
    )
    return out


def completion(runs: list[Run]) -> str:
    """'k of n runs complete', the line a report and `python -m sepdense.report` lead with."""
    return f"{sum(r.complete for r in runs)} of {len(runs)} run{'s' if len(runs) != 1 else ''} complete"


def report_markdown(
    root: Path,
    runs: list[Run],
    cells: dict[Cell, list[Run]],
    stats: dict[Cell, dict],
    class_names: list[str],
    figures: dict[str, list[tuple[str, str]]],
    paragraph: str,
    significance_lines: list[str],
    keys: list[str],
    headline: list[dict],
) -> str:
    def head(key: Cell) -> dict:
        return {"conv": key[0], **({"setting": key[1]} if keys else {})}

    def shown(section: str) -> list[str]:
        return [f"{caption}:\n\n![{caption}]({name})\n" for name, caption in figures[section]] or ["(none)\n"]

    efficiency = [{**head(key), "runs": len(cells[key]),
                   **{label: cell(s.get(k), scale, digits) for k, label, scale, digits in EFFICIENCY}}
                  for key, s in stats.items()]  # fmt: skip
    per_class = [{"class": c, **{cell_name(key): cell(s.get(f"test/f1/{c}"), 100) for key, s in stats.items()}}
                 for c in class_names]  # fmt: skip
    status = [{"run": r.name, "conv": r.conv, "seed": r.seed, "epochs": r.progress or "-", "status": r.status,
               "test acc (%)": format_value(100 * r.metrics["test/acc"]) if r.complete and "test/acc" in r.metrics
               else "-"}
              for r in runs]  # fmt: skip
    unfinished = [f"- {r.name}: {r.status}" + (f", {r.progress}" if r.progress and r.progress not in r.status else "")
                  for r in runs if not r.complete]  # fmt: skip
    if unfinished:
        unfinished = ["In progress or unreadable (left out of every number, test and front; continue a sweep with "
                      "its command and `resume=true`):", "", *unfinished, ""]  # fmt: skip
    early = [r.name for r in runs if r.complete and r.stopped_by == "early_stopping"]
    early_note = [f"Stopped by early stopping, complete by its own rule: {', '.join(early)}.", ""] if early else []
    none = "(no complete run)\n"
    return "\n".join(
        [
            f"# Report: {root.name}",
            "",
            f"**{completion(runs)}.** Generated by `python -m sepdense.report {root}`. Only complete runs enter its "
            "numbers, tests and fronts; runs in progress are listed below and appear only in the per-run curves. "
            "Accuracy figures are on the test split of the data each run was configured with (see each run's "
            "`.hydra/config.yaml`); values are mean ± std over seeds where there are several."
            + (f" Network settings that vary between runs: {', '.join(keys)}." if keys else ""),
            "",
            *unfinished,
            *early_note,
            "## Headline",
            "",
            markdown_table(headline) if headline else none,
            f"Per conv type{' and setting' if keys else ''}: test accuracy and macro precision / recall / F1 "
            f"(mean ± std over seeds); against {BASELINE_CONV}, paired by seed on the same test images: the "
            "accuracy difference, the paired t 95% interval over seeds, McNemar's exact test and a bootstrap 95% "
            "interval per seed, and the verdict (see 'Is the difference real?'); the cost as the runs logged it. "
            f"Latency: {LATENCY_METHOD}.",
            "",
            "## Findings",
            "",
            paragraph,
            "",
            "## Is the difference real?",
            "",
            *(significance_lines or [f"- (no conv type has runs to pair with {BASELINE_CONV} runs)"]),
            "",
            HOW_TO_READ,
            "",
            "## Learning curves",
            "",
            *shown("curves"),
            "## Accuracy against cost",
            "",
            *shown("tradeoff"),
            f"Costs compared at equal value in the findings: {', '.join(COSTS.values())}.",
            "",
            "## Efficiency (as logged by the runs)",
            "",
            markdown_table(efficiency) if efficiency else none,
            "## Per-class test F1 (%)",
            "",
            markdown_table(per_class) if per_class else "(no per-class metrics)\n",
            "## Confusion matrices",
            "",
            *shown("confusion"),
            "## Runs",
            "",
            markdown_table(status) if status else "(no run found)\n",
        ]
    )
