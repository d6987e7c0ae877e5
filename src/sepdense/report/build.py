"""Writes ``<dir>/report/``: report.md, summary.csv, summary.json and the figures, for a run or a sweep."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from sepdense.measure import LATENCY_METHOD
from sepdense.models import BASELINE_CONV, CONV_TYPES, ordered_conv_types
from sepdense.plotting import save_figure
from sepdense.report.aggregate import (
    COSTS,
    QUALITY,
    THROUGHPUT,
    Cell,
    aggregate,
    by_cell,
    by_conv,
    cell,
    cell_name,
    cost_columns,
)
from sepdense.report.deployed import deployed_section
from sepdense.report.figures import plot_confusion, plot_conv_curves, plot_run_curves, plot_tradeoff
from sepdense.report.findings import findings
from sepdense.report.headline import headline_rows
from sepdense.report.measured import data_descriptions, settle_costs
from sepdense.report.recipe import dataset, differences, setting_label, varying_settings
from sepdense.report.significance import (
    HOLM,
    Comparison,
    PairingError,
    adjust_by_holm,
    compare,
    describe,
    verdict,
)
from sepdense.report.tradeoff import COMPARED_AT_EQUAL, Point, ahead_at_equal_cost, points
from sepdense.report.tradeoff import COSTS as FRONT_COSTS
from sepdense.runs import REPORT_DIR, Run, find_run_dirs, load_run, unstarted_jobs
from sepdense.tables import UnsafePathError, format_value, markdown_table, safe_name, write_csv, write_file, write_json

CURVES_DIR = "curves"
HOW_TO_READ = (
    "How to read this: a difference is *significant at 5%* when chance alone would produce one at least as large "
    "less than 5% of the time. With one seed per conv type that is McNemar's exact test on the images exactly one"
    " of the two runs gets right, which covers the sampling of test images only; with several seeds it is a "
    "paired t-test over seeds, which also covers the variation between trainings. Two seeds cannot support a test "
    "across trainings (one degree of freedom): run at least 3; until then the per-seed tests say only whether the "
    "trained networks differ on these test images. When every seed gives the "
    "identical difference, the t-test is undefined (no spread) and the verdict is the exact sign-flip test over "
    "seeds, whose p cannot fall below 2 / 2^n with n seeds (0.5 with 2, 0.25 with 3): fewer than 6 seeds can then"
    " never be significant. A test over seeds takes each seed's accuracy as exact, so with several seeds a "
    "difference is significant only when, in addition, the bootstrap 95% interval of its mean over seeds, "
    "resampling test images, excludes 0. When the report makes more than one comparison (conv types, settings, "
    f"data sets), the verdicts' p-values are corrected for making several at once by {HOLM}, so that the chance "
    "of calling any of them significant when none differs stays at 5%. Runs are paired only when they were tested "
    "on the same images with the same labels (the test split's fingerprint saved with each run); the others are "
    "listed as not compared, with the reason. Runs are seeds of one cell only when their whole config agrees apart "
    "from the seed, paths and settings that cannot change a result (logging, progress bar, checkpoint folders). "
    "At equal cost, the two conv types' Pareto fronts are compared: the settings that no cheaper setting of the "
    "same conv type beats on validation accuracy (`val/acc_best`), compared by their test accuracy."
)


class ReportError(UnsafePathError):
    """The report's folder cannot be written safely."""


def output_folder(root: Path) -> Path:
    """``root/report``, made if absent; refused when it is a link or resolves outside ``root``: a directory handed
    to us never decides where the report is written."""
    out = root / REPORT_DIR
    if out.is_symlink() or (out.exists() and not out.resolve().is_relative_to(root.resolve())):
        raise ReportError(f"{out} is a symbolic link (to {out.resolve()}); the report is written only inside {root}. "
                          f"Remove the link and run again.")  # fmt: skip
    out.mkdir(exist_ok=True)
    curves = out / CURVES_DIR
    if curves.is_symlink():  # the report's own subfolder: a planted link is replaced, never written through
        curves.unlink()
    curves.mkdir(exist_ok=True)
    return out


def check_conv_types(runs: list[Run]) -> None:
    """Mark a run whose ``model.conv`` is not a registered conv type as broken: a conv type names files."""
    for run in runs:
        if run.conv not in CONV_TYPES and not run.status.startswith("broken"):
            run.status = (f"broken (model.conv={run.conv!r} is not a registered conv type: "
                          f"{', '.join(ordered_conv_types())})")  # fmt: skip


