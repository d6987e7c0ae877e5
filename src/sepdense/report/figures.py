"""The report's figures: learning curves per run and per conv type, accuracy against cost, confusion matrices.

Each function draws and returns a figure; the report writes it (``plotting.save_figure``) into its own folder.
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from sepdense.plotting import confusion_figure, conv_colors
from sepdense.report.aggregate import Cell, cell_name, time_axis
from sepdense.report.tradeoff import Point, pareto_front
from sepdense.runs import Run

STAGE_STYLE = {"train": {"color": "tab:blue", "marker": "o"}, "val": {"color": "tab:red", "marker": "s"}}
# Training minimises the label-smoothed loss; validation reports plain cross-entropy (see module.py).
METRIC_LABEL = {"loss": "loss (train: label-smoothed CE; val: plain CE)", "acc": "accuracy (%)"}
STAGE_NAME = {"train": "training", "val": "validation"}


def _values(tag: str, values: list[float]) -> np.ndarray:
    return np.array(values) * (100 if tag.endswith("acc") else 1)


def _epoch_axis(ax: Axes, epochs: list[int]) -> None:
    """Whole-number epoch ticks, with room around a run of one or two epochs; plain numbers on the y axis."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.ticklabel_format(axis="y", useOffset=False)
    if epochs:
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)


