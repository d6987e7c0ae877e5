"""PNG plots of the benchmark: the FLOPs-vs-time gap per layer, and the model-level costs per setting."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

from sepdense.plotting import conv_colors, save_figure

NICE = (1.0, 2.0, 5.0)  # log-axis ticks at 1, 2, 5 × a power of ten


def nice_below(value: float) -> float:
    """The largest 1, 2 or 5 × 10^n at or below ``value``."""
    power = 10.0 ** math.floor(math.log10(value))
    return max(n * power for n in NICE if n * power <= value * (1 + 1e-9))


def nice_above(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^n at or above ``value``."""
    power = 10.0 ** math.floor(math.log10(value))
    return min(n * power for n in (*NICE, 10.0) if n * power >= value * (1 - 1e-9))


def plain_log_axes(ax: Axes, x_values: list[float], y_values: list[float]) -> None:
    """Log axes labelled in plain numbers: x ticks at the measured channel counts; y ticks at 1, 2, 5 × 10^n, with
    a labelled tick at or below the lowest value and at or above the highest, so every line lies between two."""
    ax.set(xscale="log", yscale="log")
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(x_values))))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_locator(LogLocator(subs=NICE))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(nice_below(min(y_values)), nice_above(max(y_values)))


def layer_gap_figure(comparison: list[dict]) -> plt.Figure:
    """Each conv type ÷ the baseline per grid point: MACs against measured forward+backward time, one panel per k."""
    kernels = sorted({r["k"] for r in comparison})
    pairs = list(dict.fromkeys(r["conv"] for r in comparison))
    fig, axes = plt.subplots(len(pairs), len(kernels), figsize=(6 * len(kernels), 4.5 * len(pairs)), squeeze=False)
    for row_axes, pair in zip(axes, pairs, strict=True):
        for ax, k in zip(row_axes, kernels, strict=True):
            points_k = [r for r in comparison if r["conv"] == pair and r["k"] == k]
            for size in sorted({r["size"] for r in points_k}, reverse=True):
                points = sorted((r for r in points_k if r["size"] == size), key=lambda r: r["channels"])
                times = [r["forward_backward_time_ratio"] for r in points]
                ax.plot([r["channels"] for r in points], times, "o-", label=f"time, {size}×{size} px")
            # The MAC ratio depends only on channels and k, not on the image size.
            macs = sorted({(r["channels"], r["mac_ratio_measured"]) for r in points_k})
            ax.plot(*zip(*macs, strict=True), "k--", label="MACs")
            ax.axhline(1, color="gray", lw=0.8)
            ratios = [r["forward_backward_time_ratio"] for r in points_k] + [m for _, m in macs] + [1.0]
            plain_log_axes(ax, [r["channels"] for r in points_k], ratios)
            ax.set(xlabel="channels (in = out)", ylabel=f"{pair} (log scale)")
            ax.set_title(f"{k}×{k} conv, forward+backward: {pair}\n(below 1: cheaper than the baseline)", fontsize=10)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def plot_layer_gap(comparison: list[dict], path: Path) -> None:
    """Write :func:`layer_gap_figure` to ``path``."""
    save_figure(layer_gap_figure(comparison), path, dpi=120)


def setting_label(row: dict) -> str:
    layout = "channels_last" if row["channels_last"] else "NCHW"
    return f"{row['conv']}\n{row['precision']}, {layout}{', compiled' if row['compile'] else ''}"


def plot_model_costs(rows: list[dict], path: Path) -> None:
    """Per conv type and setting: parameters (M), MACs per image (M) and training images/s, as bars."""
    trained = [r for r in rows if not r.get("bn_folded")]
    colors = conv_colors(r["conv"] for r in trained)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    panels = (("params", 1e6, "parameters (M)"), ("macs", 1e6, "forward MACs per image (M)"),
              ("train_images_per_s", 1, "training images/s"))  # fmt: skip
    for ax, (key, scale, title) in zip(axes, panels, strict=True):
        ax.bar(range(len(trained)), [r[key] / scale for r in trained], color=[colors[r["conv"]] for r in trained])
        ax.set_xticks(range(len(trained)), [setting_label(r) for r in trained], fontsize=7)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