def draw_figures(
    runs: list[Run], cells: dict[Cell, list[Run]], conv_points: dict[str, list[Point]], out: Path
) -> dict[str, list[tuple[str, str]]]:
    """Every figure of the report; returns, per report section, (file, caption) of those shown in report.md."""
    figures: dict[str, list[tuple[str, str]]] = {"curves": [], "tradeoff": [], "confusion": []}

    def save(fig: object, name: str, section: str, caption: str) -> None:
        save_figure(fig, out / name, inside=out)
        figures[section].append((name, caption))

    groups = by_conv(runs)
    if groups:
        save(plot_conv_curves(cells), "curves_by_conv.png", "curves", "Learning curves per conv type (complete runs)")
        save(plot_tradeoff(conv_points), "tradeoff.png", "tradeoff", "Accuracy against cost, with each conv type's "
             "Pareto front (chosen on validation accuracy)")  # fmt: skip
    for run in runs:
        if run.curves:
            caption = run.name if run.complete else f"{run.name}, {run.status}"
            save(plot_run_curves(run), f"{CURVES_DIR}/{safe_name(run.name)}.png", "curves", caption)
    for conv, rs in groups.items():
        best = max(rs, key=lambda r: r.metrics.get("test/acc", -1))
        if best.confusion is not None:
            save(plot_confusion(best), f"confusion_{safe_name(conv)}.png", "confusion",
                 f"Test confusion matrix of the best {conv} run, {best.name}")  # fmt: skip
    return figures


def significance(cells: dict[Cell, list[Run]]) -> tuple[list[Comparison], list[str]]:
    """Each conv type against the baseline at each setting, paired by seed; and why any could not be paired. With
    more than one comparison, each verdict's p is Holm-adjusted across all of them."""
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
    adjust_by_holm(comparisons)
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
            for cost in COMPARED_AT_EQUAL:
                sentence = ahead_at_equal_cost(ps, on[BASELINE_CONV], cost) if ps and on[BASELINE_CONV] else None
                if sentence:
                    sentences.append(f"On {data}: {sentence}" if len(datasets) > 1 else sentence)
    return sentences


def comparison_record(c: Comparison) -> dict:
    return {"conv": c.conv, "baseline": c.baseline, "setting": c.setting, "significant": c.significant,
            "p_value": c.p_value, "holm_adjusted_p": c.adjusted_p, "comparisons_in_report": c.comparisons_in_report,
            "no_spread": c.no_spread, "pairs": [asdict(p) for p in c.pairs], "t_test": c.t_test(),
            "sign_flip_p": c.sign_flip_p()}  # fmt: skip


def write_report(root: Path) -> Path:
    """Write the report of the run or sweep in ``root`` into ``root/report`` and return that path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory; give a run or sweep directory (e.g. logs/train/...).")
    out = output_folder(root)
    runs = [load_run(p, root) for p in find_run_dirs(root)]
    planned_missing = unstarted_jobs(root)  # a sweep's jobs that its time limit (or a kill) came before
    not_started = planned_missing or []
    check_conv_types(runs)
    for run in runs:
        settle_costs(run)
    groups = by_conv(runs)
    complete = [r for rs in groups.values() for r in rs]
    keys = varying_settings(complete)
    cells = by_cell(groups, lambda run: setting_label(run, keys))
    class_names = next((r.class_names for r in runs if r.class_names), [])
    per_class_keys = [f"test/f1/{c}" for c in class_names]
    efficiency_keys = [figure.key for figure in (*COSTS, THROUGHPUT)]
    stats = {key: aggregate(rs, [*QUALITY, *per_class_keys, *efficiency_keys]) for key, rs in cells.items()}
    conv_points = points(groups, keys)
    comparisons, problems = significance(cells)
    cost_sentences = equal_cost(conv_points)
    figures = draw_figures(runs, cells, conv_points, out)

    run_rows = [{"run": r.name, "conv": r.conv, "seed": r.seed, "setting": setting_label(r, keys), "status": r.status,
                 "complete": r.complete, "epochs": r.progress, "stopped_by": r.stopped_by,
                 **{k: r.metrics.get(k) for k in [*QUALITY, "val/acc_best", *efficiency_keys]}}
                for r in runs]  # fmt: skip
    write_csv(out / "summary.csv", run_rows, inside=out)
    # The findings give each verdict in a line; the full sentence stands once, under "Is the difference real?".
    paragraphs = [findings(stats), " ".join(verdict(c) for c in comparisons), " ".join(cost_sentences)]
    paragraph = "\n\n".join(p for p in paragraphs if p)
    headline = headline_rows(cells, stats, comparisons, keys)
    differ = differences(complete, keys) if keys else ""
    write_json(out / "summary.json", {
        "runs": run_rows,
        "complete": sum(r.complete for r in runs),
        "not_started": planned_missing,  # None: the sweep's plan is not known (no multirun.yaml, Optuna)
        "completion": completion(runs, not_started),
        "differing_settings": differ,
        "headline": headline,
        "by_conv": {cell_name(key): s for key, s in stats.items()},
        "significance": [comparison_record(c) for c in comparisons],
        "unpaired": problems,
        "equal_cost": cost_sentences,
        "findings": paragraph,
    }, inside=out)  # fmt: skip
    significance_lines = [f"- {describe(c)}" for c in comparisons] + [f"- Not compared: {p}" for p in problems]
    if len(comparisons) > 1:
        significance_lines.append(f"- {len(comparisons)} comparisons in this report: each verdict uses its "
                                  f"Holm-adjusted p ({HOLM}).")  # fmt: skip
    markdown = report_markdown(root, runs, not_started, cells, stats, class_names, figures, paragraph,
                               significance_lines, keys, headline, differ)  # fmt: skip
    write_file(out / "report.md", markdown + deployed_section(out, runs, conv_points), inside=out)
    return out


def completion(runs: list[Run], not_started: list[str]) -> str:
    """'k of n runs complete', the line a report, a sweep's end and `python -m sepdense.report` lead with; n counts
    a sweep's planned jobs that have not started."""
    planned = len(runs) + len(not_started)
    line = f"{sum(r.complete for r in runs)} of {planned} run{'s' if planned != 1 else ''} complete"
    return line + (f" ({len(not_started)} not started)" if not_started else "")