def plot_run_curves(run: Run) -> plt.Figure:
    """Loss and accuracy per epoch of one run, training and validation in their own colour and marker."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    all_epochs: set[int] = set()
    for ax, metric in zip(axes, ("loss", "acc"), strict=True):
        for stage in ("train", "val"):
            tag = f"{stage}/{metric}"
            if tag in run.curves:
                epochs, values = zip(*run.curves[tag], strict=True)
                x = [e + 1 for e in epochs]
                all_epochs.update(x)
                ax.plot(x, _values(tag, list(values)), "-", ms=4, label=STAGE_NAME[stage], **STAGE_STYLE[stage])
        ax.set(ylabel=METRIC_LABEL[metric], title="accuracy" if metric == "acc" else "loss")
        ax.legend()
    for ax in axes:
        _epoch_axis(ax, sorted(all_epochs))
    # The run's name once, above both panels and wrapped: sweep run names can be long.
    fig.suptitle("\n".join(textwrap.wrap(run.name, 90)), fontsize=10)
    fig.tight_layout()
    return fig


def plot_conv_curves(cells: dict[Cell, list[Run]]) -> plt.Figure:
    """Training and validation loss and accuracy per conv type (and setting): mean across seeds, min–max band.

    One panel per (metric, stage), so a line's stage is its panel, its conv type is its colour and,
    when the runs differ in network settings, its setting is its marker.
    """
    colors = conv_colors(conv for conv, _ in cells)
    markers = dict(zip(dict.fromkeys(setting for _, setting in cells), "os^Dv<>p*h", strict=False))
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    all_epochs: set[int] = set()
    for row, metric in enumerate(("loss", "acc")):
        for col, stage in enumerate(("train", "val")):
            ax, tag = axes[row, col], f"{stage}/{metric}"
            for (conv, setting), runs in cells.items():
                series = [dict(r.curves[tag]) for r in runs if tag in r.curves]
                if not series:
                    continue
                epochs = sorted(set.intersection(*(set(s) for s in series)))
                values = np.array([_values(tag, [s[e] for e in epochs]) for s in series])
                x = np.array(epochs) + 1
                all_epochs.update(x.tolist())
                ax.plot(x, values.mean(0), "-", marker=markers[setting] if len(x) < 30 else None, ms=5,
                        color=colors[conv], label=f"{cell_name((conv, setting))} (n={len(series)})")  # fmt: skip
                if len(series) > 1:
                    ax.fill_between(x, values.min(0), values.max(0), color=colors[conv], alpha=0.2)
            ax.set(
                ylabel=METRIC_LABEL[metric], title=f"{STAGE_NAME[stage]} {'accuracy' if metric == 'acc' else metric}"
            )
    for ax in axes.flat:
        _epoch_axis(ax, sorted(all_epochs))
    # One legend for the four panels, below them, where it hides no point.
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes.flat), key=lambda hl: len(hl[0]))
    fig.legend(handles, labels, loc="lower center", ncol=min(3, max(1, len(labels))), fontsize=8, frameon=False)
    fig.suptitle("Learning curves per conv type (mean over seeds; band: min–max)")
    fig.tight_layout(rect=(0, 0.03 + 0.03 * ((len(labels) + 2) // 3), 1, 1))
    return fig


def plot_tradeoff(conv_points: dict[str, list[Point]]) -> plt.Figure:
    """Test accuracy against MACs, measured training time and parameters.

    Small dots are runs; large markers the mean over seeds of one conv type at one setting (labelled
    with it when settings vary); a line joins each conv type's Pareto front where it has two settings or
    more: the settings no cheaper one of that conv type beats on validation accuracy, drawn at their test accuracy.
    """
    all_points = [p for ps in conv_points.values() for p in ps]
    colors = conv_colors(conv_points)
    fit_scale, fit_unit = time_axis([r.metrics.get("time/fit_s", 0) for p in all_points for r in p.runs])
    panels = (
        ("model/macs", 1e-6, "forward MACs per image (M)"),
        ("time/fit_s", fit_scale, f"fit time, all epochs with validation ({fit_unit})"),
        ("model/params", 1e-6, "parameters (M)"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for ax, (key, scale, label) in zip(axes, panels, strict=True):
        handles = []
        for conv, ps in conv_points.items():
            ps = [p for p in ps if p.has(key)]
            if not ps:
                continue
            runs = [(r.metrics[key] * scale, 100 * r.metrics["test/acc"]) for p in ps for r in p.runs]
            ax.scatter(*zip(*runs, strict=True), color=colors[conv], s=12, alpha=0.5)
            handles.append(
                ax.scatter(
                    [p.mean(key) * scale for p in ps],
                    [100 * p.accuracy for p in ps],
                    color=colors[conv],
                    s=60,
                    edgecolor="black",
                    lw=0.6,
                    label=conv,
                    zorder=3,
                )
            )
            front = pareto_front(ps, key)
            if len(front) > 1:  # one setting is no front: no line, and none promised in the legend
                handles += ax.plot(
                    [p.mean(key) * scale for p in front],
                    [100 * p.accuracy for p in front],
                    "-",
                    color=colors[conv],
                    lw=1.5,
                    zorder=2,
                    label=f"{conv}: Pareto front",
                )
            for p in ps:
                if p.setting:
                    ax.annotate(p.setting, (p.mean(key) * scale, 100 * p.accuracy), fontsize=7,
                                xytext=(4, 4), textcoords="offset points")  # fmt: skip
        ax.set(xlabel=label, ylabel="test accuracy (%)")
        costs = [x for collection in ax.collections for x, _ in collection.get_offsets()]
        if costs and min(costs) > 0 and max(costs) / min(costs) >= 4:
            ax.set_xscale("log")  # widths multiply the cost; accuracy is interpolated in log(cost) too
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
        if handles:
            ax.legend(handles=handles, fontsize=8)
    fronts = any(isinstance(h, Line2D) for ax in axes for h in ax.get_legend_handles_labels()[0])
    fig.suptitle("Accuracy against cost (large markers: mean test accuracy over seeds; small dots: runs"
                 + ("; lines: Pareto fronts chosen on validation accuracy" if fronts else "") + ")")  # fmt: skip
    fig.tight_layout()
    return fig


def plot_confusion(run: Run) -> plt.Figure:
    acc = 100 * run.metrics.get("test/acc", float("nan"))
    return confusion_figure(run.confusion, run.class_names, f"{run.conv}: test confusion, best run ({acc:.2f}%)")