def report_markdown(
    root: Path,
    runs: list[Run],
    not_started: list[str],
    cells: dict[Cell, list[Run]],
    stats: dict[Cell, dict],
    class_names: list[str],
    figures: dict[str, list[tuple[str, str]]],
    paragraph: str,
    significance_lines: list[str],
    keys: list[str],
    headline: list[dict],
    differ: str,
) -> str:
    def head(key: Cell) -> dict:
        return {"conv": key[0], **({"setting": key[1]} if keys else {})}

    def shown(section: str) -> list[str]:
        return [f"{caption}:\n\n![{caption}]({name})\n" for name, caption in figures[section]] or ["(none)\n"]

    columns = cost_columns(stats)
    efficiency = [{**head(key), "runs": len(cells[key]),
                   **{label: cell(s.get(figure.key), scale, None) for figure, label, scale in columns},
                   THROUGHPUT.label: cell(s.get(THROUGHPUT.key), THROUGHPUT.scale, None)}
                  for key, s in stats.items()]  # fmt: skip
    complete = [r for rs in cells.values() for r in rs]
    descriptions = data_descriptions(complete)
    per_class = [{"class": c, **{cell_name(key): cell(s.get(f"test/f1/{c}"), 100) for key, s in stats.items()}}
                 for c in class_names]  # fmt: skip
    status = [{"run": r.name, "conv": r.conv, "seed": r.seed, "epochs": r.progress or "-", "status": r.status,
               "test acc (%)": format_value(100 * r.metrics["test/acc"]) if r.complete and "test/acc" in r.metrics
               else "-"}
              for r in runs]  # fmt: skip
    unfinished = [f"- {r.name}: {r.status}" + (f", {r.progress}" if r.progress and r.progress not in r.status else "")
                  for r in runs if not r.complete]  # fmt: skip
    unfinished += [f"- {job}: not started" for job in not_started]
    if unfinished:
        unfinished = ["In progress, not started or unreadable (left out of every number, test and front; continue a "
                      "sweep with its command and `resume=true`):", "", *unfinished, ""]  # fmt: skip
    early = [r.name for r in runs if r.complete and r.stopped_by == "early_stopping"]
    early_note = [f"Stopped by early stopping, complete by its own rule: {', '.join(early)}.", ""] if early else []
    none = "(no complete run)\n"
    return "\n".join(
        [
            f"# Report: {root.name}",
            "",
            f"**{completion(runs, not_started)}.** Generated by `python -m sepdense.report {root}`. Only complete "
            "runs enter its numbers, tests and fronts; runs in progress are listed below and appear only in the "
            "per-run curves. "
            "Accuracy figures are on the test images the headline names, of the data set it names; values are "
            "mean ± std over seeds where there are several. Runs are seeds of one row only when their whole config "
            "agrees apart from the seed, paths and settings that cannot change a result."
            + (
                f" These runs differ in {differ}: each combination is its own row, never pooled as seeds."
                if keys
                else ""
            ),
            "",
            *unfinished,
            *early_note,
            "## Headline",
            "",
            markdown_table(headline) if headline else none,
            f"Per conv type{' and setting' if keys else ''}: the seeds (how many, then which), the data set (the "
            "data module's source and file), the test images (a subset of the test split is marked beside each "
            "number), the epochs trained of those planned, the precision and the machine; test accuracy and macro "
            f"precision / recall / F1 (mean ± std over seeds); against {BASELINE_CONV}, paired by seed on the same "
            "test images: the accuracy difference, the paired t 95% interval over seeds, McNemar's exact test and a "
            "bootstrap 95% interval per seed, and the verdict (see 'Is the difference real?'); then the costs, each "
            "under a header that names what it measured, as the runs logged them. Peak memory is measured "
            "differently per device: on a CPU the process's peak resident memory during fit, on a GPU the peak "
            f"memory CUDA allocated; neither is the benchmark's training-step memory. Latency: {LATENCY_METHOD}.",
            *(
                ["", "Data sets, as the data module described them: " + "; ".join(f"`{d}`" for d in descriptions) + "."]
                if descriptions
                else []
            ),
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
            f"Costs compared at equal value in the findings: {', '.join(FRONT_COSTS[c] for c in COMPARED_AT_EQUAL)} "
            "(fit time: all epochs with validation, as the headline's column). Each front is "
            "chosen on validation accuracy and drawn at its settings' test accuracy.",
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
